using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>One training row for a causal language model: token ids and, per token, the label the loss reads
/// (<see cref="CausalLMLoss.IgnoreIndex"/> where no loss is taken). Labels are not shifted: position t's logits are
/// scored against label t + 1, as in transformers.</summary>
/// <param name="InputIds">Token ids.</param>
/// <param name="Labels">Same length: the token id, or -100 (prompt tokens, packing boundaries).</param>
internal sealed record CausalLMExample(long[] InputIds, long[] Labels)
{
    /// <summary>Tokens whose prediction is scored: labels other than -100 after the first position.</summary>
    public int TargetCount
    {
        get
        {
            int n = 0;
            for (int t = 1; t < Labels.Length; t++) if (Labels[t] != CausalLMLoss.IgnoreIndex) n++;
            return n;
        }
    }
}

/// <summary>How rows become training text.</summary>
public enum CausalLMDataFormat
{
    /// <summary>One text column; the loss covers every token.</summary>
    Text,
    /// <summary>A prompt and a completion column; the loss covers completion tokens only (prompt labels are -100).</summary>
    PromptCompletion,
    /// <summary>A column of JSON conversations (<c>[{"role": ..., "content": ...}]</c>) rendered with the model's chat
    /// template; the loss covers every token of the rendered conversation (TRL's default for conversations).</summary>
    Messages,
}

/// <summary>
/// Rows → <see cref="CausalLMExample"/>s as transformers/TRL prepare causal language modelling:
/// <list type="bullet">
/// <item>Text: the tokenizer's own special tokens (BOS where its config adds one), then EOS appended when the
/// tokenizer has one and the text does not already end with it (TRL's SFT); every token is a target.</item>
/// <item>Prompt + completion: prompt + completion tokenized as one text (so the boundary tokenizes as it will at
/// generation), the first len(tokenize(prompt)) labels set to -100 (TRL's completion mask), EOS appended.</item>
/// <item>Messages: the chat template's text, tokenized without adding special tokens (the template holds them, as in
/// apply_chat_template); every token is a target.</item>
/// </list>
/// Rows longer than the maximum are cut at the end (a prompt that leaves no room for its completion is an error).
/// </summary>
internal sealed class CausalLMFeaturizer
{
    private readonly HfTokenizer _tokenizer;
    private readonly ChatTemplate? _template;

