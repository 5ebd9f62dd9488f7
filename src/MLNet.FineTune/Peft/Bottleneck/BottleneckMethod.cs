using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>Bottleneck adapters: this library's <c>BOTTLENECK</c> format.</summary>
internal sealed class BottleneckMethod : PeftMethod<AdapterOptions>
{
    /// <summary>The bottleneck format's version (this library's format).</summary>
    public const int FormatVersion = 1;

    // Regular expressions (full match) for the output projections of attention and feed-forward sub-layers.
    private static readonly Dictionary<string, (string Houlsby, string Pfeiffer)> DefaultTargets = new()
    {
        ["bert"] = (@"(.*\.)?layer\.\d+\.(attention\.)?output\.dense", @"(.*\.)?layer\.\d+\.output\.dense"),
        ["roberta"] = (@"(.*\.)?layer\.\d+\.(attention\.)?output\.dense", @"(.*\.)?layer\.\d+\.output\.dense"),
        ["distilbert"] = (@"(.*\.)?layer\.\d+\.(attention\.out_lin|ffn\.lin2)", @"(.*\.)?layer\.\d+\.ffn\.lin2"),
        ["gpt2"] = (@"(.*\.)?h\.\d+\.(attn|mlp)\.c_proj", @"(.*\.)?h\.\d+\.mlp\.c_proj"),
        ["llama"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
        ["mistral"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
        ["qwen2"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
    };

    public override string PeftType => "BOTTLENECK";

    public override string DisplayName(MethodOptions options) => "bottleneck";

    public override string CatalogMethodName(MethodOptions options) => "Adapters";

    public override double DefaultLearningRate => 1e-3;

    public override IReadOnlyList<string> AdapterTensorNames => ["adapter_down.weight", "adapter_down.bias", "adapter_up.weight", "adapter_up.bias"];

    public override IReadOnlyCollection<string> KnownModelTypes => DefaultTargets.Keys;

    public override void Validate(MethodOptions options)
    {
        var o = Typed(options);
        if (o.ReductionFactor < 1)
            throw new ArgumentOutOfRangeException(nameof(AdapterOptions.ReductionFactor), o.ReductionFactor, "AdapterOptions.ReductionFactor must be at least 1.");
        if (!double.IsFinite(o.Scaling))
            throw new ArgumentOutOfRangeException(nameof(AdapterOptions.Scaling), o.Scaling, "AdapterOptions.Scaling must be a finite number.");
    }

    public override MethodOptions? WithDefaultTargets(MethodOptions options, string? modelType) =>
        modelType is not null && DefaultTargets.TryGetValue(modelType, out var t)
            ? options with { TargetModulesPattern = Typed(options).Placement == BottleneckKind.Houlsby ? t.Houlsby : t.Pfeiffer }
            : null;

    public override AdaptedLinear CreateLayer(MethodOptions options, string path, BaseLinear baseLinear, ScalarType adapterDType)
    {
        // A factor above the layer's width gives a bottleneck of 1, not 0 (BottleneckLinear rounds up to 1).
        var o = Typed(options);
        return new BottleneckLinear(baseLinear, o.ReductionFactor, o.Activation, o.Scaling, adapterDType);
    }

    public override void WriteJson(MethodOptions options, JsonObject o)
    {
        var b = Typed(options);
        o["format_version"] = FormatVersion;
        o["adapter_kind"] = b.Placement == BottleneckKind.Houlsby ? "houlsby" : "pfeiffer";
        o["reduction_factor"] = b.ReductionFactor;
        o["non_linearity"] = b.Activation;
        o["scaling"] = b.Scaling;
        o["fan_in_fan_out"] = b.FanInFanOut;
        o["layers_pattern"] = PeftConfigJson.StringList(b.LayersPattern);
        o["layers_to_transform"] = PeftConfigJson.IntList(b.LayersToTransform);
    }

    // Keys a file omits get the format's defaults: houlsby, reduction_factor 16, relu, scaling 1.
    public override MethodOptions ReadJson(PeftConfigJson.Reader r)
    {
        int version = r.Int("format_version", FormatVersion);
        if (version > FormatVersion)
            throw new NotSupportedException($"{r.Source}: bottleneck format_version {version} is newer than this library's ({FormatVersion}).");
        return new AdapterOptions
        {
            Placement = r.String("adapter_kind") switch
            {
                null or "houlsby" => BottleneckKind.Houlsby,
                "pfeiffer" => BottleneckKind.Pfeiffer,
                var other => throw new InvalidDataException($"{r.Source}: 'adapter_kind' = \"{other}\"; expected houlsby or pfeiffer."),
            },
            ReductionFactor = r.Int("reduction_factor", 16),
            Activation = r.String("non_linearity") ?? "relu",
            Scaling = r.Double("scaling", 1.0),
        };
    }
}
