using MLNet.FineTune.Checkpoints;

namespace MLNet.FineTune.Models;

/// <summary>What a model family is for: an encoder (classification, QA, backbone) or a causal language model.</summary>
internal enum ModelKind
{
    /// <summary>Bidirectional encoder: BERT, RoBERTa, DistilBERT.</summary>
    Encoder,
    /// <summary>Decoder-only language model: GPT-2, Llama, Mistral, Qwen2.</summary>
    CausalLanguageModel,
}

/// <summary>
/// One supported <c>model_type</c>: its kind, transformers' <c>base_model_prefix</c>, the class-name prefix that
/// identifies it in <c>architectures</c> when a config has no model_type, and how to build each model it supports.
/// </summary>
/// <param name="ModelType">Hugging Face's <c>model_type</c>.</param>
/// <param name="Kind">Encoder or causal language model.</param>
/// <param name="BaseModelPrefix">The backbone's attribute name in task models (a base checkpoint's keys gain it).</param>
/// <param name="ArchitecturePrefix">Prefix of transformers' class names, e.g. "DistilBert" in DistilBertForMaskedLM.</param>
internal sealed record ModelFamily(string ModelType, ModelKind Kind, string BaseModelPrefix, string ArchitecturePrefix)
{
    internal Func<HfConfig, EncoderModel>? Backbone { get; init; }
    internal Func<HfConfig, int, SequenceClassificationModel>? SequenceClassifier { get; init; }
    internal Func<HfConfig, QuestionAnsweringModel>? QuestionAnswerer { get; init; }
    internal Func<HfConfig, CausalLanguageModel>? CausalLM { get; init; }
}

/// <summary>The supported model families, one row per <c>model_type</c>: a new family adds a row here.</summary>
internal static class ModelRegistry
{
    /// <summary>Every supported family.</summary>
    public static IReadOnlyList<ModelFamily> Families { get; } =
    [
        new("bert", ModelKind.Encoder, "bert", "Bert")
        {
            Backbone = c => new BertModel(c),
            SequenceClassifier = (c, labels) => new BertForSequenceClassification(c, labels),
            QuestionAnswerer = c => new BertForQuestionAnswering(c),
        },
        new("roberta", ModelKind.Encoder, "roberta", "Roberta")
        {
            Backbone = c => new RobertaModel(c),
            SequenceClassifier = (c, labels) => new RobertaForSequenceClassification(c, labels),
            QuestionAnswerer = c => new RobertaForQuestionAnswering(c),
        },
        new("distilbert", ModelKind.Encoder, "distilbert", "DistilBert")
        {
            Backbone = c => new DistilBertModel(c),
            SequenceClassifier = (c, labels) => new DistilBertForSequenceClassification(c, labels),
            QuestionAnswerer = c => new DistilBertForQuestionAnswering(c),
        },
        new("gpt2", ModelKind.CausalLanguageModel, "transformer", "GPT2") { CausalLM = c => new Gpt2LMHeadModel(c) },
        new("llama", ModelKind.CausalLanguageModel, "model", "Llama") { CausalLM = c => new LlamaForCausalLM(c) },
        new("mistral", ModelKind.CausalLanguageModel, "model", "Mistral") { CausalLM = c => new LlamaForCausalLM(c) },
        new("qwen2", ModelKind.CausalLanguageModel, "model", "Qwen2") { CausalLM = c => new LlamaForCausalLM(c) },
    ];

    /// <summary>The model_types of one kind, in alphabetical order (what error messages list).</summary>
    public static IReadOnlyList<string> ModelTypes(ModelKind kind) =>
        Families.Where(f => f.Kind == kind).Select(f => f.ModelType).Order(StringComparer.Ordinal).ToList();

    /// <summary>The family registered for <paramref name="modelType"/>.</summary>
    /// <exception cref="KeyNotFoundException">No family has that model_type.</exception>
    public static ModelFamily Get(string modelType) =>
        Families.FirstOrDefault(f => f.ModelType == modelType)
        ?? throw new KeyNotFoundException($"model_type '{modelType}' is not registered; supported: {string.Join(", ", Families.Select(f => f.ModelType))}.");

    /// <summary>
    /// The config's <c>model_type</c>, or the one its <c>architectures</c> names by the longest matching class-name prefix
    /// (e.g. "DistilBertForMaskedLM" -> "distilbert", not "bert").
    /// </summary>
    /// <exception cref="InvalidDataException">Neither key identifies a family.</exception>
    public static string ResolveModelType(HfConfig config)
    {
        if (config.ModelType != "") return config.ModelType;
        foreach (var architecture in config.Architectures)
        {
            var family = Families.Where(f => architecture.StartsWith(f.ArchitecturePrefix, StringComparison.Ordinal))
                .MaxBy(f => f.ArchitecturePrefix.Length);
            if (family is not null) return family.ModelType;
        }
        throw new InvalidDataException(
            $"{config.Path} has no model_type and its architectures [{string.Join(", ", config.Architectures)}] name no known family.");
    }
}
