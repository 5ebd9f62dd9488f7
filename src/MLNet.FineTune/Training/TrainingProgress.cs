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
/// the weights of the last good step. The message names the step and its examples, so the rows that produced it can be
/// inspected.</summary>
public sealed class NonFiniteLossException : Exception
{
    /// <summary>At most this many examples are listed in the message (<see cref="ExampleIndices"/> has them all).</summary>
    private const int ListedExamples = 20;

    /// <summary>Creates the exception.</summary>
    /// <param name="quantity">"loss" or "gradient norm".</param>
    /// <param name="value">The offending value.</param>
    /// <param name="step">The 1-based optimizer step.</param>
    /// <param name="epoch">Its 1-based epoch.</param>
    /// <param name="history">The history up to the last good step.</param>
    /// <param name="exampleIndices">The step's examples (indices as the loss callback received them).</param>
    /// <param name="examplesDescription">How the message names the examples (e.g. "training rows 3, 17"); null lists
    /// <paramref name="exampleIndices"/>.</param>
    public NonFiniteLossException(string quantity, double value, long step, int epoch, TrainingHistory history,
        IReadOnlyList<int>? exampleIndices = null, string? examplesDescription = null)
        : this(quantity, value, step, epoch, history, exampleIndices ?? [], examplesDescription, inner: null)
    {
    }

    private NonFiniteLossException(string quantity, double value, long step, int epoch, TrainingHistory history,
        IReadOnlyList<int> exampleIndices, string? examplesDescription, Exception? inner)
        : base($"Training stopped: the {quantity} of optimizer step {step} (epoch {epoch}) is {value}. The step was not applied; " +
               $"the model keeps the weights after step {step - 1}. {DescribeExamples(exampleIndices, examplesDescription)}" +
               "Lower the learning rate, check the data of this step, or enable gradient clipping.", inner)
    {
        Quantity = quantity; Value = value; Step = step; Epoch = epoch; History = history;
        ExampleIndices = exampleIndices.Order().ToArray();
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
    /// <summary>The examples of the step (every micro-batch of it), ascending: indices as the loss callback received
    /// them (<c>TrainingSetup.ComputeLoss</c>); empty when unknown.</summary>
    public IReadOnlyList<int> ExampleIndices { get; }

    /// <summary>The same error, its examples named in the caller's terms (e.g. data rows and question ids), this one
    /// as the inner exception.</summary>
    public NonFiniteLossException WithExamplesDescribed(string examplesDescription) =>
        new(Quantity, Value, Step, Epoch, History, ExampleIndices, examplesDescription, this);

    /// <summary>"The step's examples: 3, 7 and 2 more. " (or the caller's description), or "" when none are known.</summary>
    private static string DescribeExamples(IReadOnlyList<int> indices, string? description)
    {
        if (description is not null) return $"The step's examples: {description}. ";
        return indices.Count == 0 ? "" : $"The step's examples: {ListOf(indices.Order())}. ";
    }

    /// <summary>The first items, comma-separated, with a count of the rest: "1, 4, 9 and 12 more".</summary>
    internal static string ListOf<T>(IEnumerable<T> items)
    {
        var all = items.ToList();
        var listed = string.Join(", ", all.Take(ListedExamples));
        return all.Count > ListedExamples ? $"{listed} and {all.Count - ListedExamples} more" : listed;
    }
}
