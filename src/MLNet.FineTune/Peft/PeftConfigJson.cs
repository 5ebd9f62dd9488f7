using System.Text.Json;
using System.Text.Json.Nodes;

namespace MLNet.FineTune.Peft;

/// <summary>
/// Reads and writes <c>adapter_config.json</c>: PEFT's fields for LoRA (incl. rsLoRA, DoRA) and IA3, so PEFT reads
/// what this library writes and the other way round; this library's own fields for bottleneck adapters
/// (docs/methods.md, section Adapters).
/// </summary>
public static class PeftConfigJson
{
    /// <summary>The file name PEFT uses.</summary>
    public const string FileName = "adapter_config.json";

    /// <summary>The PEFT release whose adapter format the writer reproduces field for field (its files are the
    /// test fixtures); PEFT reads the value as the writer's version.</summary>
    public const string PeftFormatVersion = "0.21.0";

    /// <summary>The bottleneck format's version (this library's format).</summary>
    public const int BottleneckFormatVersion = 1;

    // LoRA fields this library does not implement: reading a file that sets one to anything but its default fails
    // with the field's name, rather than computing something else than PEFT would.
    private static readonly string[] UnsupportedLoraFields =
    [
        "alora_invocation_tokens", "arrow_config", "corda_config", "eva_config", "kasa_config", "layer_replication",
        "lora_ga_config", "megatron_config", "monteclora_config", "target_parameters", "trainable_token_indices",
        "use_bdlora", "velora_config",
    ];

    /// <summary>Serialises a config as PEFT would (keys sorted, two-space indent).</summary>
    /// <exception cref="NotSupportedException">Full fine-tuning has no adapter file.</exception>
    public static string Write(PeftConfig config) => Write(config, fullFineTune: false);

    /// <summary>Serialises the method of a model saved whole (model.zip): an adapter's config as <see cref="Write(PeftConfig)"/>
    /// writes it, or for full fine-tuning the common fields with peft_type "FULL" (no PEFT file, so this library's own).</summary>
    internal static string WriteModelMethod(PeftConfig config) => Write(config, fullFineTune: true);

