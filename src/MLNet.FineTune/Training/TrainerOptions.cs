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
public enum EvaluationStrategy
{
    /// <summary>Never (early stopping and best-weight restore are then off).</summary>
    None,
    /// <summary>After the last optimizer step of every epoch.</summary>
    Epoch,
    /// <summary>Every <see cref="TrainerOptions.EvalSteps"/> optimizer steps.</summary>
    Steps,
}

/// <summary>
/// Options of the shared training loop. Defaults follow Hugging Face's <c>TrainingArguments</c> where one exists
/// (linear schedule, AdamW betas 0.9/0.999, eps 1e-8, clipping at 1.0), except <see cref="WeightDecay"/> (0.01, applied
/// to weights only: never to biases and normalisation weights).
/// </summary>
public sealed record TrainerOptions
{
    /// <summary>Passes over the training examples (used when <see cref="MaxSteps"/> is null).</summary>
    public int Epochs { get; init; } = 3;

    /// <summary>Optional cap on optimizer steps; when set it replaces <see cref="Epochs"/> as the length of training.</summary>
    public int? MaxSteps { get; init; }

    /// <summary>Examples per micro-batch (one forward/backward). The optimizer sees
    /// <c>BatchSize * GradientAccumulationSteps</c> examples per step.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Micro-batches whose gradients are summed (weighted by their example counts) before one optimizer step.
    /// The last group of an epoch may be shorter; it still makes a step.</summary>
    public int GradientAccumulationSteps { get; init; } = 1;

    /// <summary>Peak learning rate (reached after warmup). A parameter group's rate is this times its multiplier.</summary>
    public double LearningRate { get; init; } = 5e-5;

    /// <summary>Decoupled AdamW weight decay for parameters whose <see cref="TrainableParameter.ApplyWeightDecay"/> is true.</summary>
    public double WeightDecay { get; init; } = 0.01;

    /// <summary>AdamW beta1.</summary>
    public double AdamBeta1 { get; init; } = 0.9;

    /// <summary>AdamW beta2.</summary>
    public double AdamBeta2 { get; init; } = 0.999;

    /// <summary>AdamW epsilon.</summary>
    public double AdamEpsilon { get; init; } = 1e-8;

    /// <summary>The learning-rate schedule after warmup.</summary>
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Linear;

    /// <summary>Warmup length in optimizer steps; when 0, <see cref="WarmupRatio"/> decides.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Warmup as a fraction of all optimizer steps, rounded up (used when <see cref="WarmupSteps"/> is 0).</summary>
    public double WarmupRatio { get; init; }

    /// <summary>Clip gradients to this global L2 norm before each step; null or 0 disables clipping (the norm is still
    /// logged).</summary>
    public double? MaxGradNorm { get; init; } = 1.0;

    /// <summary>Seeds TorchSharp's generator (dropout, random init inside the loss callback) and the data order.</summary>
    public int Seed { get; init; } = 42;

    /// <summary>Group examples of similar length into the same batch to reduce padding: the shuffled order is cut into
    /// mega-batches of <see cref="LengthBucketingMegaBatches"/> batches, each sorted by length, then the batches are
    /// shuffled. Needs <see cref="TrainingSetup.ExampleLengths"/>.</summary>
    public bool LengthBucketing { get; init; }

    /// <summary>Batches per mega-batch when <see cref="LengthBucketing"/> is on (Hugging Face uses 50).</summary>
    public int LengthBucketingMegaBatches { get; init; } = 50;

    /// <summary>When the evaluation callback runs (it must be supplied unless this is None).</summary>
    public EvaluationStrategy EvaluationStrategy { get; init; } = EvaluationStrategy.Epoch;

    /// <summary>Optimizer steps between evaluations when <see cref="EvaluationStrategy"/> is Steps.</summary>
    public int EvalSteps { get; init; } = 500;

    /// <summary>Stop after this many consecutive evaluations without an improvement larger than
    /// <see cref="EarlyStoppingThreshold"/> (Hugging Face's EarlyStoppingCallback); null disables early stopping.</summary>
    public int? EarlyStoppingPatience { get; init; }

    /// <summary>How much a metric must beat the best so far to reset the patience counter.</summary>
    public double EarlyStoppingThreshold { get; init; }

    /// <summary>At the end (and on cancellation), put back the trainable weights of the best evaluation.</summary>
    public bool RestoreBestWeights { get; init; } = true;

    /// <summary>Write a resumable checkpoint every this many optimizer steps; null disables checkpoints.</summary>
    public int? CheckpointEverySteps { get; init; }

