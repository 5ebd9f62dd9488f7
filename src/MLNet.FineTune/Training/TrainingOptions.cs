namespace MLNet.FineTune.Training;

/// <summary>How the learning rate moves after warmup (Hugging Face's <c>get_*_schedule_with_warmup</c>).</summary>
public enum LearningRateSchedule
{
    /// <summary>Linear warmup from 0, then linear decay to 0 at the last step (transformers' default).</summary>
    Linear,
    /// <summary>Linear warmup from 0, then half a cosine wave down to 0 at the last step.</summary>
    Cosine,
    /// <summary>Linear warmup from 0 (when warmup is set), then constant.</summary>
    Constant,
}

/// <summary>When the task's evaluation callback runs.</summary>
internal enum EvaluationStrategy
{
    /// <summary>Never (early stopping and best-weight restore are then off).</summary>
    None,
    /// <summary>After the last optimizer step of every epoch.</summary>
    Epoch,
    /// <summary>Every <see cref="TrainingOptions.EvaluateEverySteps"/> optimizer steps.</summary>
    Steps,
}

/// <summary>
/// Options of the training loop, the one set every task's options derive from (<c>FineTuneOptions</c>), so a task's
/// options hold the trainer's: <c>new TextClassificationOptions { Epochs = 2, BatchSize = 32, LearningRate = 5e-4
/// }</c>.
/// Defaults follow Hugging Face's <c>TrainingArguments</c> where one exists (linear schedule, AdamW betas 0.9/0.999,
/// eps 1e-8, clipping at 1.0), except <see cref="WeightDecay"/> (0.01, applied to weights only: never to biases and
/// normalisation weights), <see cref="WarmupRatio"/> (0.1), <see cref="BatchSize"/> (32) and length bucketing (on).
/// Values left open (<see cref="LearningRate"/>, <see cref="Seed"/>) are decided once when training starts
/// (<see cref="ResolvedTraining"/>).
/// </summary>
public record TrainingOptions
{
    /// <summary>Passes over the training data (used when <see cref="MaxSteps"/> is null). Default 3.</summary>
    public int Epochs { get; set; } = 3;

    /// <summary>Optional cap on optimizer steps; when set it replaces <see cref="Epochs"/> as the length of
    /// training.</summary>
    public int? MaxSteps { get; set; }

    /// <summary>Examples per micro-batch (one forward/backward). The optimizer sees
    /// <c>BatchSize * GradientAccumulationSteps</c> examples per step. Default 32.</summary>
    public int BatchSize { get; set; } = 32;

    /// <summary>Micro-batches whose gradients are summed (weighted by their example counts) before one optimizer step.
    /// The last group of an epoch may be shorter; it still makes a step. Default 1.</summary>
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>Peak learning rate (reached after warmup); a parameter group's rate is this times its multiplier. Null
    /// picks the method's default (LoRA-family 1e-3, adapters 1e-3, IA3 5e-3, full fine-tuning 5e-5).</summary>
    public double? LearningRate { get; set; }

    /// <summary>AdamW decoupled weight decay, not applied to biases and normalisation weights. Default 0.01.</summary>
    public double WeightDecay { get; set; } = 0.01;

    /// <summary>AdamW beta1. Default 0.9.</summary>
    public double AdamBeta1 { get; set; } = 0.9;

    /// <summary>AdamW beta2. Default 0.999.</summary>
    public double AdamBeta2 { get; set; } = 0.999;

    /// <summary>AdamW epsilon. Default 1e-8.</summary>
    public double AdamEpsilon { get; set; } = 1e-8;

    /// <summary>The learning-rate schedule after warmup. Default linear decay.</summary>
    public LearningRateSchedule Schedule { get; set; } = LearningRateSchedule.Linear;

    /// <summary>Warmup length in optimizer steps; when 0, <see cref="WarmupRatio"/> decides.</summary>
    public int WarmupSteps { get; set; }

    /// <summary>Warmup as a fraction of all optimizer steps, rounded up (used when <see cref="WarmupSteps"/> is 0).
    /// Default 0.1.</summary>
    public double WarmupRatio { get; set; } = 0.1;

