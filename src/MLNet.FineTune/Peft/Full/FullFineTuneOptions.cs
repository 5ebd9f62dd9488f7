namespace MLNet.FineTune;

/// <summary>Full fine-tuning: every weight trains. The baseline the parameter-efficient methods are measured against.
/// <see cref="MethodOptions.TargetModules"/>, <see cref="MethodOptions.TargetModulesPattern"/> and
/// <see cref="MethodOptions.ExcludeModules"/> choose modules to adapt, so setting them here is an error.</summary>
public sealed record FullFineTuneOptions : MethodOptions
{
}
