using MLNet.FineTune.Peft;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// <see cref="FineTuneOptions.InitialAdapter"/> replaces the method options' settings (rank, targets) with the saved
/// adapter's, but not the method itself: continuing an IA3 adapter from <c>.Lora()</c> would otherwise train IA3
/// while the caller believes it trains LoRA.
/// </summary>
internal static class InitialAdapterMethod
{
    /// <summary>Throws unless the adapter in <paramref name="folder"/> is of the method <paramref name="method"/>
    /// (the estimator's): the same registered method, and for LoRA whether it is DoRA.</summary>
    /// <exception cref="ArgumentException">Another method (both are named, with the catalog method that continues
    /// it).</exception>
    public static void Check(string folder, MethodOptions method)
    {
        var saved = PeftConfigJson.Read(folder);
        var savedMethod = PeftMethods.For(saved);
        var ownMethod = PeftMethods.For(method);
        string savedName = savedMethod.DisplayName(saved), ownName = ownMethod.DisplayName(method);
        if (savedMethod == ownMethod && savedName == ownName) return;
        throw new ArgumentException(
            $"InitialAdapter {folder} holds an adapter of method {savedName} (peft_type {savedMethod.PeftType} in {PeftConfigJson.FileName}), but this " +
            $"estimator trains with {ownName}: continue the adapter with ml.FineTune().{savedMethod.CatalogMethodName(saved)}(...), or leave InitialAdapter unset " +
            $"to train a new {ownName} adapter.", nameof(FineTuneOptions.InitialAdapter));
    }
}