    /// <summary>Folder that receives <c>checkpoint-&lt;step&gt;</c> sub-folders.</summary>
    public string? CheckpointDirectory { get; init; }

    /// <summary>Keep only the newest this many checkpoints in <see cref="CheckpointDirectory"/>; null keeps all.</summary>
    public int? CheckpointsToKeep { get; init; }

    /// <summary>A <c>checkpoint-&lt;step&gt;</c> folder, or a folder holding several (the newest is used), to resume from.</summary>
    public string? ResumeFromCheckpoint { get; init; }

    /// <summary>Optimizer steps between log lines sent to <see cref="Log"/> (progress is reported every step).</summary>
    public int LoggingSteps { get; init; } = 10;

    /// <summary>Receives a report after every optimizer step and every evaluation.</summary>
    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>Receives human-readable log lines (the ML.NET layer connects its channel here).</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Stops training before the next micro-batch; the result is marked cancelled and the model is usable.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        static void Require(bool ok, string option, string message)
        {
            if (!ok) throw new ArgumentException($"TrainerOptions.{option} {message}", option);
        }
        Require(Epochs >= 1 || MaxSteps is not null, nameof(Epochs), $"must be at least 1 (got {Epochs}).");
        Require(MaxSteps is null or >= 1, nameof(MaxSteps), $"must be at least 1 when set (got {MaxSteps}).");
        Require(BatchSize >= 1, nameof(BatchSize), $"must be at least 1 (got {BatchSize}).");
        Require(GradientAccumulationSteps >= 1, nameof(GradientAccumulationSteps), $"must be at least 1 (got {GradientAccumulationSteps}).");
        Require(LearningRate > 0 && double.IsFinite(LearningRate), nameof(LearningRate), $"must be a positive number (got {LearningRate}).");
        Require(WeightDecay >= 0 && double.IsFinite(WeightDecay), nameof(WeightDecay), $"must be 0 or more (got {WeightDecay}).");
        Require(AdamBeta1 is >= 0 and < 1, nameof(AdamBeta1), $"must be in [0, 1) (got {AdamBeta1}).");
        Require(AdamBeta2 is >= 0 and < 1, nameof(AdamBeta2), $"must be in [0, 1) (got {AdamBeta2}).");
        Require(AdamEpsilon >= 0, nameof(AdamEpsilon), $"must be 0 or more (got {AdamEpsilon}).");
        Require(WarmupSteps >= 0, nameof(WarmupSteps), $"must be 0 or more (got {WarmupSteps}).");
        Require(WarmupRatio is >= 0 and <= 1, nameof(WarmupRatio), $"must be in [0, 1] (got {WarmupRatio}).");
        Require(MaxGradNorm is null || MaxGradNorm >= 0, nameof(MaxGradNorm), $"must be 0 or more when set (got {MaxGradNorm}).");
        Require(LengthBucketingMegaBatches >= 1, nameof(LengthBucketingMegaBatches), $"must be at least 1 (got {LengthBucketingMegaBatches}).");
        Require(EvaluationStrategy != EvaluationStrategy.Steps || EvalSteps >= 1, nameof(EvalSteps), $"must be at least 1 when EvaluationStrategy is Steps (got {EvalSteps}).");
        Require(EarlyStoppingPatience is null or >= 1, nameof(EarlyStoppingPatience), $"must be at least 1 when set (got {EarlyStoppingPatience}).");
        Require(EarlyStoppingPatience is null || EvaluationStrategy != EvaluationStrategy.None, nameof(EarlyStoppingPatience),
            "needs evaluations: set EvaluationStrategy to Epoch or Steps.");
        Require(EarlyStoppingThreshold >= 0, nameof(EarlyStoppingThreshold), $"must be 0 or more (got {EarlyStoppingThreshold}).");
        Require(CheckpointEverySteps is null or >= 1, nameof(CheckpointEverySteps), $"must be at least 1 when set (got {CheckpointEverySteps}).");
        Require(CheckpointEverySteps is null || !string.IsNullOrWhiteSpace(CheckpointDirectory), nameof(CheckpointDirectory),
            "must be set when CheckpointEverySteps is set.");
        Require(CheckpointsToKeep is null or >= 1, nameof(CheckpointsToKeep), $"must be at least 1 when set (got {CheckpointsToKeep}).");
        Require(LoggingSteps >= 1, nameof(LoggingSteps), $"must be at least 1 (got {LoggingSteps}).");
    }
}
