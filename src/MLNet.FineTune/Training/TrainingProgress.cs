namespace MLNet.FineTune.Training;

/// <summary>What the task's evaluation callback returns.</summary>
/// <param name="MetricName">The metric that decides the best weights and early stopping (e.g. "accuracy", "f1", "loss").</param>
/// <param name="Value">Its value on the validation set.</param>
/// <param name="HigherIsBetter">True for accuracy-like metrics, false for losses.</param>
public sealed record EvaluationResult(string MetricName, double Value, bool HigherIsBetter)
{
    /// <summary>Further metrics to log (not used for decisions).</summary>
    public IReadOnlyDictionary<string, double>? OtherMetrics { get; init; }
}

/// <summary>A report after an optimizer step (and again after an evaluation, with <see cref="Validation"/> set).</summary>
/// <param name="Epoch">1-based epoch the step belongs to.</param>
/// <param name="Step">Optimizer steps completed.</param>
/// <param name="TotalSteps">Optimizer steps planned.</param>
/// <param name="Loss">Mean training loss over the step's examples (or loss items).</param>
/// <param name="LearningRate">The base learning rate used by the step (before group multipliers).</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="ExamplesPerSecond">Training throughput of the step.</param>
/// <param name="Validation">The evaluation made after this step, if any.</param>
public sealed record TrainingProgress(int Epoch, long Step, long TotalSteps, double Loss, double LearningRate, double GradNorm,
    double ExamplesPerSecond, EvaluationResult? Validation = null);

/// <summary>Raised when a step's loss or gradient norm is NaN or infinite. The step was not applied: the model holds
/// the weights of the last good step.</summary>
public sealed class NonFiniteLossException : Exception
{
    /// <summary>Creates the exception.</summary>
    public NonFiniteLossException(string quantity, double value, long step, int epoch, TrainingHistory history)
        : base($"Training stopped: the {quantity} of optimizer step {step} (epoch {epoch}) is {value}. The step was not applied; " +
               $"the model keeps the weights after step {step - 1}. Lower the learning rate, check the data of this step, or enable gradient clipping.")
    {
        Quantity = quantity; Value = value; Step = step; Epoch = epoch; History = history;
    }

    /// <summary>"loss" or "gradient norm".</summary>
    public string Quantity { get; }
    /// <summary>The offending value.</summary>
    public double Value { get; }
    /// <summary>The 1-based optimizer step that produced it.</summary>
    public long Step { get; }
    /// <summary>Its 1-based epoch.</summary>
    public int Epoch { get; }
    /// <summary>The history up to the last good step.</summary>
    public TrainingHistory History { get; }
}