    /// <summary>Gradients are clipped to this global L2 norm; 0 disables clipping (the norm is still reported).
    /// Must be 0 or positive: NaN and negative values are rejected. Default 1.0.</summary>
    public double MaxGradientNorm { get; set; } = 1.0;

    /// <summary>Seed for shuffling, dropout and initialisation; null uses the MLContext's seed (42 outside
    /// ML.NET).</summary>
    public int? Seed { get; set; }

    /// <summary>Group examples of similar length into the same batch so batches pad less: the shuffled order is cut
    /// into mega-batches of <see cref="LengthBucketingMegaBatches"/> batches, each sorted by length, then the batches
    /// are shuffled (order stays random). Default true.</summary>
    public bool LengthBucketing { get; set; } = true;

    /// <summary>Batches per mega-batch when <see cref="LengthBucketing"/> is on (Hugging Face uses 50). Default
    /// 50.</summary>
    public int LengthBucketingMegaBatches { get; set; } = 50;

    /// <summary>Evaluate every this many optimizer steps; null evaluates once per epoch. Evaluation needs validation
    /// data (a task's <c>ValidationSet</c>).</summary>
    public int? EvaluateEverySteps { get; set; }

    /// <summary>Stop after this many consecutive evaluations without an improvement larger than
    /// <see cref="EarlyStoppingThreshold"/> (Hugging Face's EarlyStoppingCallback); null trains all epochs.</summary>
    public int? EarlyStoppingPatience { get; set; }

    /// <summary>The smallest improvement of the validation metric that counts. Default 0.</summary>
    public double EarlyStoppingThreshold { get; set; }

    /// <summary>At the end (and on cancellation), put back the trainable weights of the best evaluation. Default
    /// true.</summary>
    public bool RestoreBestWeights { get; set; } = true;

    /// <summary>Write a checkpoint every this many optimizer steps (requires
    /// <see cref="CheckpointDirectory"/>).</summary>
    public int? CheckpointEverySteps { get; set; }

    /// <summary>A folder for training checkpoints (<c>checkpoint-&lt;step&gt;</c> sub-folders: trainable weights,
    /// optimizer and scheduler state, RNG state). Set together with <see cref="CheckpointEverySteps"/>: either alone
    /// is rejected, since nothing would be written.</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Keep only the newest this many checkpoints in <see cref="CheckpointDirectory"/>; null keeps
    /// all.</summary>
    public int? CheckpointsToKeep { get; set; }

    /// <summary>Resume training from a checkpoint folder (a <c>checkpoint-&lt;step&gt;</c> folder, or one holding
    /// several: the newest is used) written by an earlier run with the same options. A checkpoint of another run is
    /// refused, before anything is loaded, with an error naming what differs: the base model (its files' hash), the
    /// method's settings (rank, alpha, targets), the task's settings (labels, sequence length), the seed, batch size,
    /// gradient accumulation or length bucketing.</summary>
    public string? ResumeFromCheckpoint { get; set; }

    /// <summary>Optimizer steps between log lines (progress is reported every step). Default 10.</summary>
    public int LoggingSteps { get; set; } = 10;

