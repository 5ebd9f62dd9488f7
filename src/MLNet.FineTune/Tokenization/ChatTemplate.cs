using System.Text.Json;

namespace MLNet.FineTune.Tokenization;

/// <summary>One turn of a conversation: <c>{"role": ..., "content": ...}</c> as chat templates read it.</summary>
/// <param name="Role">"system", "user", "assistant" (or whatever roles the model's template accepts).</param>
/// <param name="Content">The turn's text.</param>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// A model's chat template (the Jinja <c>chat_template</c> of its tokenizer_config.json, or chat_template.jinja),
/// rendered as transformers' <c>apply_chat_template(messages, tokenize=False, add_generation_prompt=...)</c> does: with
/// trim_blocks and lstrip_blocks, the special tokens as variables (bos_token, eos_token, ...), raise_exception and
/// strftime_now. The renderer is this library's own (<see cref="JinjaTemplate"/>, the Jinja subset templates use).
/// </summary>
/// <remarks>
/// The rendered text already holds the template's special tokens: encode it without adding special tokens again,
/// as transformers does (<c>add_special_tokens=False</c> inside apply_chat_template).
/// </remarks>
internal sealed class ChatTemplate
{
    private static readonly string[] SpecialTokenKeys =
        ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

    private readonly JinjaTemplate _template;

    private ChatTemplate(string source, JinjaTemplate template, IReadOnlyDictionary<string, string> specialTokens)
    {
        Source = source;
        _template = template;
        SpecialTokens = specialTokens;
    }

    /// <summary>The template's Jinja source.</summary>
    public string Source { get; }

    /// <summary>The special tokens passed to the template as variables ("bos_token" → "&lt;s&gt;", ...).</summary>
    public IReadOnlyDictionary<string, string> SpecialTokens { get; }

    /// <summary>A template from its source, with the special tokens it may refer to.</summary>
    /// <param name="source">The Jinja text.</param>
    /// <param name="specialTokens">Variables such as bos_token and eos_token; none when null.</param>
    /// <param name="origin">Names the template in errors.</param>
    /// <exception cref="InvalidDataException">The source is not valid Jinja or uses a statement this renderer does not support.</exception>
    public static ChatTemplate Parse(string source, IReadOnlyDictionary<string, string>? specialTokens = null, string origin = "chat template") =>
        new(source, JinjaTemplate.Parse(source, origin), specialTokens ?? new Dictionary<string, string>());

    /// <summary>
    /// The chat template of a Hugging Face folder: chat_template.jinja when present (transformers 4.43 and later save it
    /// there), else tokenizer_config.json's <c>chat_template</c> (a string, or a list of named templates of which
    /// "default" is used). Special tokens come from tokenizer_config.json / special_tokens_map.json.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="InvalidOperationException">The folder has no chat template (the message names the files looked at).</exception>
    public static ChatTemplate FromFolder(string folder) =>
        TryFromFolder(folder) ?? throw new InvalidOperationException(
            $"'{folder}' has no chat template: {TokenizerFolder.TokenizerConfigJson} has no \"chat_template\" and there is no {ChatTemplateFile}. " +
            "Messages need the model's chat template; use a chat/instruct model's folder, or prompt/completion columns instead.");

