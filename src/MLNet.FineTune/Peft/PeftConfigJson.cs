using System.Text.Json;
using System.Text.Json.Nodes;

namespace MLNet.FineTune.Peft;

/// <summary>
/// Reads and writes <c>adapter_config.json</c>: the fields every method shares here, each method's own through its
/// <see cref="PeftMethod"/> (PEFT's fields for LoRA, incl. rsLoRA and DoRA, and IA3, so PEFT reads what this library
/// writes and the other way round; this library's own for bottleneck adapters, docs/methods.md).
/// </summary>
public static class PeftConfigJson
{
    /// <summary>The file name PEFT uses.</summary>
    public const string FileName = "adapter_config.json";

    /// <summary>The PEFT release whose adapter format the writer reproduces field for field (its files are the
    /// test fixtures); PEFT reads the value as the writer's version.</summary>
    public const string PeftFormatVersion = "0.21.0";

    /// <summary>The bottleneck format's version (this library's format).</summary>
    public const int BottleneckFormatVersion = BottleneckMethod.FormatVersion;

    /// <summary>Serialises a method's options as PEFT would (keys sorted, two-space indent).</summary>
    /// <exception cref="NotSupportedException">Full fine-tuning has no adapter file.</exception>
    public static string Write(MethodOptions config) => Write(config, fullFineTune: false);

    /// <summary>Serialises the method of a model saved whole (model.zip): an adapter's config as <see cref="Write(MethodOptions)"/>
    /// writes it, or for full fine-tuning the common fields with peft_type "FULL" (no PEFT file, so this library's own).</summary>
    internal static string WriteModelMethod(MethodOptions config) => Write(config, fullFineTune: true);

    private static string Write(MethodOptions config, bool fullFineTune)
    {
        var method = PeftMethods.For(config);
        if (!method.InjectsAdapters && !fullFineTune)
            throw new NotSupportedException($"{method.PeftType} has no adapter file: full fine-tuning changes every weight, so save the model's state dict instead.");
        var o = new JsonObject
        {
            ["base_model_name_or_path"] = config.BaseModelNameOrPath,
            ["exclude_modules"] = config.ExcludeModulesPattern is { } ex ? ex : StringList(config.ExcludeModules),
            ["inference_mode"] = config.InferenceMode,
            ["modules_to_save"] = StringList(config.ModulesToSave),
            ["peft_type"] = method.PeftType,
            ["revision"] = config.Revision,
            ["target_modules"] = config.TargetModulesPattern is { } tp ? tp : StringList(config.TargetModules),
            ["task_type"] = config.TaskType,
        };
        method.WriteJson(config, o);
        if (fullFineTune) method.WriteModelJson(config, o);
        var sorted = new JsonObject(o.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => KeyValuePair.Create(p.Key, p.Value?.DeepClone())));
        return sorted.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads <c>adapter_config.json</c> from a folder (or the file itself).</summary>
    /// <exception cref="FileNotFoundException">No config.</exception>
    /// <exception cref="InvalidDataException">Malformed JSON, a missing or ill-typed field (named).</exception>
    /// <exception cref="NotSupportedException">A PEFT method or option this library does not implement (named).</exception>
    public static MethodOptions Read(string folderOrFile)
    {
        var path = Directory.Exists(folderOrFile) ? Path.Combine(folderOrFile, FileName) : folderOrFile;
        if (!File.Exists(path)) throw new FileNotFoundException($"Adapter config not found: {path}. A PEFT adapter folder holds {FileName} and adapter_model.safetensors.", path);
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e); }
        return Parse(o, path);
    }

    /// <summary>Parses config JSON (<paramref name="source"/> names it in errors).</summary>
    public static MethodOptions Parse(JsonObject o, string source) => Parse(o, source, fullFineTune: false);

    /// <summary>Parses what <see cref="WriteModelMethod"/> wrote.</summary>
    internal static MethodOptions ParseModelMethod(JsonObject o, string source) => Parse(o, source, fullFineTune: true);

    private static MethodOptions Parse(JsonObject o, string source, bool fullFineTune)
    {
        var r = new Reader(o, source);
        var peftType = r.String("peft_type") ?? throw new InvalidDataException($"{source} has no 'peft_type'.");
        var method = PeftMethods.ForPeftType(peftType)
            ?? throw new NotSupportedException($"{source}: peft_type '{peftType}' is not supported; this library reads " +
                $"{string.Join(", ", PeftMethods.All.Where(m => m.InjectsAdapters).Select(m => m.PeftType))} adapters (LORA incl. rsLoRA and DoRA).");
        if (!method.InjectsAdapters && !fullFineTune)
            throw new NotSupportedException($"{source}: peft_type '{peftType}' is a fully fine-tuned model, which has no adapter file; such a model is saved whole, in model.zip.");
        var config = method.ReadJson(r);
        if (fullFineTune) config = method.ReadModelJson(r, config);
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

    internal static JsonNode? StringList(IReadOnlyList<string>? names) =>
        names is null ? null : new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray());

    internal static JsonNode? IntList(IReadOnlyList<int>? values) =>
        values is null ? null : new JsonArray(values.Select(i => (JsonNode?)JsonValue.Create(i)).ToArray());

    // Whole numbers as integers (PEFT writes lora_alpha as an int).
    internal static JsonNode Number(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < int.MaxValue ? JsonValue.Create((int)value) : JsonValue.Create(value);

    /// <summary>Typed access to a config's keys; errors name the file and the key.</summary>
    internal sealed class Reader(JsonObject o, string source)
    {
        /// <summary>The whole object.</summary>
        public JsonObject Json => o;

        /// <summary>Names the file in errors.</summary>
        public string Source => source;

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
