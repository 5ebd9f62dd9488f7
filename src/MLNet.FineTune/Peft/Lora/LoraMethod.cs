using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>LoRA and its variants (rsLoRA, DoRA, PiSSA and Gaussian initialisation, LoRA+): PEFT's
/// <c>LORA</c>.</summary>
internal sealed class LoraMethod : PeftMethod<LoraOptions>
{
    // PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, plus DistilBERT (not in PEFT's table: the same two
    // projections under DistilBERT's names).
    private static readonly Dictionary<string, string[]> DefaultTargets = new()
    {
        ["bert"] = ["query", "value"],
        ["roberta"] = ["query", "value"],
        ["distilbert"] = ["q_lin", "v_lin"],
        ["gpt2"] = ["c_attn"],
        ["llama"] = ["q_proj", "v_proj"],
        ["mistral"] = ["q_proj", "v_proj"],
        ["qwen2"] = ["q_proj", "v_proj"],
    };

    // LoRA fields this library does not implement: reading a file that sets one to anything but its default fails
    // with the field's name, rather than computing something else than PEFT would.
    private static readonly string[] UnsupportedFields =
    [
        "alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "kasa_config", "layer_replication",
        "lora_ga_config", "megatron_config", "monteclora_config", "target_parameters", "trainable_token_indices",
        "use_bdlora", "velora_config",
    ];

    public override string PeftType => "LORA";

    public override string DisplayName(MethodOptions options) =>
        (options is QLoraOptions ? "Q" : "") + (Typed(options).UseDora ? "DoRA" : "LoRA");

    public override string CatalogMethodName(MethodOptions options) =>
        options is QLoraOptions ? "QLora" : Typed(options).UseDora ? "Dora" : "Lora";

    public override double DefaultLearningRate => 1e-3;

    public override IReadOnlyList<string> AdapterTensorNames => ["lora_A.weight", "lora_B.weight", "lora_magnitude_vector"];

    public override IReadOnlyCollection<string> KnownModelTypes => DefaultTargets.Keys;

    public override void Validate(MethodOptions options)
    {
        var o = Typed(options);
        string type = o.GetType().Name;
        if (o.Rank < 1)
            throw new ArgumentOutOfRangeException(nameof(LoraOptions.Rank), o.Rank, $"{type}.Rank (r) must be at least 1.");
        if (!double.IsFinite(o.Alpha))
            throw new ArgumentOutOfRangeException(nameof(LoraOptions.Alpha), o.Alpha, $"{type}.Alpha (lora_alpha) must be a finite number.");
        if (!(o.Dropout is >= 0 and < 1))
            throw new ArgumentOutOfRangeException(nameof(LoraOptions.Dropout), o.Dropout, $"{type}.Dropout must be in [0, 1).");
        if (!(o.LoraPlusLearningRateRatio >= 1) || !double.IsFinite(o.LoraPlusLearningRateRatio))
            throw new ArgumentOutOfRangeException(nameof(LoraOptions.LoraPlusLearningRateRatio), o.LoraPlusLearningRateRatio,
                $"{type}.LoraPlusLearningRateRatio must be at least 1 (1 disables LoRA+).");
        if (o.RankPattern?.FirstOrDefault(p => p.Value < 1) is { Key: not null } badRank)
            throw new ArgumentOutOfRangeException(nameof(LoraOptions.RankPattern), badRank.Value, $"{type}.RankPattern['{badRank.Key}'] must be at least 1.");
        if (o is QLoraOptions q)
        {
            if (q.Quantization is null) throw new ArgumentNullException(nameof(QLoraOptions.Quantization), "QLoraOptions.Quantization must be set (new FourBitQuantization() for NF4 with double quantization).");
            q.Quantization.Validate();
        }
    }

    // QLoRA: the base's linear layers (not the head, lm_head or modules to save) become 4-bit before injection.
    public override void PrepareBase(nn.Module model, MethodOptions options, Action<string>? log)
    {
        if (options is not QLoraOptions q) return;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var layers = BaseQuantizer.Quantize(model, q.Quantization, q.ModulesToSave);
        log?.Invoke($"QLoRA: {layers.Count} linear layers quantized to {q.Quantization.QuantType} (block {q.Quantization.BlockSize}" +
            $"{(q.Quantization.DoubleQuantization ? ", double quantization" : "")}) in {clock.Elapsed.TotalSeconds:F1} s. Base weights:{Environment.NewLine}{WeightMemory.Measure(model)}");
    }

    // model.zip records the quantization under transformers' quantization_config keys (BitsAndBytesConfig), so loading
    // quantizes the base the same way; adapter files stay plain LoRA.
    public override void WriteModelJson(MethodOptions options, JsonObject json)
    {
        if (options is not QLoraOptions q) return;
        json["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "bitsandbytes",
            ["load_in_4bit"] = true,
            ["bnb_4bit_quant_type"] = q.Quantization.QuantType.ToString().ToLowerInvariant(),
            ["bnb_4bit_use_double_quant"] = q.Quantization.DoubleQuantization,
            ["bnb_4bit_quant_storage"] = "uint8",
            ["blocksize"] = q.Quantization.BlockSize,
        };
    }