    /// <summary>A featurizer for one tokenizer (and chat template, for messages).</summary>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="maxSequenceLength">Tokens per example at most (≥ 2).</param>
    /// <param name="template">The model's chat template; needed for <see cref="CausalLMDataFormat.Messages"/>.</param>
    /// <param name="appendEos">Append the tokenizer's EOS to text and completions (default true, as TRL).</param>
    public CausalLMFeaturizer(HfTokenizer tokenizer, int maxSequenceLength, ChatTemplate? template = null, bool appendEos = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (maxSequenceLength < 2)
            throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, "MaxSequenceLength must be at least 2 (one token to read, one to predict).");
        _tokenizer = tokenizer;
        _template = template;
        MaxSequenceLength = maxSequenceLength;
        AppendEos = appendEos;
    }

    /// <summary>Tokens per example at most.</summary>
    public int MaxSequenceLength { get; }

    /// <summary>Whether EOS ends text and completions.</summary>
    public bool AppendEos { get; }

    /// <summary>A text row: every token is a target.</summary>
    /// <param name="text">The text.</param>
    /// <param name="where">Names the row and column in errors ("row 3 of column 'Text'").</param>
    /// <exception cref="ArgumentException">The text is empty.</exception>
    public CausalLMExample FromText(string? text, string where)
    {
        if (string.IsNullOrEmpty(text))
            throw new ArgumentException($"{where}: the text is empty; causal language modelling needs at least one token to learn from.");
        var ids = WithEos(Encode(text, addSpecialTokens: true));
        return Truncated(ids, ids.ToArray());
    }

    /// <summary>A prompt and its completion: only completion tokens are targets.</summary>
    /// <param name="prompt">The prompt (may be empty: then only the tokenizer's BOS, if any, precedes the completion).</param>
    /// <param name="completion">The completion; must not be empty.</param>
    /// <param name="where">Names the row in errors.</param>
    /// <exception cref="ArgumentException">The completion is empty, or the prompt leaves no room for it in MaxSequenceLength.</exception>
    public CausalLMExample FromPromptCompletion(string? prompt, string? completion, string where)
    {
        if (string.IsNullOrEmpty(completion))
            throw new ArgumentException($"{where}: the completion is empty; a prompt/completion row needs completion tokens to learn from.");
        prompt ??= "";
        var promptIds = Encode(prompt, addSpecialTokens: true);
        if (_tokenizer.EosTokenId is int eos && promptIds.Count > 0 && promptIds[^1] == eos) promptIds.RemoveAt(promptIds.Count - 1);   // add_eos_token tokenizers
        if (promptIds.Count >= MaxSequenceLength)
            throw new ArgumentException(
                $"{where}: the prompt has {promptIds.Count} tokens, which leaves no room for the completion in MaxSequenceLength = {MaxSequenceLength}. " +
                "Shorten the prompt or raise MaxSequenceLength.");
        var ids = WithEos(Encode(prompt + completion, addSpecialTokens: true));
        if (ids.Count <= promptIds.Count)
            throw new ArgumentException($"{where}: the completion adds no tokens after the prompt.");
        return Truncated(ids, MaskPrompt(ids.ToArray(), promptIds.Count));
    }

    /// <summary>A conversation (JSON array of role/content objects) rendered with the chat template.</summary>
    /// <param name="messagesJson">The conversation as JSON.</param>
    /// <param name="where">Names the row in errors.</param>
    /// <exception cref="InvalidOperationException">The featurizer has no chat template, or the template refused the conversation.</exception>
    /// <exception cref="ArgumentException">The JSON is not a conversation.</exception>
    public CausalLMExample FromMessages(string? messagesJson, string where)
    {
        if (_template is null)
            throw new InvalidOperationException($"{where}: messages need the model's chat template, and none was given to the featurizer.");
        if (string.IsNullOrWhiteSpace(messagesJson))
            throw new ArgumentException($"{where}: the messages are empty; expected a JSON array of {{\"role\", \"content\"}} objects.");
        string text;
        try { text = _template.ApplyJson(messagesJson); }
        catch (FormatException ex) { throw new ArgumentException($"{where}: {ex.Message}", ex); }
        catch (InvalidOperationException ex) { throw new InvalidOperationException($"{where}: {ex.Message}", ex); }
        var ids = Encode(text, addSpecialTokens: false);
        if (ids.Count == 0) throw new ArgumentException($"{where}: the chat template rendered no tokens.");
        return Truncated(ids, ids.ToArray());
    }

    /// <summary>Labels with the first <paramref name="promptLength"/> set to -100 (a new array): the prompt takes no loss.</summary>
    public static long[] MaskPrompt(long[] labels, int promptLength)
    {
        var masked = labels.ToArray();
        Array.Fill(masked, CausalLMLoss.IgnoreIndex, 0, Math.Min(promptLength, masked.Length));
        return masked;
    }

    /// <summary>The prompt tokens generation starts from: the prompt with the tokenizer's BOS (and no EOS).</summary>
    public long[] EncodePrompt(string prompt)
    {
        var ids = Encode(prompt ?? "", addSpecialTokens: true);
        if (_tokenizer.EosTokenId is int eos && ids.Count > 0 && ids[^1] == eos) ids.RemoveAt(ids.Count - 1);
        return ids.ToArray();
    }

    /// <summary>
    /// Packs whole examples, in order, into examples of at most <paramref name="maxLength"/> tokens (run_clm's
    /// concatenation, without splitting a row). The first label of every packed row after the first becomes -100,
    /// so no loss crosses a row boundary and the targets are exactly those of the unpacked rows; attention does cross
    /// them inside a pack (as in run_clm's group_texts).
    /// </summary>
    public static List<CausalLMExample> Pack(IReadOnlyList<CausalLMExample> examples, int maxLength)
    {
        var packed = new List<CausalLMExample>();
        var ids = new List<long>();
        var labels = new List<long>();
        foreach (var e in examples)
        {
            if (ids.Count > 0 && ids.Count + e.InputIds.Length > maxLength)
            {
                packed.Add(new CausalLMExample(ids.ToArray(), labels.ToArray()));
                ids.Clear(); labels.Clear();
            }
            bool continues = ids.Count > 0;
            ids.AddRange(e.InputIds);
            labels.AddRange(e.Labels);
            if (continues) labels[^e.Labels.Length] = CausalLMLoss.IgnoreIndex;
        }
        if (ids.Count > 0) packed.Add(new CausalLMExample(ids.ToArray(), labels.ToArray()));
        return packed;
    }

    private List<long> Encode(string text, bool addSpecialTokens) =>
        _tokenizer.Encode(text, addSpecialTokens).Ids.Select(i => (long)i).ToList();

    private List<long> WithEos(List<long> ids)
    {
        if (AppendEos && _tokenizer.EosTokenId is int eos && (ids.Count == 0 || ids[^1] != eos)) ids.Add(eos);
        return ids;
    }

    private CausalLMExample Truncated(List<long> ids, long[] labels) =>
        ids.Count <= MaxSequenceLength
            ? new CausalLMExample(ids.ToArray(), labels)
            : new CausalLMExample(ids.Take(MaxSequenceLength).ToArray(), labels[..MaxSequenceLength]);
}