    /// <summary>Receives a report after every optimizer step and every evaluation (also written to the log).</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Cancels training within one step; the model trained so far is returned.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first invalid option (the message says
    /// <c>TypeName.Option</c>; <see cref="ArgumentException.ParamName"/> is the option). Task options add their own
    /// checks after these.</summary>
    public virtual void Validate()
    {
        string type = GetType().Name;
        void Range(bool ok, string option, object? value, string rule)
        {
            if (!ok) throw new ArgumentOutOfRangeException(option, value, $"{type}.{option} {rule}");
        }
        void Together(bool ok, string option, string message)
        {
            if (!ok) throw new ArgumentException($"{type}.{option}: {message}", option);
        }
        Range(Epochs >= 1 || MaxSteps is not null, nameof(Epochs), Epochs, "must be at least 1.");
        Range(MaxSteps is null or >= 1, nameof(MaxSteps), MaxSteps, "must be at least 1 when set.");
        Range(BatchSize >= 1, nameof(BatchSize), BatchSize, "must be at least 1.");
        Range(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), GradientAccumulationSteps, "must be at least 1.");
        Range(LearningRate is null || (LearningRate > 0 && double.IsFinite(LearningRate.Value)), nameof(LearningRate), LearningRate,
            "must be a positive number, or null for the method's default.");
        Range(WeightDecay >= 0 && double.IsFinite(WeightDecay), nameof(WeightDecay), WeightDecay, "must be 0 (none) or a positive number.");
        Range(AdamBeta1 is >= 0 and < 1, nameof(AdamBeta1), AdamBeta1, "must be in [0, 1).");
        Range(AdamBeta2 is >= 0 and < 1, nameof(AdamBeta2), AdamBeta2, "must be in [0, 1).");
        Range(AdamEpsilon >= 0 && double.IsFinite(AdamEpsilon), nameof(AdamEpsilon), AdamEpsilon, "must be 0 or more.");
        Range(WarmupSteps >= 0, nameof(WarmupSteps), WarmupSteps, "must be 0 or more.");
        Range(WarmupRatio is >= 0 and <= 1, nameof(WarmupRatio), WarmupRatio, "must be in [0, 1].");
        Range(MaxGradientNorm >= 0 && !double.IsNaN(MaxGradientNorm), nameof(MaxGradientNorm), MaxGradientNorm,
            "must be 0 (no clipping) or a positive norm.");
        Range(LengthBucketingMegaBatches >= 1, nameof(LengthBucketingMegaBatches), LengthBucketingMegaBatches, "must be at least 1.");
        Range(EvaluateEverySteps is null or >= 1, nameof(EvaluateEverySteps), EvaluateEverySteps, "must be at least 1 when set.");
        Range(EarlyStoppingPatience is null or >= 1, nameof(EarlyStoppingPatience), EarlyStoppingPatience, "must be at least 1 when set.");
        Range(EarlyStoppingThreshold >= 0 && double.IsFinite(EarlyStoppingThreshold), nameof(EarlyStoppingThreshold), EarlyStoppingThreshold,
            "must be 0 or a positive number.");
        Range(CheckpointEverySteps is null or >= 1, nameof(CheckpointEverySteps), CheckpointEverySteps, "must be at least 1 when set.");
        Range(CheckpointsToKeep is null or >= 1, nameof(CheckpointsToKeep), CheckpointsToKeep, "must be at least 1 when set.");
        Range(LoggingSteps >= 1, nameof(LoggingSteps), LoggingSteps, "must be at least 1.");
        Together(CheckpointDirectory is null || !string.IsNullOrWhiteSpace(CheckpointDirectory), nameof(CheckpointDirectory),
            "CheckpointDirectory is blank: name a folder, or leave it null.");
        Together(CheckpointEverySteps is null || CheckpointDirectory is not null, nameof(CheckpointDirectory),
            "CheckpointEverySteps is set but CheckpointDirectory is not: set the folder the checkpoints go to.");
        Together(CheckpointDirectory is null || CheckpointEverySteps is not null, nameof(CheckpointEverySteps),
            "CheckpointDirectory is set but CheckpointEverySteps is not: no checkpoint would be written. Set how often (in optimizer steps), or leave CheckpointDirectory null.");
    }
}

/// <summary>The values a training run decides once when it starts, where <see cref="TrainingOptions"/> leaves them
/// open: the peak learning rate (the method's default when unset) and the seed (the MLContext's when unset).</summary>
/// <param name="LearningRate">The peak learning rate.</param>
/// <param name="Seed">Seeds TorchSharp's generator (dropout, random initialisation) and the data order.</param>
public sealed record ResolvedTraining(double LearningRate, int Seed)
{
    /// <summary>The learning rate when neither the options nor a method give one (transformers' default).</summary>
    public const double DefaultLearningRate = 5e-5;

    /// <summary>The seed when neither the options nor the MLContext give one.</summary>
    public const int DefaultSeed = 42;

    /// <summary>Decides the open values: the options' where set, else <paramref name="defaultLearningRate"/> and
    /// <paramref name="defaultSeed"/>.</summary>
    public static ResolvedTraining From(TrainingOptions options, double defaultLearningRate = DefaultLearningRate, int defaultSeed = DefaultSeed) =>
        new(options.LearningRate ?? defaultLearningRate, options.Seed ?? defaultSeed);
}
