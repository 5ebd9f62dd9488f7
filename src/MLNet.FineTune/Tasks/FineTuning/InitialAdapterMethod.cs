using MLNet.FineTune.Peft;

namespace MLNet.FineTune.Tasks.FineTuning;

/// <summary>
/// <see cref="FineTuneOptions.InitialAdapter"/> replaces the method options' settings (rank, targets) with the saved
/// adapter's, but not the method itself: continuing an IA3 adapter from <c>.Lora()</c> would otherwise train IA3
/// while the caller believes it trains LoRA.
/// </summary>
internal static class InitialAdapterMethod
{
    /// <summary>Throws unless the adapter in <paramref name="folder"/> is of the method <paramref name="method"/>
    /// (the estimator's, from <see cref="MethodConfigs.ToPeftConfig"/>): its peft_type, and for LoRA whether it is DoRA.</summary>
    /// <exception cref="ArgumentException">Another method (both are named, with the catalog method that continues it).</exception>
    public static void Check(string folder, PeftConfig method)
    {
        var saved = PeftConfigJson.Read(folder);
        if (Name(saved) == Name(method)) return;
        throw new ArgumentException(
            $"InitialAdapter {folder} holds an adapter of method {Name(saved)} (peft_type {saved.PeftType} in {PeftConfigJson.FileName}), but this " +
            $"estimator trains with {Name(method)}: continue the adapter with ml.FineTune().{CatalogMethod(saved)}(...), or leave InitialAdapter unset " +
            $"to train a new {Name(method)} adapter.", nameof(FineTuneOptions.InitialAdapter));
    }

    private static string Name(PeftConfig config) => config switch
    {
        LoraConfig { UseDora: true } => "DoRA",
        LoraConfig => "LoRA",
        IA3Config => "IA3",
        BottleneckConfig => "bottleneck",
        FullFineTuneConfig => "full fine-tuning",
        _ => config.PeftType,
    };

    private static string CatalogMethod(PeftConfig config) => config switch
    {
        LoraConfig { UseDora: true } => nameof(FineTuneCatalog.Dora),
        LoraConfig => nameof(FineTuneCatalog.Lora),
        IA3Config => nameof(FineTuneCatalog.IA3),
        BottleneckConfig => nameof(FineTuneCatalog.Adapters),
        _ => nameof(FineTuneCatalog.FullFineTune),
    };
}