    public override MethodOptions ReadModelJson(PeftConfigJson.Reader json, MethodOptions options)
    {
        if (json.Json["quantization_config"] is not JsonObject config) return options;
        var source = $"{json.Source} quantization_config";
        var reader = new PeftConfigJson.Reader(config, source);
        if (!reader.Bool("load_in_4bit", false)) throw new NotSupportedException($"{source}: only load_in_4bit quantization is implemented.");
        var quantization = new FourBitQuantization
        {
            QuantType = reader.String("bnb_4bit_quant_type") switch
            {
                null or "nf4" => FourBitType.NF4,
                "fp4" => FourBitType.FP4,
                var other => throw new InvalidDataException($"{source}: bnb_4bit_quant_type \"{other}\"; expected nf4 or fp4."),
            },
            DoubleQuantization = reader.Bool("bnb_4bit_use_double_quant", false),
            BlockSize = reader.Int("blocksize", 64),
        };
        var lora = Typed(options);
        return new QLoraOptions
        {
            Rank = lora.Rank, Alpha = lora.Alpha, Dropout = lora.Dropout, UseRsLora = lora.UseRsLora, UseDora = lora.UseDora,
            Initialization = lora.Initialization, Bias = lora.Bias, RankPattern = lora.RankPattern, AlphaPattern = lora.AlphaPattern,
            LoraPlusLearningRateRatio = lora.LoraPlusLearningRateRatio, Quantization = quantization,
        };
    }

    public override MethodOptions? WithDefaultTargets(MethodOptions options, string? modelType) =>
        modelType is not null && DefaultTargets.TryGetValue(modelType, out var targets) ? options with { TargetModules = targets } : null;

    public override AdaptedLinear CreateLayer(MethodOptions options, string path, BaseLinear baseLinear, ScalarType adapterDType)
    {
        var o = Typed(options);
        return new LoraLinear(baseLinear,
            rank: PatternValue(o.RankPattern, path) ?? o.Rank,
            alpha: PatternValue(o.AlphaPattern, path) ?? o.Alpha,
            dropout: o.Dropout, useRsLora: o.UseRsLora, useDora: o.UseDora, init: o.Initialization, adapterDType: adapterDType);
    }

    // PEFT's get_pattern_key: the first key that matches the end of the module name (as a name or a regex).
    private static T? PatternValue<T>(IReadOnlyDictionary<string, T>? patterns, string path) where T : struct
    {
        if (patterns is null) return null;
        foreach (var (key, value) in patterns)
            if (Regex.IsMatch(path, $@"^(.*\.)?({key})\z")) return value;
        return null;
    }

    public override IEnumerable<Tensor> ExtraTrainable(nn.Module model, MethodOptions options, IReadOnlyDictionary<string, AdaptedLinear> layers) =>
        Typed(options).Bias switch
        {
            PeftBias.All => model.named_parameters().Where(p => IsBias(p.name)).Select(p => (Tensor)p.parameter),
            PeftBias.LoraOnly => layers.Values.Where(l => l.Bias is not null).Select(l => (Tensor)l.Bias!),
            _ => [],
        };

    public override IEnumerable<(string Name, Tensor Tensor)> ExtraAdapterState(nn.Module model, MethodOptions options,
        IReadOnlyDictionary<string, AdaptedLinear> layers)
    {
        var bias = Typed(options).Bias;
        if (bias == PeftBias.None) yield break;
        foreach (var (path, layer) in layers)
            if (layer.Bias is { } b) yield return (path + ".base_layer.bias", b);
        if (bias == PeftBias.All)
            foreach (var (name, p) in model.named_parameters())
            {
                var owner = name.Contains('.') ? name[..name.LastIndexOf('.')] : "";
                if (IsBias(name) && !layers.ContainsKey(owner)) yield return (name, p);
            }
    }

    private static bool IsBias(string name) => name == "bias" || name.EndsWith(".bias", StringComparison.Ordinal);

    // PiSSA's initialisation rewrites the base weights; the shapes do not depend on it, so the default stands in.
    public override MethodOptions ForShapeCheck(MethodOptions options) =>
        Typed(options) is { Initialization: LoraInit.PiSSA } pissa ? pissa with { Initialization = LoraInit.Default } : options;

    public override bool RewritesBaseWeights(MethodOptions options) => Typed(options).Initialization == LoraInit.PiSSA;

    public override IReadOnlyList<ParameterGroup> ParameterGroups(PeftModel model, MethodOptions options) =>
        model.ParameterGroups(options is LoraOptions lora ? lora.LoraPlusLearningRateRatio : 1.0);

