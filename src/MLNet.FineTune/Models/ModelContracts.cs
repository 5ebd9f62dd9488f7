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

/// <summary>An encoder with a sequence-classification head: logits (B, NumLabels).</summary>
internal abstract class SequenceClassificationModel : nn.Module<EncoderInputs, Tensor>, IPretrainedModel
{
    /// <summary>Names the module and checks the label count (every family's classifier needs at least one).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="numLabels"/> is below 1.</exception>
    protected SequenceClassificationModel(string name, int numLabels) : base(name)
    {
        if (numLabels < 1) throw new ArgumentOutOfRangeException(nameof(numLabels), numLabels, "A classifier needs at least one label.");
        NumLabels = numLabels;
    }

    public abstract HfConfig Config { get; }
    public abstract string ModelType { get; }
    public abstract string BaseModelPrefix { get; }
    public abstract IReadOnlyList<string> HeadModuleNames { get; }
    /// <summary>Number of classes the head predicts.</summary>
    public int NumLabels { get; }
}

/// <summary>An encoder with an extractive span head (<c>qa_outputs</c>): start and end logits, each (B, T).</summary>
internal abstract class QuestionAnsweringModel(string name) : nn.Module<EncoderInputs, (Tensor StartLogits, Tensor EndLogits)>(name), IPretrainedModel
{
    public abstract HfConfig Config { get; }
    public abstract string ModelType { get; }
    public abstract string BaseModelPrefix { get; }
    public IReadOnlyList<string> HeadModuleNames => ["qa_outputs"];
}
