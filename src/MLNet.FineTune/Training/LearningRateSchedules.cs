namespace MLNet.FineTune.Training;

/// <summary>
/// Learning-rate multipliers as defined by transformers' <c>get_constant_schedule_with_warmup</c>,
/// <c>get_linear_schedule_with_warmup</c> and <c>get_cosine_schedule_with_warmup</c> (num_cycles 0.5). As with
/// PyTorch's LambdaLR stepped after each optimizer step, the optimizer step with 0-based index <c>k</c> uses
/// <c>LearningRate * Multiplier(k)</c>: with warmup, the very first step has rate 0.
/// </summary>
internal static class LearningRateSchedules
{
    /// <summary>The multiplier of the peak learning rate for 0-based optimizer step <paramref name="step"/>.</summary>
    /// <param name="schedule">The schedule after warmup.</param>
    /// <param name="step">Optimizer steps taken before this one.</param>
    /// <param name="warmupSteps">Length of the linear warmup from 0.</param>
    /// <param name="totalSteps">All optimizer steps of the run (the decay reaches 0 there).</param>
    public static double Multiplier(LearningRateSchedule schedule, long step, long warmupSteps, long totalSteps)
    {
        if (step < warmupSteps) return step / (double)Math.Max(1, warmupSteps);
        double progress = (step - warmupSteps) / (double)Math.Max(1, totalSteps - warmupSteps);
        return schedule switch
        {
            LearningRateSchedule.Constant => 1.0,
            LearningRateSchedule.Linear => Math.Max(0.0, (totalSteps - step) / (double)Math.Max(1, totalSteps - warmupSteps)),
            // Half a cosine period from 1 down to 0 over the steps after warmup.
            LearningRateSchedule.Cosine => Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * progress))),
            _ => throw new ArgumentOutOfRangeException(nameof(schedule), schedule, "Unknown learning-rate schedule."),
        };
    }

    /// <summary>Warmup steps as Hugging Face's TrainingArguments computes them: <paramref name="warmupSteps"/> when
    /// positive, else <c>ceil(totalSteps * warmupRatio)</c>.</summary>
    public static long WarmupSteps(int warmupSteps, double warmupRatio, long totalSteps) =>
        warmupSteps > 0 ? warmupSteps : (long)Math.Ceiling(totalSteps * warmupRatio);
}
