using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>One batch for an encoder: token ids, the padding mask and, for BERT-style pairs, segment ids.</summary>
/// <param name="InputIds">(B, T) int64.</param>
/// <param name="AttentionMask">(B, T) int64 or bool: 1 for real tokens, 0 for padding (either side).</param>
/// <param name="TokenTypeIds">(B, T) int64 segment ids, or null for all zeros.</param>
internal sealed record EncoderInputs(Tensor InputIds, Tensor AttentionMask, Tensor? TokenTypeIds = null);

/// <summary>What every model family exposes to the layers above (PEFT, training, tasks).</summary>
internal interface IPretrainedModel
{
    /// <summary>The config the model was built from.</summary>
    HfConfig Config { get; }

    /// <summary>Hugging Face's <c>model_type</c>: "bert", "roberta", "distilbert", "gpt2", "llama", "qwen2", "mistral".</summary>
    string ModelType { get; }

    /// <summary>The backbone's attribute name in task models (Hugging Face's <c>base_model_prefix</c>: "bert", "roberta",
    /// "distilbert", "transformer", "model"); a base checkpoint's keys gain this prefix when loaded into a task model.</summary>
    string BaseModelPrefix { get; }

    /// <summary>Top-level modules of the task head, always trainable and saved with an adapter
    /// (PEFT's <c>modules_to_save</c>): e.g. ["classifier"], ["pre_classifier", "classifier"], ["qa_outputs"].</summary>
    IReadOnlyList<string> HeadModuleNames { get; }
}

/// <summary>An encoder with a sequence-classification head: logits (B, NumLabels). The subclass holds the backbone in a
/// field named as the family's <c>base_model_prefix</c> and the head in fields named as its head module names.</summary>
internal abstract class SequenceClassificationModel : nn.Module<EncoderInputs, Tensor>, IPretrainedModel
{
    private readonly ModelFamily _family;
    private readonly string[] _headModuleNames;

    /// <summary>Names the module, takes the family's values from <see cref="ModelRegistry"/> and checks the label count
    /// (every family's classifier needs at least one).</summary>
    /// <param name="name">Module name (transformers' class name).</param>
    /// <param name="config">The config the model is built from.</param>
    /// <param name="modelType">The family's model_type.</param>
    /// <param name="numLabels">Number of classes.</param>
    /// <param name="headModuleNames">The subclass's head modules (PEFT's modules_to_save).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numLabels"/> is below 1.</exception>
    protected SequenceClassificationModel(string name, HfConfig config, string modelType, int numLabels, params string[] headModuleNames)
        : base(name)
    {
        if (numLabels < 1) throw new ArgumentOutOfRangeException(nameof(numLabels), numLabels, "A classifier needs at least one label.");
        (Config, _family, NumLabels, _headModuleNames) = (config, ModelRegistry.Get(modelType), numLabels, headModuleNames);
    }

    /// <inheritdoc/>
    public HfConfig Config { get; }
    /// <inheritdoc/>
    public string ModelType => _family.ModelType;
    /// <inheritdoc/>
    public string BaseModelPrefix => _family.BaseModelPrefix;
    /// <inheritdoc/>
    public IReadOnlyList<string> HeadModuleNames => _headModuleNames;
    /// <summary>Number of classes the head predicts.</summary>
    public int NumLabels { get; }
}

/// <summary>
/// An encoder with an extractive span head, the same in every encoder family: the last hidden state, an optional
/// dropout (DistilBERT's qa_dropout), and <c>qa_outputs</c> (H -> 2) split into start and end logits, each (B, T).
/// </summary>
internal abstract class QuestionAnsweringModel : nn.Module<EncoderInputs, (Tensor StartLogits, Tensor EndLogits)>, IPretrainedModel
{
    private readonly EncoderModel _backbone;
    private readonly InvertedDropout? _dropout;
    private nn.Module<Tensor, Tensor> qa_outputs;   // named and typed for ModuleSurgery (PEFT replaces it)

    /// <summary>Registers the backbone under its base_model_prefix and builds <c>qa_outputs</c> with transformers' init.</summary>
    /// <param name="name">Module name (transformers' class name).</param>
    /// <param name="backbone">The encoder, already built (without pooler).</param>
    /// <param name="initializerRange">Std of the head's normal init.</param>
    /// <param name="dropout">Dropout before the head, or null for none (BERT, RoBERTa).</param>
    protected QuestionAnsweringModel(string name, EncoderModel backbone, double initializerRange, double? dropout = null) : base(name)
    {
        _backbone = backbone;
        qa_outputs = nn.Linear(backbone.HiddenSize, 2);
        _dropout = dropout is double p ? new InvertedDropout(p) : null;
        register_module(backbone.BaseModelPrefix, backbone);
        register_module("qa_outputs", qa_outputs);
        if (_dropout is not null) register_module("dropout", _dropout);
        HfInit.Apply(qa_outputs, initializerRange);
    }

    /// <inheritdoc/>
    public HfConfig Config => _backbone.Config;
    /// <inheritdoc/>
    public string ModelType => _backbone.ModelType;
    /// <inheritdoc/>
    public string BaseModelPrefix => _backbone.BaseModelPrefix;
    /// <summary>["qa_outputs"].</summary>
    public IReadOnlyList<string> HeadModuleNames => ["qa_outputs"];

    /// <summary>Start and end logits, each (B, T).</summary>
    public override (Tensor StartLogits, Tensor EndLogits) forward(EncoderInputs inputs)
    {
        var hidden = _backbone.forward(inputs).LastHiddenState;                              // (B, T, H)
        var parts = qa_outputs.forward(_dropout?.forward(hidden) ?? hidden).split(1, -1);    // 2 x (B, T, 1)
        return (parts[0].squeeze(-1).contiguous(), parts[1].squeeze(-1).contiguous());
    }
}
