using MLNet.FineTune.Training;

namespace MLNet.FineTune.FineTuning;

/// <summary>The training history as stored in model.zip (so a reloaded model still reports its curves).</summary>
internal sealed record TrainingHistoryJson(TrainingStepRecord[] Steps, string? ValidationMetricName, TrainingStopReason StopReason)
{
    public static TrainingHistoryJson From(TrainingHistory history) =>
        new(history.Steps.ToArray(), history.ValidationMetricName, history.StopReason);

    public TrainingHistory ToHistory() => new(Steps, ValidationMetricName, StopReason);
}