    public override void WriteJson(MethodOptions options, JsonObject o)
    {
        var lora = Typed(options);
        o["auto_mapping"] = null;
        o["peft_version"] = PeftConfigJson.PeftFormatVersion;
        o["alpha_pattern"] = new JsonObject((lora.AlphaPattern ?? new Dictionary<string, double>())
            .Select(p => KeyValuePair.Create(p.Key, (JsonNode?)PeftConfigJson.Number(p.Value))));
        o["bias"] = lora.Bias switch { PeftBias.All => "all", PeftBias.LoraOnly => "lora_only", _ => "none" };
        o["ensure_weight_tying"] = false;
        o["fan_in_fan_out"] = lora.FanInFanOut;
        o["init_lora_weights"] = lora.Initialization switch
        {
            LoraInit.Default => JsonValue.Create(true),
            LoraInit.Random => JsonValue.Create(false),
            LoraInit.Gaussian => JsonValue.Create("gaussian"),
            LoraInit.PiSSA => JsonValue.Create("pissa"),
            _ => throw new ArgumentOutOfRangeException(nameof(options), lora.Initialization, "Unknown LoRA initialisation."),
        };
        o["layers_pattern"] = PeftConfigJson.StringList(lora.LayersPattern);
        o["layers_to_transform"] = PeftConfigJson.IntList(lora.LayersToTransform);
        o["loftq_config"] = new JsonObject();
        o["lora_alpha"] = PeftConfigJson.Number(lora.Alpha);
        o["lora_bias"] = false;
        o["lora_dropout"] = lora.Dropout;
        o["megatron_core"] = "megatron.core";
        o["qalora_group_size"] = 16;
        o["r"] = lora.Rank;
        o["rank_pattern"] = new JsonObject((lora.RankPattern ?? new Dictionary<string, int>())
            .Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value))));
        o["use_dora"] = lora.UseDora;
        o["use_qalora"] = false;
        o["use_rslora"] = lora.UseRsLora;
        foreach (var f in UnsupportedFields) o[f] = null;
    }

    // Keys a file omits get PEFT's LoraConfig defaults: r 8, lora_alpha 8, lora_dropout 0, bias "none".
    public override MethodOptions ReadJson(PeftConfigJson.Reader r)
    {
        foreach (var f in UnsupportedFields)
            if (r.Json[f] is { } node && !IsEmpty(node))
                throw new NotSupportedException($"{r.Source}: '{f}' = {node.ToJsonString()} is a LoRA option this library does not implement.");
        if (r.Bool("lora_bias", false)) throw new NotSupportedException($"{r.Source}: 'lora_bias' = true is a LoRA option this library does not implement.");
        if (r.Bool("use_qalora", false)) throw new NotSupportedException($"{r.Source}: 'use_qalora' = true is a LoRA option this library does not implement.");
        bool useDora = r.Bool("use_dora", false);
        LoraOptions lora = useDora ? new DoraOptions() : new LoraOptions();
        return lora with
        {
            Rank = r.Int("r", 8),
            Alpha = r.Double("lora_alpha", 8),
            Dropout = r.Double("lora_dropout", 0),
            UseRsLora = r.Bool("use_rslora", false),
            UseDora = useDora,
            Initialization = ReadInit(r.Json["init_lora_weights"], r.Source),
            Bias = r.String("bias") switch
            {
                null or "none" => PeftBias.None,
                "all" => PeftBias.All,
                "lora_only" => PeftBias.LoraOnly,
                var other => throw new InvalidDataException($"{r.Source}: 'bias' = \"{other}\"; expected none, all or lora_only."),
            },
            RankPattern = r.Map("rank_pattern", n => n.GetValue<int>()),
            AlphaPattern = r.Map("alpha_pattern", n => n.GetValue<double>()),
        };
    }

    private static LoraInit ReadInit(JsonNode? node, string source)
    {
        if (node is null) return LoraInit.Default;
        if (node.GetValueKind() is JsonValueKind.True) return LoraInit.Default;
        if (node.GetValueKind() is JsonValueKind.False) return LoraInit.Random;
        if (node.GetValueKind() is JsonValueKind.String)
            switch (node.GetValue<string>().ToLowerInvariant())
            {
                case "gaussian": return LoraInit.Gaussian;
                case "pissa": return LoraInit.PiSSA;
            }
        throw new NotSupportedException($"{source}: 'init_lora_weights' = {node.ToJsonString()}; this library implements true, false, \"gaussian\" and \"pissa\".");
    }

    private static bool IsEmpty(JsonNode node) => node switch
    {
        JsonArray a => a.Count == 0,
        JsonObject ob => ob.Count == 0,
        JsonValue v => v.GetValueKind() is JsonValueKind.Null or JsonValueKind.False,
        _ => false,
    };
}
