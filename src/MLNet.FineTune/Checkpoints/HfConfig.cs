using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace MLNet.FineTune.Checkpoints;

/// <summary>
/// A Hugging Face <c>config.json</c>, read as JSON with typed accessors whose errors name the file and the key.
/// Model families build their own config records from it (transformers 4 and 5 spellings alike).
/// </summary>
internal sealed class HfConfig
{
    private readonly JsonObject _root;

    /// <summary>The file this config came from (for error messages).</summary>
    public string Path { get; }

    private HfConfig(JsonObject root, string path) { _root = root; Path = path; }

    /// <summary>Reads <c>config.json</c> from a model folder (or the file itself).</summary>
    public static HfConfig Load(string folderOrFile)
    {
        var path = Directory.Exists(folderOrFile) ? System.IO.Path.Combine(folderOrFile, "config.json") : folderOrFile;
        if (!File.Exists(path))
            throw new FileNotFoundException($"Model config not found: {path}. A Hugging Face model folder holds config.json, the weights (*.safetensors) and tokenizer files.", path);
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path} is not a JSON object.");
            return new HfConfig(root, path);
        }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e); }
    }

    /// <summary>Wraps JSON text (tests, embedded configs).</summary>
    public static HfConfig Parse(string json, string sourceName = "config.json") =>
        new(JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException($"{sourceName} is not a JSON object."), sourceName);

    /// <summary><c>model_type</c>, e.g. "bert", "llama"; empty when absent.</summary>
    public string ModelType => GetString("model_type", "");

    /// <summary><c>architectures</c>, e.g. ["BertForSequenceClassification"].</summary>
    public IReadOnlyList<string> Architectures =>
        _root["architectures"] is JsonArray a ? a.Select(n => n?.GetValue<string>() ?? "").ToList() : [];

    /// <summary>The raw JSON node at a key, or null.</summary>
    public JsonNode? this[string key] => _root[key];

    /// <summary>True when the key is present and not null.</summary>
    public bool Has(string key) => _root[key] is not null;

    public int GetInt(string key) => Get(key, n => n.GetValue<int>());
    public int GetInt(string key, int fallback) => Has(key) ? GetInt(key) : fallback;
    public int? GetIntOrNull(string key) => Has(key) ? GetInt(key) : null;
    public double GetDouble(string key) => Get(key, n => n.GetValue<double>());
    public double GetDouble(string key, double fallback) => Has(key) ? GetDouble(key) : fallback;
    public bool GetBool(string key, bool fallback) => Has(key) ? Get(key, n => n.GetValue<bool>()) : fallback;
    public string GetString(string key) => Get(key, n => n.GetValue<string>());
    public string GetString(string key, string fallback) => Has(key) ? GetString(key) : fallback;

    /// <summary>The first key present among spellings (e.g. transformers 4 <c>rope_theta</c> and 5 <c>rope_parameters.rope_theta</c>).</summary>
    public JsonNode? FirstOf(params string[] dottedKeys)
    {
        foreach (var key in dottedKeys)
        {
            JsonNode? node = _root;
            foreach (var part in key.Split('.')) node = node is JsonObject o ? o[part] : null;
            if (node is not null) return node;
        }
        return null;
    }

    /// <summary>
    /// Binds the config onto a record whose properties carry transformers' key names (<see cref="JsonPropertyNameAttribute"/>):
    /// absent and null keys keep the record's defaults (transformers' defaults), unknown keys are ignored.
    /// </summary>
    /// <exception cref="InvalidDataException">A <c>required</c> key is absent ("has no 'key'"), or a value has the wrong
    /// type ("'key' has value ..., not a Int32"): the same errors as the typed accessors.</exception>
    public T Bind<T>() where T : class
    {
        var present = new JsonObject();   // null values mean "use the default", as transformers' configs write them
        foreach (var (key, value) in _root)
            if (value is not null) present[key] = value.DeepClone();
        foreach (var property in typeof(T).GetProperties(BindingFlags.Public | BindingFlags.Instance))
            if (IsRequired(property) && JsonKey(property) is { } key && present[key] is null)
                throw new InvalidDataException($"{Path} has no '{key}'.");
        try
        {
            return present.Deserialize<T>() ?? throw new InvalidDataException($"{Path} is not a JSON object.");
        }
        catch (JsonException e)
        {
            var key = (e.Path ?? "$").TrimStart('$', '.');
            var property = typeof(T).GetProperties().FirstOrDefault(p => JsonKey(p) == key);
            var type = property is null ? "value of the expected type"
                : (Nullable.GetUnderlyingType(property.PropertyType) ?? property.PropertyType).Name;
            throw new InvalidDataException($"{Path}: '{key}' has value {_root[key]?.ToJsonString()}, not a {type}.", e);
        }
    }

    // C#'s `required` marks the property with RequiredMemberAttribute (matched by name: a dependency ships its own polyfill).
    private static bool IsRequired(PropertyInfo property) =>
        property.CustomAttributes.Any(a => a.AttributeType.FullName == "System.Runtime.CompilerServices.RequiredMemberAttribute");

    private static string? JsonKey(PropertyInfo property) => property.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name;

    private T Get<T>(string key, Func<JsonNode, T> read)
    {
        var node = _root[key] ?? throw new InvalidDataException($"{Path} has no '{key}'.");
        try { return read(node); }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{Path}: '{key}' has value {node.ToJsonString()}, not a {typeof(T).Name}.", e);
        }
    }

    /// <summary>The JSON text.</summary>
    public override string ToString() => _root.ToJsonString();
}
