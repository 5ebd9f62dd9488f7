using System.Text.Json.Nodes;
using MLNet.FineTune.Peft;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft.ScaleOnly;

/// <summary>The toy method's descriptor: what injection, the adapter file and the engine ask of it.</summary>
internal sealed class ScaleOnlyMethod : PeftMethod<ScaleOnlyOptions>
{
    private static readonly Dictionary<string, string[]> DefaultTargets = new() { ["bert"] = ["query", "value"] };

    public override string PeftType => "SCALE_ONLY";
    public override string DisplayName(MethodOptions options) => "scale-only";
    public override string CatalogMethodName(MethodOptions options) => "TextClassification";
    public override double DefaultLearningRate => 1e-2;
    public override IReadOnlyList<string> AdapterTensorNames => ["scale_only_s"];
    public override IReadOnlyCollection<string> KnownModelTypes => DefaultTargets.Keys;

    public override void Validate(MethodOptions options)
    {
        var s = Typed(options).InitialScale;
        if (!double.IsFinite(s)) throw new ArgumentOutOfRangeException(nameof(ScaleOnlyOptions.InitialScale), s, "ScaleOnlyOptions.InitialScale must be finite.");
    }

    public override MethodOptions? WithDefaultTargets(MethodOptions options, string? modelType) =>
        modelType is not null && DefaultTargets.TryGetValue(modelType, out var t) ? options with { TargetModules = t } : null;

    public override AdaptedLinear CreateLayer(MethodOptions options, string path, BaseLinear baseLinear, ScalarType adapterDType) =>
        new ScaleOnlyLinear(baseLinear, Typed(options).InitialScale, adapterDType);

    public override void WriteJson(MethodOptions options, JsonObject json) => json["initial_scale"] = Typed(options).InitialScale;

    public override MethodOptions ReadJson(PeftConfigJson.Reader json) => new ScaleOnlyOptions { InitialScale = json.Double("initial_scale", 1.0) };

    /// <summary>The one registry line (once per test process).</summary>
    public static void EnsureRegistered()
    {
        lock (DefaultTargets)
            if (PeftMethods.ForPeftType("SCALE_ONLY") is null) PeftMethods.Register(new ScaleOnlyMethod());
    }
}
