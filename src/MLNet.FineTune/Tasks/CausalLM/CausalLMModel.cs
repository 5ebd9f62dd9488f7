using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tokenization;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>One generation: the continuation's text and how many tokens it took.</summary>
internal readonly record struct Generation(string Text, int TokenCount);

/// <summary>
/// The causal-LM core shared by the estimator (training, evaluation) and the transformer (generation): the adapted
/// model, its featurizer for the options' data format, and generation from prompts or conversations.
/// </summary>
internal sealed class CausalLMModel
{
    private readonly object _gate = new();

    public CausalLMModel(AdaptedModel adapted, CausalLMDataFormat format, int maxSequenceLength, bool appendEos)
    {
        Adapted = adapted;
        Format = format;
        // The template is read only where it is used: a base model without one trains on text and prompts unhindered.
        Template = format == CausalLMDataFormat.Messages ? adapted.ChatTemplate ?? throw NoTemplate(adapted) : null;
        Featurizer = new CausalLMFeaturizer(adapted.Tokenizer, maxSequenceLength, Template, appendEos);
    }

    public AdaptedModel Adapted { get; }
    public CausalLMDataFormat Format { get; }
    public ChatTemplate? Template { get; }
    public CausalLMFeaturizer Featurizer { get; }
    public CausalLanguageModel Model => (CausalLanguageModel)Adapted.Model;
    public HfTokenizer Tokenizer => Adapted.Tokenizer;

    /// <summary>Id fed in padding positions: the tokenizer's pad, else EOS, else 0 (masked either way).</summary>
    public long PadTokenId => Tokenizer.PadTokenId ?? Tokenizer.EosTokenId ?? 0;

    private static InvalidOperationException NoTemplate(AdaptedModel adapted) => new(
        $"MessagesColumnName needs the base model's chat template, but {adapted.BaseFolder ?? "the saved model"} has none " +
        $"(no \"chat_template\" in tokenizer_config.json and no {ChatTemplate.ChatTemplateFile}). " +
        "Use a chat/instruct model's folder, or train on PromptColumnName/CompletionColumnName instead.");

    /// <summary>The token ids generation starts from: a text or prompt with the tokenizer's BOS, or a conversation
    /// rendered with the generation prompt (special tokens from the template only).</summary>
    public long[] PromptIds(string input, string where)
    {
        if (Format != CausalLMDataFormat.Messages) return Featurizer.EncodePrompt(input);
        string text;
        try { text = Template!.ApplyJson(input, addGenerationPrompt: true); }
        catch (FormatException ex) { throw new ArgumentException($"{where}: {ex.Message}", ex); }
        catch (InvalidOperationException ex) { throw new InvalidOperationException($"{where}: {ex.Message}", ex); }
        return Tokenizer.Encode(text, addSpecialTokens: false).Ids.Select(i => (long)i).ToArray();
    }

    /// <summary>Generates for each input (texts, prompts or JSON conversations), in batches.</summary>
    /// <param name="inputs">The inputs.</param>
    /// <param name="options">How to generate.</param>
    /// <param name="describe">Names input i in errors (e.g. "Row 12 of the data to score (column 'Prompt')").</param>
    /// <exception cref="ArgumentException">An input encodes to no token (empty, and the tokenizer adds no BOS), or is not a conversation.</exception>
    public Generation[] Generate(IReadOnlyList<string> inputs, GenerationOptions options, Func<int, string> describe)
    {
        lock (_gate)   // one TorchSharp model must not run on two threads at once; the tokenizer is used here too
        {
            var prompts = new List<IReadOnlyList<long>>(inputs.Count);
            for (int i = 0; i < inputs.Count; i++)
            {
                var ids = PromptIds(inputs[i], describe(i));
                if (ids.Length == 0)
                    throw new ArgumentException($"{describe(i)} is empty and the tokenizer adds no BOS: there is nothing to continue. Give a non-empty text.");
                prompts.Add(ids);
            }
            string Decode(IReadOnlyList<long> ids) => Tokenizer.Decode(ids.Select(t => (int)t), skipSpecialTokens: true);
            IReadOnlyCollection<long> eos = Tokenizer.EosTokenId is int e ? [e] : [];
            var sequences = TextGenerator.Generate(Model, prompts, options, eos, PadTokenId, Decode);
            return sequences.Select(s =>
            {
                var text = Decode(s.Tokens);
                if (s.StopStringEnd is int end) text = text[..end];
                return new Generation(text, s.Tokens.Length);
            }).ToArray();
        }
    }

    /// <summary>Mean token loss, perplexity and token accuracy on featurized examples.</summary>
    public CausalLMMetrics Evaluate(IReadOnlyList<CausalLMExample> examples, int batchSize)
    {
        lock (_gate) return CausalLMEvaluation.Evaluate(Model, examples, batchSize, PadTokenId);
    }

    /// <summary>The batch's mean loss over its target tokens (training; the caller owns the dispose scope).</summary>
    public Tensor Loss(IReadOnlyList<CausalLMExample> batch)
    {
        var collated = CausalLMBatch.Collate(batch, PadTokenId, Adapted.Device);
        return CausalLMLoss.MeanOverTargets(Model.call(collated.Inputs), collated.Labels);
    }
}
