using System.Text.Json;
using MLNet.FineTune.Tasks.QuestionAnswering;

namespace MLNet.FineTune;

/// <summary>
/// Reads the SQuAD JSON formats: datasets (v1.1 and v2.0), prediction files (question id to answer text) and
/// no-answer probability files (question id to probability), as the official evaluation scripts take them.
/// </summary>
/// <remarks>
/// Dataset layout: <c>{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
/// "answers": [{"text", "answer_start"}], "is_impossible"?}]}]}]}</c>. <c>version</c> and <c>title</c> may be absent;
/// <c>is_impossible</c> (v2.0 only) defaults to "no gold answer". v2.0's <c>plausible_answers</c> are not gold
/// answers and are ignored, as the official script ignores them.
/// </remarks>
public static class SquadJson
{
    /// <summary>Reads a SQuAD v1.1 or v2.0 dataset file: one record per question, in file order.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON, or a field is missing or of the wrong type (the message names the file and the JSON path).</exception>
    public static IReadOnlyList<SquadQuestion> Read(string path)
    {
        using var document = JsonFileReader.Parse(path, "SQuAD dataset file");
        var file = Path.GetFullPath(path);
        var root = JsonFileReader.Expect(document.RootElement, JsonValueKind.Object, "$", file);
        var data = JsonFileReader.Required(root, "data", JsonValueKind.Array, "$", file);

        var questions = new List<SquadQuestion>();
        var articleIndex = 0;
        foreach (var article in data.EnumerateArray())
        {
            var articleAt = JsonFileReader.Item("$.data", articleIndex++);
            JsonFileReader.Expect(article, JsonValueKind.Object, articleAt, file);
            var title = JsonFileReader.Optional(article, "title", JsonValueKind.String, articleAt, file)?.GetString() ?? "";
            var paragraphs = JsonFileReader.Required(article, "paragraphs", JsonValueKind.Array, articleAt, file);

            var paragraphIndex = 0;
            foreach (var paragraph in paragraphs.EnumerateArray())
            {
                var paragraphAt = JsonFileReader.Item(JsonFileReader.Member(articleAt, "paragraphs"), paragraphIndex++);
                JsonFileReader.Expect(paragraph, JsonValueKind.Object, paragraphAt, file);
                var context = JsonFileReader.Required(paragraph, "context", JsonValueKind.String, paragraphAt, file).GetString()!;
                var offsets = new CodePointOffsets(context);
                var qas = JsonFileReader.Required(paragraph, "qas", JsonValueKind.Array, paragraphAt, file);

                var qaIndex = 0;
                foreach (var qa in qas.EnumerateArray())
                {
                    var qaAt = JsonFileReader.Item(JsonFileReader.Member(paragraphAt, "qas"), qaIndex++);
                    questions.Add(ReadQuestion(qa, qaAt, title, context, offsets, file));
                }
            }
        }
        return questions;
    }

    /// <summary>
    /// Reads a predictions file: a JSON object mapping question id to the predicted answer text ("" = no answer).
    /// Entries keep the file's order.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON, not an object, or a value is not a string.</exception>
    public static IReadOnlyDictionary<string, string> ReadPredictions(string path)
    {
        using var document = JsonFileReader.Parse(path, "SQuAD predictions file");
        var file = Path.GetFullPath(path);
        var root = JsonFileReader.Expect(document.RootElement, JsonValueKind.Object, "$", file);
        var predictions = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in root.EnumerateObject())
        {
            var value = JsonFileReader.Expect(entry.Value, JsonValueKind.String, JsonFileReader.Member("$", entry.Name), file);
            predictions[entry.Name] = value.GetString()!;   // a repeated key: the last wins, as in Python's json
        }
        return predictions;
    }

    /// <summary>
    /// Reads a no-answer probability file (evaluate-v2.0.py's <c>--na-prob-file</c>): a JSON object mapping question
    /// id to the model's probability that the question has no answer. Entries keep the file's order, which breaks
    /// ties when <see cref="SquadEvaluator"/> searches the best threshold, as in the official script.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON, not an object, or a value is not a number.</exception>
    public static IReadOnlyDictionary<string, double> ReadNoAnswerProbabilities(string path)
    {
        using var document = JsonFileReader.Parse(path, "SQuAD no-answer probability file");
        var file = Path.GetFullPath(path);
        var root = JsonFileReader.Expect(document.RootElement, JsonValueKind.Object, "$", file);
        var probabilities = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var entry in root.EnumerateObject())
        {
            var value = JsonFileReader.Expect(entry.Value, JsonValueKind.Number, JsonFileReader.Member("$", entry.Name), file);
            probabilities[entry.Name] = value.GetDouble();
        }
        return probabilities;
    }

    private static SquadQuestion ReadQuestion(JsonElement qa, string at, string title, string context, CodePointOffsets offsets, string file)
    {
        JsonFileReader.Expect(qa, JsonValueKind.Object, at, file);
        var id = JsonFileReader.Required(qa, "id", JsonValueKind.String, at, file).GetString()!;
        var question = JsonFileReader.Required(qa, "question", JsonValueKind.String, at, file).GetString()!;
        var answersAt = JsonFileReader.Member(at, "answers");
        var answersJson = JsonFileReader.Required(qa, "answers", JsonValueKind.Array, at, file);

        var answers = new List<SquadAnswer>(answersJson.GetArrayLength());
        var answerIndex = 0;
        foreach (var answer in answersJson.EnumerateArray())
        {
            var answerAt = JsonFileReader.Item(answersAt, answerIndex++);
            JsonFileReader.Expect(answer, JsonValueKind.Object, answerAt, file);
            var text = JsonFileReader.Required(answer, "text", JsonValueKind.String, answerAt, file).GetString()!;
            var start = JsonFileReader.RequiredInt(answer, "answer_start", answerAt, file);
            if (start < 0 || start > offsets.CodePointCount)
                throw new InvalidDataException(
                    $"{file}: {JsonFileReader.Member(answerAt, "answer_start")} is {start}, outside the context of question '{id}' " +
                    $"({offsets.CodePointCount} characters).");
            answers.Add(new SquadAnswer(text, offsets.ToUtf16(start)));
        }

        // v1.1 has no is_impossible: a question is impossible exactly when it has no gold answer.
        var isImpossible = JsonFileReader.OptionalBool(qa, "is_impossible", at, file) ?? answers.Count == 0;
        return new SquadQuestion(id, title, context, question, answers, isImpossible);
    }

    /// <summary>Maps SQuAD's code-point offsets (Python string indices) to UTF-16 offsets in a .NET string.</summary>
    private readonly struct CodePointOffsets
    {
        private readonly int[]? _utf16OfCodePoint;   // null when the text has no surrogate pairs: the offsets agree

        public CodePointOffsets(string text)
        {
            CodePointCount = text.Length;
            if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return;

            var map = new List<int>(text.Length + 1);
            for (var i = 0; i < text.Length; i++)
            {
                map.Add(i);
                if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) i++;
            }
            map.Add(text.Length);
            CodePointCount = map.Count - 1;
            _utf16OfCodePoint = map.ToArray();
        }

        public int CodePointCount { get; }

        public int ToUtf16(int codePointIndex) => _utf16OfCodePoint is null ? codePointIndex : _utf16OfCodePoint[codePointIndex];
    }
}
