using System.Text;
using System.Text.Json;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// Reads a JSON file into a <see cref="JsonDocument"/> and fetches typed members, with errors that name the file and
/// the JSON path of the fault (<c>$.data[3].paragraphs[0].qas[7].id</c>).
/// </summary>
internal static class JsonFileReader
{
    /// <summary>Parses <paramref name="path"/>; what the file holds is described by <paramref name="what"/> in errors.</summary>
    public static JsonDocument Parse(string path, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var fullPath = Path.GetFullPath(path);
        if (!File.Exists(fullPath))
            throw new FileNotFoundException($"{what} not found: {fullPath}", fullPath);

        var bytes = File.ReadAllBytes(fullPath);
        ReadOnlyMemory<byte> utf8 = bytes;
        // Python's json.load accepts a UTF-8 byte-order mark via the text decoder; the JSON reader does not.
        if (bytes.AsSpan().StartsWith(Encoding.UTF8.Preamble))
            utf8 = utf8[Encoding.UTF8.Preamble.Length..];
        try
        {
            return JsonDocument.Parse(utf8);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException(
                $"{what} {fullPath} is not valid JSON near {PathOfSyntaxError(utf8.Span)} " +
                $"(line {ex.LineNumber + 1}, byte {ex.BytePositionInLine + 1} of the line): {ex.Message}", ex);
        }
    }

    /// <summary>The element must be of <paramref name="kind"/>; <paramref name="at"/> is its JSON path.</summary>
    public static JsonElement Expect(JsonElement element, JsonValueKind kind, string at, string file)
    {
        if (element.ValueKind != kind)
            throw new InvalidDataException($"{file}: {at} should be {Describe(kind)} but is {Describe(element.ValueKind)}.");
        return element;
    }

    /// <summary>A member that must exist with the given kind.</summary>
    public static JsonElement Required(JsonElement obj, string name, JsonValueKind kind, string at, string file)
    {
        if (!obj.TryGetProperty(name, out var value))
            throw new InvalidDataException($"{file}: missing field '{name}' in the object at {at}.");
        return Expect(value, kind, Member(at, name), file);
    }

    /// <summary>A member that may be absent (or null); when present it must have the given kind.</summary>
    public static JsonElement? Optional(JsonElement obj, string name, JsonValueKind kind, string at, string file)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            return null;
        return Expect(value, kind, Member(at, name), file);
    }

    /// <summary>A boolean member that may be absent.</summary>
    public static bool? OptionalBool(JsonElement obj, string name, string at, string file)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            return null;
        return value.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException(
                $"{file}: {Member(at, name)} should be true or false but is {Describe(value.ValueKind)}."),
        };
    }

    /// <summary>An integer member that must exist.</summary>
    public static int RequiredInt(JsonElement obj, string name, string at, string file)
    {
        var value = Required(obj, name, JsonValueKind.Number, at, file);
        if (!value.TryGetInt32(out var result))
            throw new InvalidDataException($"{file}: {Member(at, name)} should be an integer but is {value.GetRawText()}.");
        return result;
    }

    /// <summary>The JSON path of member <paramref name="name"/> of the object at <paramref name="at"/>.</summary>
    public static string Member(string at, string name) =>
        IsPlainName(name) ? $"{at}.{name}" : $"{at}['{name.Replace("'", "\\'")}']";

    /// <summary>The JSON path of item <paramref name="index"/> of the array at <paramref name="at"/>.</summary>
    public static string Item(string at, int index) => $"{at}[{index}]";

    private static bool IsPlainName(string name) =>
        name.Length > 0 && !char.IsDigit(name[0]) && name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_');

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    /// <summary>
    /// Re-reads malformed JSON token by token, tracking where it is, to say which member the syntax error is in
    /// (the document parser reports only line and byte). Runs only after a failure.
    /// </summary>
    private static string PathOfSyntaxError(ReadOnlySpan<byte> utf8)
    {
        var frames = new List<(bool IsArray, int Index, string? Name)>();
        var reader = new Utf8JsonReader(utf8, isFinalBlock: true, state: default);
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.PropertyName:
                        frames[^1] = frames[^1] with { Name = reader.GetString() };
                        break;
                    case JsonTokenType.StartObject:
                    case JsonTokenType.StartArray:
                        CountArrayItem(frames);
                        frames.Add((reader.TokenType == JsonTokenType.StartArray, -1, null));
                        break;
                    case JsonTokenType.EndObject:
                    case JsonTokenType.EndArray:
                        frames.RemoveAt(frames.Count - 1);
                        break;
                    default:
                        CountArrayItem(frames);
                        break;
                }
            }
        }
        catch (JsonException)
        {
            // Stopped at the fault: the frames say where.
        }

        var path = "$";
        foreach (var (isArray, index, name) in frames)
        {
            if (isArray && index >= 0) path = Item(path, index);
            else if (!isArray && name is not null) path = Member(path, name);
        }
        return path;

        static void CountArrayItem(List<(bool IsArray, int Index, string? Name)> frames)
        {
            if (frames.Count > 0 && frames[^1].IsArray)
                frames[^1] = frames[^1] with { Index = frames[^1].Index + 1 };
        }
    }
}
