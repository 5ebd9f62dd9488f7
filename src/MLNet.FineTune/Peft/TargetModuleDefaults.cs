namespace MLNet.FineTune.Peft;

/// <summary>
/// Default target modules per model family (<c>model_type</c>), as PEFT's tables have them
/// (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING and the IA3 pair), plus this library's choices where PEFT has
/// no entry (DistilBERT; bottleneck adapters).
/// </summary>
public static class TargetModuleDefaults
{
    private static readonly Dictionary<string, string[]> Lora = new()
    {
        ["bert"] = ["query", "value"],
        ["roberta"] = ["query", "value"],
        ["distilbert"] = ["q_lin", "v_lin"],          // not in PEFT's table: the same two projections, DistilBERT's names
        ["gpt2"] = ["c_attn"],
        ["llama"] = ["q_proj", "v_proj"],
        ["mistral"] = ["q_proj", "v_proj"],
        ["qwen2"] = ["q_proj", "v_proj"],
    };

    private static readonly Dictionary<string, (string[] Targets, string[] Feedforward)> IA3 = new()
    {
        ["bert"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["roberta"] = (["key", "value", "output.dense"], ["output.dense"]),
        ["distilbert"] = (["k_lin", "v_lin", "lin2"], ["lin2"]),   // not in PEFT's table: keys, values, FFN output
        ["gpt2"] = (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
        ["llama"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["mistral"] = (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
        ["qwen2"] = (["q_proj", "v_proj", "down_proj"], ["down_proj"]),
    };

    // Regular expressions (full match) for the output projections of attention and feed-forward sub-layers.
    private static readonly Dictionary<string, (string Houlsby, string Pfeiffer)> Bottleneck = new()
    {
        ["bert"] = (@"(.*\.)?layer\.\d+\.(attention\.)?output\.dense", @"(.*\.)?layer\.\d+\.output\.dense"),
        ["roberta"] = (@"(.*\.)?layer\.\d+\.(attention\.)?output\.dense", @"(.*\.)?layer\.\d+\.output\.dense"),
        ["distilbert"] = (@"(.*\.)?layer\.\d+\.(attention\.out_lin|ffn\.lin2)", @"(.*\.)?layer\.\d+\.ffn\.lin2"),
        ["gpt2"] = (@"(.*\.)?h\.\d+\.(attn|mlp)\.c_proj", @"(.*\.)?h\.\d+\.mlp\.c_proj"),
        ["llama"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
        ["mistral"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
        ["qwen2"] = (@"(.*\.)?layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)", @"(.*\.)?layers\.\d+\.mlp\.down_proj"),
    };

    /// <summary>The model types that have defaults.</summary>
    public static IReadOnlyCollection<string> KnownModelTypes => Lora.Keys;

    /// <summary>LoRA's default targets for a family, or null.</summary>
    public static IReadOnlyList<string>? LoraTargets(string? modelType) =>
        modelType is not null && Lora.TryGetValue(modelType, out var t) ? t : null;

    /// <summary>IA3's default targets and feed-forward modules for a family, or null.</summary>
    public static (IReadOnlyList<string> Targets, IReadOnlyList<string> Feedforward)? IA3Targets(string? modelType) =>
        modelType is not null && IA3.TryGetValue(modelType, out var t) ? (t.Targets, t.Feedforward) : null;

    /// <summary>The bottleneck adapter's default target pattern for a family, or null.</summary>
    public static string? BottleneckPattern(string? modelType, BottleneckKind kind) =>
        modelType is not null && Bottleneck.TryGetValue(modelType, out var t) ? (kind == BottleneckKind.Houlsby ? t.Houlsby : t.Pfeiffer) : null;
}