    /// <summary>As <see cref="FromFolder"/>, or null when the folder has no chat template.</summary>
    public static ChatTemplate? TryFromFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder not found: '{folder}'.");
        return TryFromFiles(name => File.Exists(Path.Combine(folder, name)) ? File.ReadAllText(Path.Combine(folder, name)) : null, folder);
    }

    /// <summary>The chat template of a folder's files given by name (e.g. tokenizer files kept in model.zip), or null.</summary>
    /// <param name="readFile">The text of a file by name, or null when absent.</param>
    /// <param name="where">Names the files' origin in errors.</param>
    internal static ChatTemplate? TryFromFiles(Func<string, string?> readFile, string where)
    {
        var files = new TokenizerFolder(readFile, where);
        var specials = SpecialTokenKeys.Select(k => (Key: k, Value: files.SpecialToken(k)))
            .Where(p => p.Value is not null).ToDictionary(p => p.Key, p => p.Value!);

        if (readFile(ChatTemplateFile) is { } jinja) return Parse(jinja, specials, Path.Combine(where, ChatTemplateFile));

        if (readFile(TokenizerFolder.TokenizerConfigJson) is not { } configText) return null;
        using var doc = JsonDocument.Parse(configText, new JsonDocumentOptions { AllowTrailingCommas = true });
        if (!doc.RootElement.TryGetProperty("chat_template", out var template)) return null;
        var origin = $"chat_template in {Path.Combine(where, TokenizerFolder.TokenizerConfigJson)}";
        switch (template.ValueKind)
        {
            case JsonValueKind.String:
                return Parse(template.GetString()!, specials, origin);
            case JsonValueKind.Array:
                foreach (var entry in template.EnumerateArray())
                    if (entry.TryGetProperty("name", out var name) && name.GetString() == "default" && entry.TryGetProperty("template", out var source))
                        return Parse(source.GetString() ?? "", specials, origin + " (\"default\")");
                throw new InvalidDataException($"{origin}: a list of templates without one named \"default\".");
            case JsonValueKind.Null:
                return null;
            default:
                throw new InvalidDataException($"{origin}: expected a string or a list of named templates, found {template.ValueKind}.");
        }
    }

    /// <summary>File name transformers uses for a template saved apart from tokenizer_config.json.</summary>
    public const string ChatTemplateFile = "chat_template.jinja";

    /// <summary>Renders a conversation.</summary>
    /// <param name="messages">The turns, in order.</param>
    /// <param name="addGenerationPrompt">Append the header that starts the assistant's reply (for generation).</param>
    /// <param name="variables">Further variables (tools, documents, template kwargs); special tokens are always passed.</param>
    /// <exception cref="InvalidOperationException">The template refused the conversation (raise_exception) or failed on it.</exception>
    public string Apply(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = false, IReadOnlyDictionary<string, object?>? variables = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList();
        return Render(turns, addGenerationPrompt, variables);
    }

    /// <summary>Renders a conversation given as JSON: an array of objects with "role" and "content" (other fields, such
    /// as tool calls, reach the template unchanged).</summary>
    /// <exception cref="FormatException">The text is not a JSON array of objects with a string "role".</exception>
    public string ApplyJson(string messagesJson, bool addGenerationPrompt = false)
    {
        var turns = ParseMessagesJson(messagesJson);
        return Render(turns.Select(t => (object?)t).ToList(), addGenerationPrompt, null);
    }

    /// <summary>Reads a JSON conversation into template values, checking its shape.</summary>
    /// <exception cref="FormatException">Not a JSON array of objects each with a string "role".</exception>
    internal static List<Dictionary<string, object?>> ParseMessagesJson(string messagesJson)
    {
        ArgumentNullException.ThrowIfNull(messagesJson);
        JsonDocument doc;
        try { doc = JsonDocument.Parse(messagesJson); }
        catch (JsonException ex) { throw new FormatException($"messages are not valid JSON: {ex.Message}", ex); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new FormatException($"messages must be a JSON array of {{\"role\", \"content\"}} objects, found a {doc.RootElement.ValueKind}.");
            var turns = new List<Dictionary<string, object?>>();
            int i = 0;
            foreach (var e in doc.RootElement.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                    throw new FormatException($"message {i} must be an object with a string \"role\" (and \"content\").");
                turns.Add((Dictionary<string, object?>)JinjaTemplate.FromJson(e)!);
                i++;
            }
            if (turns.Count == 0) throw new FormatException("messages is an empty array: a conversation needs at least one turn.");
            return turns;
        }
    }

    private string Render(List<object?> messages, bool addGenerationPrompt, IReadOnlyDictionary<string, object?>? variables)
    {
        // transformers passes tools and documents (None unless given) besides the special tokens.
        var context = new Dictionary<string, object?> { ["tools"] = null, ["documents"] = null };
        foreach (var (k, v) in SpecialTokens) context[k] = v;
        if (variables is not null) foreach (var (k, v) in variables) context[k] = v;
        context["messages"] = messages;
        context["add_generation_prompt"] = addGenerationPrompt;
        return _template.Render(context);
    }
}
