using System.Text.Json;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// The settings files of a Hugging Face model folder that shape its tokenizer: tokenizer_config.json,
/// special_tokens_map.json (older folders) and config.json (model type, fallback special token ids). Each is optional.
/// </summary>
internal sealed class TokenizerFolder
{
    public const string TokenizerJson = "tokenizer.json";
    public const string VocabTxt = "vocab.txt";
    public const string SentencePieceModel = "tokenizer.model";
    public const string TokenizerConfigJson = "tokenizer_config.json";
    public const string SpecialTokensMapJson = "special_tokens_map.json";
    public const string ConfigJson = "config.json";

    /// <summary>Every file a tokenizer may be built from (a folder holds some of them): what model.zip carries.</summary>
    public static readonly IReadOnlyList<string> FileNames =
        [TokenizerJson, TokenizerConfigJson, VocabTxt, SentencePieceModel, SpecialTokensMapJson, "vocab.json", "merges.txt", "added_tokens.json"];

    private readonly JsonElement? _tokenizerConfig;
    private readonly JsonElement? _specialTokensMap;
    private readonly JsonElement? _config;

    public TokenizerFolder(string folder)
    {
        Folder = folder;
        _tokenizerConfig = ReadJson(TokenizerConfigJson);
        _specialTokensMap = ReadJson(SpecialTokensMapJson);
        _config = ReadJson(ConfigJson);
    }

    public string Folder { get; }

    public string PathOf(string file) => Path.Combine(Folder, file);

    public bool Has(string file) => File.Exists(PathOf(file));

    /// <summary>config.json's model_type ("bert", "gpt2", ...), or null.</summary>
    public string? ModelType => _config is { } c && c.TryGetProperty("model_type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;

    /// <summary>A boolean from tokenizer_config.json, or null when absent (or JSON null).</summary>
    public bool? ConfigBool(string key) =>
        _tokenizerConfig is { } c && c.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    /// <summary>An integer from tokenizer_config.json, or null.</summary>
    public long? ConfigInt(string key) =>
        _tokenizerConfig is { } c && c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n : null;

    /// <summary>
    /// A special token's text ("bos_token", "unk_token", ...) from tokenizer_config.json, then special_tokens_map.json.
    /// Either a plain string or a serialized AddedToken object with "content".
    /// </summary>
    public string? SpecialToken(string key)
    {
        foreach (var doc in new[] { _tokenizerConfig, _specialTokensMap })
        {
            if (doc is not { } d || !d.TryGetProperty(key, out var v)) continue;
            if (v.ValueKind == JsonValueKind.String) return v.GetString();
            if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content)) return content.GetString();
        }
        return null;
    }

    /// <summary>A string from config.json ("_name_or_path", ...), or null.</summary>
    public string? ModelConfigString(string key) =>
        _config is { } c && c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>An id from config.json ("bos_token_id", ...): the fallback when no tokenizer file names the token.</summary>
    public int? ModelConfigTokenId(string key) =>
        _config is { } c && c.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var id) ? id : null;

    /// <summary>Added tokens declared in tokenizer_config.json's "added_tokens_decoder" (transformers 4.34 and later).</summary>
    public IEnumerable<AddedToken> AddedTokensDecoder()
    {
        if (_tokenizerConfig is not { } c || !c.TryGetProperty("added_tokens_decoder", out var dec) || dec.ValueKind != JsonValueKind.Object)
            yield break;
        foreach (var entry in dec.EnumerateObject())
        {
            if (!int.TryParse(entry.Name, out var id) || !entry.Value.TryGetProperty("content", out var content)) continue;
            yield return ReadAddedToken(id, content.GetString() ?? "", entry.Value);
        }
    }

    /// <summary>Reads the flags of a serialized Hugging Face AddedToken.</summary>
    public static AddedToken ReadAddedToken(int id, string content, JsonElement e)
    {
        bool Flag(string name, bool fallback) => e.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
        return new AddedToken(id, content, Flag("special", true), Flag("lstrip", false), Flag("rstrip", false), Flag("single_word", false));
    }

    private JsonElement? ReadJson(string file)
    {
        var path = PathOf(file);
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            return doc.RootElement.Clone();
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {ex.Message}", ex);
        }
    }
}
