using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// Turns questions and contexts into model windows with span labels, as Hugging Face's run_qa.py does in
/// <c>prepare_train_features</c> / <c>prepare_validation_features</c>: the question (leading whitespace removed) is
/// kept whole in every window, only the context is truncated, and consecutive windows share
/// <c>docStride</c> context tokens.
/// </summary>
/// <remarks>
/// <para>
/// Labels: a window that holds the whole answer gets the first context token whose start is at or before the
/// answer's first character (scanning from the window's first context token while starts stay at or before it), and
/// the last token ending at or after the answer's end; every other window, and every window of a question without an
/// answer, gets the [CLS] position for both.
/// </para>
/// <para>
/// One deliberate difference from run_qa.py: its start scan is not bounded by the context, so an answer that begins
/// at a window's last context token runs on into [SEP] and padding and is labelled there (the script's comment calls
/// it an edge case). Here the scan stops at the window's last context token, so the label covers the answer.
/// </para>
/// </remarks>
internal sealed class QaFeaturizer
{
    private readonly HfTokenizer _tokenizer;

    /// <summary>Creates a featurizer.</summary>
    /// <param name="tokenizer">The model's tokenizer (question first, context second).</param>
    /// <param name="maxSequenceLength">Positions per window, special tokens included (run_qa.py's max_seq_length).</param>
    /// <param name="docStride">Context tokens shared by consecutive windows.</param>
    /// <param name="padToMaxLength">Pad every window to <paramref name="maxSequenceLength"/> (false leaves padding to the batcher).</param>
    /// <param name="windowing">How the context is cut; <see cref="ContextWindowing.WholeContext"/> except for parity checks.</param>
    /// <exception cref="ArgumentOutOfRangeException">A length is not positive or the stride is negative.</exception>
    public QaFeaturizer(HfTokenizer tokenizer, int maxSequenceLength, int docStride, bool padToMaxLength = false,
        ContextWindowing windowing = ContextWindowing.WholeContext)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (maxSequenceLength <= 0)
            throw new ArgumentOutOfRangeException(nameof(maxSequenceLength), maxSequenceLength, "MaxSequenceLength must be positive.");
        if (docStride < 0)
            throw new ArgumentOutOfRangeException(nameof(docStride), docStride, "DocStride must not be negative.");
        _tokenizer = tokenizer;
        MaxSequenceLength = maxSequenceLength;
        DocStride = docStride;
        PadToMaxLength = padToMaxLength;
        Windowing = windowing;
    }

    /// <summary>A featurizer with the windowing settings of <paramref name="options"/>.</summary>
    public static QaFeaturizer FromOptions(HfTokenizer tokenizer, QuestionAnsweringOptions options, bool padToMaxLength = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new QaFeaturizer(tokenizer, options.MaxSequenceLength, options.DocStride, padToMaxLength, options.ContextWindowing);
    }

    /// <summary>Positions per window.</summary>
    public int MaxSequenceLength { get; }

    /// <summary>Context tokens shared by consecutive windows.</summary>
    public int DocStride { get; }

    /// <summary>Whether windows are padded to <see cref="MaxSequenceLength"/>.</summary>
    public bool PadToMaxLength { get; }

    /// <summary>How contexts are cut into windows.</summary>
    public ContextWindowing Windowing { get; }

    /// <summary>The windows of every example, in order (windows of one example are consecutive).</summary>
    public List<QaFeature> FeaturizeAll(IEnumerable<QaExample> examples)
    {
        ArgumentNullException.ThrowIfNull(examples);
        var features = new List<QaFeature>();
        int index = 0;
        foreach (var example in examples)
            features.AddRange(Featurize(example, index++));
        return features;
    }

    /// <summary>The windows of one example, with labels from its gold answer (or [CLS] when it has none).</summary>
    /// <param name="example">The question, context and gold answer.</param>
    /// <param name="exampleIndex">Recorded in each window as <see cref="QaFeature.ExampleIndex"/>.</param>
    /// <exception cref="ArgumentException">
    /// The gold answer lies outside the context, or the question is too long to leave context room for the stride
    /// (the message names the question id).
    /// </exception>
    public IReadOnlyList<QaFeature> Featurize(QaExample example, int exampleIndex = 0)
    {
        ArgumentNullException.ThrowIfNull(example);
        var context = example.Context ?? "";
        bool hasAnswer = example.HasAnswer;
        int answerStart = example.AnswerStart, answerEnd = hasAnswer ? example.AnswerStart + example.AnswerText!.Length : -1;
        if (hasAnswer && answerEnd > context.Length)
            throw new ArgumentException(
                $"Question '{example.Id}': the gold answer (start {answerStart}, {example.AnswerText!.Length} characters) ends past its context ({context.Length} characters).",
                nameof(example));

        IReadOnlyList<HfEncoding> windows;
        try
        {
            windows = _tokenizer.EncodePairWindows(StripLeadingWhitespace(example.Question ?? ""), context, MaxSequenceLength, DocStride,
                PadToMaxLength, Windowing);
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException(
                $"Question '{example.Id}' cannot be windowed with MaxSequenceLength {MaxSequenceLength} and DocStride {DocStride}: {ex.Message}",
                nameof(example), ex);
        }

        var features = new QaFeature[windows.Count];
        for (int w = 0; w < windows.Count; w++)
        {
            var window = windows[w];
            int length = window.Length;
            var ids = new int[length];
            var types = new int[length];
            var mask = new int[length];
            var offsets = new (int Start, int End)?[length];
            int firstContext = -1, lastContext = -1;
            for (int i = 0; i < length; i++)
            {
                ids[i] = window.Ids[i];
                types[i] = window.TokenTypeIds[i];
                mask[i] = window.AttentionMask[i];
                if (window.SequenceIds[i] == 1)
                {
                    offsets[i] = window.Offsets[i];
                    if (firstContext < 0) firstContext = i;
                    lastContext = i;
                }
            }

            int cls = ClsIndex(ids);
            int start = cls, end = cls;
            if (hasAnswer && firstContext >= 0
                && offsets[firstContext]!.Value.Start <= answerStart && offsets[lastContext]!.Value.End >= answerEnd)
            {
                // The window holds the whole answer: the last token starting at or before it, the first ending at or after it.
                start = firstContext;
                while (start < lastContext && offsets[start + 1]!.Value.Start <= answerStart) start++;
                end = lastContext;
                while (end > firstContext && offsets[end - 1]!.Value.End >= answerEnd) end--;
            }
            features[w] = new QaFeature(exampleIndex, example.Id, w, ids, types, mask, offsets, cls, start, end);
        }
        return features;
    }

    /// <summary>Where the classification token sits (run_qa.py: <c>input_ids.index(cls_token_id)</c>); 0 when the tokenizer has none.</summary>
    private int ClsIndex(int[] ids)
    {
        if (_tokenizer.ClsTokenId is { } cls)
        {
            int index = Array.IndexOf(ids, cls);
            if (index >= 0) return index;
        }
        return 0;
    }

    /// <summary>
    /// Python's <c>str.lstrip()</c>: run_qa.py strips questions because some SQuAD v2.0 questions start with long runs
    /// of spaces, which byte-level BPE would turn into tokens that push the context out of the window.
    /// </summary>
    internal static string StripLeadingWhitespace(string question)
    {
        int i = 0;
        while (i < question.Length && SquadAnswerNormalizer.IsPythonWhitespace(question[i])) i++;
        return i == 0 ? question : question[i..];
    }
}
