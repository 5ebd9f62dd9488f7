using System.Text.Json.Nodes;

namespace MLNet.FineTune.Peft;

/// <summary>Full fine-tuning: no adapter; every weight trains, and model.zip records peft_type "FULL" (this
/// library's).</summary>
internal sealed class FullFineTuneMethod : PeftMethod<FullFineTuneOptions>
{
    public override string PeftType => "FULL";

    public override string DisplayName(MethodOptions options) => "full fine-tuning";

    public override string CatalogMethodName(MethodOptions options) => "FullFineTune";

    public override double DefaultLearningRate => 5e-5;

    public override bool InjectsAdapters => false;

    // Options that choose modules to adapt would be ignored: every weight trains.
    public override void Validate(MethodOptions options)
    {
        foreach (var (name, isSet) in new[] { (nameof(options.TargetModules), options.TargetModules is not null),
            (nameof(options.TargetModulesPattern), options.TargetModulesPattern is not null), (nameof(options.ExcludeModules), options.ExcludeModules is not null) })
            if (isSet)
                throw new ArgumentException($"FullFineTuneOptions.{name} is set, but full fine-tuning trains every weight: {name} chooses modules to adapt and would be ignored. Leave it null, or choose a parameter-efficient method (LoraOptions, ...).", name);
    }

    public override void WriteJson(MethodOptions options, JsonObject json) { }

    public override MethodOptions ReadJson(PeftConfigJson.Reader json) => new FullFineTuneOptions();
}
