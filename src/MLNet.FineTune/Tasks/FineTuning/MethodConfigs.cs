using MLNet.FineTune.Peft;

namespace MLNet.FineTune.Tasks.FineTuning;

/// <summary>Turns the catalog's method options into PEFT configs, and knows each method's default learning rate.</summary>
internal static class MethodConfigs
{
    /// <summary>The PEFT config for a method, for a task type (<see cref="PeftTaskType"/>).</summary>
    public static PeftConfig ToPeftConfig(MethodOptions method, string taskType, string baseModel)
    {
        PeftConfig config = method switch
        {
            DoraOptions d => Lora(d, useDora: true),
            LoraOptions l => Lora(l, useDora: false),
            IA3Options ia3 => new IA3Config { FeedforwardModules = ia3.FeedForwardModules },
            AdapterOptions a => new BottleneckConfig { Kind = a.Placement, ReductionFactor = a.ReductionFactor, NonLinearity = a.Activation },
            FullFineTuneOptions => new FullFineTuneConfig(),
            _ => throw new ArgumentException($"Unknown method options type {method.GetType().Name}.", nameof(method)),
        };
        return config with
        {
            TargetModules = method.TargetModules,
            TargetModulesPattern = method.TargetModulesRegex,
            ExcludeModules = method.ExcludeModules,
            ModulesToSave = method.ModulesToSave,
            TaskType = taskType,
            BaseModelNameOrPath = baseModel,
        };
    }

    private static LoraConfig Lora(LoraOptions o, bool useDora)
    {
        if (o.Rank < 1) throw new ArgumentOutOfRangeException(nameof(LoraOptions.Rank), o.Rank, "LoRA rank must be at least 1.");
        if (o.Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(LoraOptions.Dropout), o.Dropout, "Dropout must be in [0, 1).");
        if (o.LoraPlusLearningRateRatio < 1) throw new ArgumentOutOfRangeException(nameof(LoraOptions.LoraPlusLearningRateRatio), o.LoraPlusLearningRateRatio, "The LoRA+ ratio must be at least 1 (1 disables LoRA+).");
        return new LoraConfig { Rank = o.Rank, Alpha = o.Alpha, Dropout = o.Dropout, UseRsLora = o.UseRsLora, UseDora = useDora, Init = o.Initialization };
    }

    /// <summary>The peak learning rate when the options leave it unset.</summary>
    public static double DefaultLearningRate(MethodOptions method) => method switch
    {
        LoraOptions => 1e-3,
        AdapterOptions => 1e-3,
        IA3Options => 5e-3,
        FullFineTuneOptions => 5e-5,
        _ => 1e-3,
    };

    /// <summary>LoRA+'s ratio for the B matrices (1 for every other method).</summary>
    public static double LoraPlusRatio(MethodOptions method) => method is LoraOptions l ? l.LoraPlusLearningRateRatio : 1.0;
}
