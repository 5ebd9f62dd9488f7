using System.Text.Json;
using System.Text.Json.Nodes;
using static TextGeneration.TextModel;

namespace TextGeneration;

/// <summary>Reads and writes JSONL files: one JSON object per line with "text", or "prompt" and "completion".</summary>
public static class JsonlFile
{
    /// <summary>The rows of a file and the shape they share.</summary>
    /// <exception cref="InvalidDataException">A line is not a JSON object with the fields the first line has (names the line).</exception>
    public static (List<ModelInput> Rows, DataShape Shape) Read(string path)
    {
        var rows = new List<ModelInput>();
        DataShape? shape = null;
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            JsonObject o;
            try { o = JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException("not a JSON object"); }
            catch (Exception e) when (e is JsonException or InvalidDataException)
            {
                throw new InvalidDataException($"{path}, line {lineNumber}: expected a JSON object with \"text\" or \"prompt\" and \"completion\" ({e.Message}).");
            }
            string? Field(string name) => o[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
            var lineShape = Field("text") is not null ? DataShape.Text
                : Field("prompt") is not null && Field("completion") is not null ? DataShape.PromptCompletion
                : throw new InvalidDataException($"{path}, line {lineNumber}: needs a string \"text\", or strings \"prompt\" and \"completion\".");
            shape ??= lineShape;
            if (shape != lineShape)
                throw new InvalidDataException($"{path}, line {lineNumber}: {lineShape} row in a file whose first row is {shape}; use one shape per file.");
            rows.Add(new ModelInput { Text = Field("text") ?? "", Prompt = Field("prompt") ?? "", Completion = Field("completion") ?? "" });
        }
        if (shape is null) throw new InvalidDataException($"{path} has no rows.");
        return (rows, shape.Value);
    }

    /// <summary>Writes text rows (through a temporary file, then moved into place).</summary>
    public static void WriteTexts(string path, IEnumerable<string> texts)
    {
        var temp = path + ".tmp";
        File.WriteAllLines(temp, texts.Select(t => new JsonObject { ["text"] = t }.ToJsonString()));
        File.Move(temp, path, overwrite: true);
    }
}
