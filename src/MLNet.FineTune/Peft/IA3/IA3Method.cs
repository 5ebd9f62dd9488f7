using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>(IA)^3: PEFT's <c>IA3</c>.</summary>
internal sealed class IA3Method : PeftMethod<IA3Options>
{
    // PEFT's IA3 target and feed-forward tables, plus DistilBERT (not in PEFT's: keys, values, FFN output).
    private static readonly Dictionary<string, (string[] Targets, string[] Feedforward)> Defaults = new()
    {
        ["bert"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["roberta"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["distilbert"] = (["k_lin", "v_lin", "lin2"], ["lin2"]),
        ["gpt2"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["llama"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["mistral"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen2"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    };

    public override string PeftType => "IA3";

    public override string DisplayName(MethodOptions options) => "IA3";

    public override string CatalogMethodName(MethodOptions options) => "IA3";

    public override double DefaultLearningRate => 5e-3;

    public override IReadOnlyList<string> AdapterTensorNames => ["ia3_l"];

    public override IReadOnlyCollection<string> KnownModelTypes => Defaults.Keys;

    public override MethodOptions? WithDefaultTargets(MethodOptions options, string? modelType) =>
        modelType is not null && Defaults.TryGetValue(modelType, out var d) ? options with { TargetModules = d.Targets } : null;

    public override MethodOptions Resolve(MethodOptions options, string? modelType)
    {
        var ia3 = Typed(options);
        if (ia3.FeedforwardModules is null && ia3.FeedforwardModulesPattern is null)
        {
            if (modelType is null || !Defaults.TryGetValue(modelType, out var d))
                throw new ArgumentException($"No default feedforward_modules for IA3 on model type '{modelType ?? "(unknown)"}' (defaults exist for " +
                    $"{string.Join(", ", Defaults.Keys)}): set feedforward_modules in the config.");
            ia3 = ia3 with { FeedforwardModules = d.Feedforward };
        }
        if (ia3.FeedforwardModules is { } ff && ia3.TargetModules is { } t && ff.Except(t).FirstOrDefault() is { } stray)
            throw new ArgumentException($"IA3 feedforward_modules must be a subset of target_modules: '{stray}' is not a target ({string.Join(", ", t)}).");
        return ia3;
    }

    public override AdaptedLinear CreateLayer(MethodOptions options, string path, BaseLinear baseLinear, ScalarType adapterDType)
    {
        var ia3 = Typed(options);
        return new IA3Linear(baseLinear, IsFeedforward(ia3, path), ia3.InitIA3Weights, adapterDType);
    }

    /// <summary>PEFT's feed-forward test for IA3: the name ends with an entry (no dot required), or the pattern
    /// matches the whole name.</summary>
    public static bool IsFeedforward(IA3Options options, string key) =>
        options.FeedforwardModulesPattern is { } pattern
            ? ModuleMatcher.FullMatch(pattern, key)
            : (options.FeedforwardModules ?? []).Any(f => key.EndsWith(f, StringComparison.Ordinal));

    public override void WriteJson(MethodOptions options, JsonObject o)
    {
        var ia3 = Typed(options);
        o["auto_mapping"] = null;
        o["peft_version"] = PeftConfigJson.PeftFormatVersion;
        o["fan_in_fan_out"] = ia3.FanInFanOut;
        o["feedforward_modules"] = ia3.FeedforwardModulesPattern is { } fp ? fp : PeftConfigJson.StringList(ia3.FeedforwardModules);
        o["init_ia3_weights"] = ia3.InitIA3Weights;
    }

    // Keys a file omits get PEFT's IA3Config defaults: feedforward_modules none, init_ia3_weights true.
    public override MethodOptions ReadJson(PeftConfigJson.Reader r)
    {
        var (ffList, ffPattern) = r.NamesOrPattern("feedforward_modules");
        return new IA3Options { FeedforwardModules = ffList, FeedforwardModulesPattern = ffPattern, InitIA3Weights = r.Bool("init_ia3_weights", true) };
    }
}