    private static string Write(PeftConfig config, bool fullFineTune)
    {
        var o = new JsonObject
        {
            ["base_model_name_or_path"] = config.BaseModelNameOrPath,
            ["exclude_modules"] = config.ExcludeModulesPattern is { } ex ? ex : StringList(config.ExcludeModules),
            ["inference_mode"] = config.InferenceMode,
            ["modules_to_save"] = StringList(config.ModulesToSave),
            ["peft_type"] = config.PeftType,
            ["revision"] = config.Revision,
            ["target_modules"] = config.TargetModulesPattern is { } tp ? tp : StringList(config.TargetModules),
            ["task_type"] = config.TaskType,
        };
        switch (config)
        {
            case LoraConfig lora:
                o["auto_mapping"] = null;
                o["peft_version"] = PeftFormatVersion;
                o["alpha_pattern"] = new JsonObject((lora.AlphaPattern ?? new Dictionary<string, double>()).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)Number(p.Value))));
                o["bias"] = lora.Bias switch { PeftBias.All => "all", PeftBias.LoraOnly => "lora_only", _ => "none" };
                o["ensure_weight_tying"] = false;
                o["fan_in_fan_out"] = lora.FanInFanOut;
                o["init_lora_weights"] = lora.Init switch
                {
                    LoraInit.Default => JsonValue.Create(true),
                    LoraInit.Random => JsonValue.Create(false),
                    LoraInit.Gaussian => JsonValue.Create("gaussian"),
                    LoraInit.PiSSA => JsonValue.Create("pissa"),
                    _ => throw new ArgumentOutOfRangeException(nameof(config), lora.Init, "Unknown LoRA initialisation."),
                };
                o["layers_pattern"] = StringList(lora.LayersPattern);
                o["layers_to_transform"] = lora.LayersToTransform is { } l ? new JsonArray(l.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray()) : null;
                o["loftq_config"] = new JsonObject();
                o["lora_alpha"] = Number(lora.Alpha);
                o["lora_bias"] = false;
                o["lora_dropout"] = lora.Dropout;
                o["megatron_core"] = "megatron.core";
                o["qalora_group_size"] = 16;
                o["r"] = lora.Rank;
                o["rank_pattern"] = new JsonObject((lora.RankPattern ?? new Dictionary<string, int>()).Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value))));
                o["use_dora"] = lora.UseDora;
                o["use_qalora"] = false;
                o["use_rslora"] = lora.UseRsLora;
                foreach (var f in UnsupportedLoraFields) o[f] = null;
                break;
            case IA3Config ia3:
                o["auto_mapping"] = null;
                o["peft_version"] = PeftFormatVersion;
                o["fan_in_fan_out"] = ia3.FanInFanOut;
                o["feedforward_modules"] = ia3.FeedforwardModulesPattern is { } fp ? fp : StringList(ia3.FeedforwardModules);
                o["init_ia3_weights"] = ia3.InitIA3Weights;
                break;
            case BottleneckConfig b:
                o["format_version"] = BottleneckFormatVersion;
                o["adapter_kind"] = b.Kind == BottleneckKind.Houlsby ? "houlsby" : "pfeiffer";
                o["reduction_factor"] = b.ReductionFactor;
                o["non_linearity"] = b.NonLinearity;
                o["scaling"] = b.Scaling;
                o["fan_in_fan_out"] = b.FanInFanOut;
                o["layers_pattern"] = StringList(b.LayersPattern);
                o["layers_to_transform"] = b.LayersToTransform is { } bl ? new JsonArray(bl.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray()) : null;
                break;
            case FullFineTuneConfig when fullFineTune:
                break;
            default:
                throw new NotSupportedException($"{config.PeftType} has no adapter file: full fine-tuning changes every weight, so save the model's state dict instead.");
        }
        var sorted = new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, p.Value?.DeepClone())));
        return sorted.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads <c>adapter_config.json</c> from a folder (or the file itself).</summary>
    /// <exception cref="FileNotFoundException">No config.</exception>
    /// <exception cref="InvalidDataException">Malformed JSON, a missing or ill-typed field (named).</exception>
    /// <exception cref="NotSupportedException">A PEFT method or option this library does not implement (named).</exception>
    public static PeftConfig Read(string folderOrFile)
    {
        var path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, FileName) : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"Adapter config not found: {path}. A PEFT adapter folder holds {FileName} and adapter_model.safetensors.", path);
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e); }
        return Parse(o, path);
    }

    /// <summary>Parses config JSON (<paramref name="source"/> names it in errors).</summary>
    public static PeftConfig Parse(JsonObject o, string source) => Parse(o, source, fullFineTune: false);

    /// <summary>Parses what <see cref="WriteModelMethod"/> wrote.</summary>
    internal static PeftConfig ParseModelMethod(JsonObject o, string source) => Parse(o, source, fullFineTune: true);

    private static PeftConfig Parse(JsonObject o, string source, bool fullFineTune)
    {
        var r = new Reader(o, source);
        var peftType = r.String("peft_type") ?? throw new InvalidDataException($"{source} has no 'peft_type'.");
        PeftConfig config;
        switch (peftType)
        {
            case "LORA":
                foreach (var f in UnsupportedLoraFields)
                    if (o[f] is { } node && !IsEmpty(node))
                        throw new NotSupportedException($"{source}: '{f}' = {node.ToJsonString()} is a LoRA option this library does not implement.");
                if (r.Bool("lora_bias", false)) throw new NotSupportedException($"{source}: 'lora_bias' = true is a LoRA option this library does not implement.");
                if (r.Bool("use_qalora", false)) throw new NotSupportedException($"{source}: 'use_qalora' = true is a LoRA option this library does not implement.");
                config = new LoraConfig
                {
                    Rank = r.Int("r", 8),
                    Alpha = r.Double("lora_alpha", 8),
                    Dropout = r.Double("lora_dropout", 0),
                    UseRsLora = r.Bool("use_rslora", false),
                    UseDora = r.Bool("use_dora", false),
                    Init = ReadInit(o["init_lora_weights"], source),
                    Bias = r.String("bias") switch
                    {
                        null or "none" => PeftBias.None,
                        "all" => PeftBias.All,
                        "lora_only" => PeftBias.LoraOnly,
                        var other => throw new InvalidDataException($"{source}: 'bias' = \"{other}\"; expected none, all or lora_only."),
                    },
                    RankPattern = r.Map("rank_pattern", n => n.GetValue<int>()),
                    AlphaPattern = r.Map("alpha_pattern", n => n.GetValue<double>()),
                };
                break;
            case "IA3":
                var (ffList, ffPattern) = r.NamesOrPattern("feedforward_modules");
                config = new IA3Config { FeedforwardModules = ffList, FeedforwardModulesPattern = ffPattern, InitIA3Weights = r.Bool("init_ia3_weights", true) };
                break;
            case "BOTTLENECK":
                int version = r.Int("format_version", BottleneckFormatVersion);
                if (version > BottleneckFormatVersion)
                    throw new NotSupportedException($"{source}: bottleneck format_version {version} is newer than this library's ({BottleneckFormatVersion}).");
                config = new BottleneckConfig
                {
                    Kind = r.String("adapter_kind") switch
                    {
                        null or "houlsby" => BottleneckKind.Houlsby,
                        "pfeiffer" => BottleneckKind.Pfeiffer,
                        var other => throw new InvalidDataException($"{source}: 'adapter_kind' = \"{other}\"; expected houlsby or pfeiffer."),
                    },
                    ReductionFactor = r.Int("reduction_factor", 16),
                    NonLinearity = r.String("non_linearity") ?? "relu",
                    Scaling = r.Double("scaling", 1.0),
                };
                break;
            case "FULL" when fullFineTune:
                config = new FullFineTuneConfig();
                break;
            case "FULL":
                throw new NotSupportedException($"{source}: peft_type 'FULL' is a fully fine-tuned model, which has no adapter file; such a model is saved whole, in model.zip.");
            default:
                throw new NotSupportedException($"{source}: peft_type '{peftType}' is not supported; this library reads LORA (incl. rsLoRA, DoRA), IA3 and its own BOTTLENECK adapters.");
        }
        var (targets, targetPattern) = r.NamesOrPattern("target_modules");
        var (exclude, excludePattern) = r.NamesOrPattern("exclude_modules");
        return config with
        {
            TargetModules = targets,
            TargetModulesPattern = targetPattern,
            ExcludeModules = exclude,
            ExcludeModulesPattern = excludePattern,
            LayersToTransform = r.IntOrList("layers_to_transform"),
            LayersPattern = r.NamesOrPattern("layers_pattern") switch { (var l, null) => l, (_, { } one) => [one] },
            ModulesToSave = r.NamesOrPattern("modules_to_save").List,
            TaskType = r.String("task_type"),
            BaseModelNameOrPath = r.String("base_model_name_or_path"),
            Revision = r.String("revision"),
            InferenceMode = r.Bool("inference_mode", false),
            FanInFanOut = r.Bool("fan_in_fan_out", false),
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

    private static JsonNode? StringList(IReadOnlyList<string>? names) =>
        names is null ? null : new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray());

    // Whole numbers as integers (PEFT writes lora_alpha as an int).
    private static JsonNode Number(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < int.MaxValue ? JsonValue.Create((int)value) : JsonValue.Create(value);

    private sealed class Reader(JsonObject o, string source)
    {
        public string? String(string key) => Get(key, n => n.GetValue<string>());
        public bool Bool(string key, bool fallback) => Get(key, n => (bool?)n.GetValue<bool>()) ?? fallback;
        public int Int(string key, int fallback) => Get(key, n => (int?)n.GetValue<int>()) ?? fallback;
        public double Double(string key, double fallback) => Get(key, n => (double?)n.GetValue<double>()) ?? fallback;

        public (IReadOnlyList<string>? List, string? Pattern) NamesOrPattern(string key) => o[key] switch
        {
            null => (null, null),
            JsonArray a => (Get(key, _ => a.Select(n => n!.GetValue<string>()).ToList()), null),
            JsonValue v when v.GetValueKind() == JsonValueKind.String => (null, v.GetValue<string>()),
            var other => throw new InvalidDataException($"{source}: '{key}' = {other.ToJsonString()}; expected a list of names or one regular expression."),
        };

        public IReadOnlyList<int>? IntOrList(string key) => o[key] switch
        {
            null => null,
            JsonArray a => Get(key, _ => a.Select(n => n!.GetValue<int>()).ToList()),
            JsonValue v => Get(key, _ => new List<int> { v.GetValue<int>() }),
            var other => throw new InvalidDataException($"{source}: '{key}' = {other.ToJsonString()}; expected an integer or a list of integers."),
        };

        public IReadOnlyDictionary<string, T>? Map<T>(string key, Func<JsonNode, T> read) => o[key] switch
        {
            null => null,
            JsonObject m when m.Count == 0 => null,
            JsonObject m => Get(key, _ => m.ToDictionary(p => p.Key, p => read(p.Value!))),
            var other => throw new InvalidDataException($"{source}: '{key}' = {other.ToJsonString()}; expected an object."),
        };

        private T? Get<T>(string key, Func<JsonNode, T> read)
        {
            var node = o[key];
            if (node is null) return default;
            try { return read(node); }
            catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
            {
                throw new InvalidDataException($"{source}: '{key}' has the value {node.ToJsonString()}, which is not a {(Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T)).Name}.", e);
            }
        }
    }
}
