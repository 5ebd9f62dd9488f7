using System.Text;
using static SentimentAnalysis.SentimentModel;

namespace SentimentAnalysis;

/// <summary>
/// Reads <c>sentence&lt;TAB&gt;label</c> files with or without a header line: SST-2's layout (header
/// <c>sentence&lt;TAB&gt;label</c>) and the UCI sentiment files' (Yelp, Amazon, IMDb: no header). Labels are 0/1 or
/// false/true.
/// </summary>
/// <remarks>
/// Lines are split on '\n' only (one trailing '\r' is dropped) and fields on the last TAB. Line readers that also break
/// at a lone '\r' (.NET's ReadLine, and so ML.NET's text loader) or at U+0085 NEXT LINE (Python's splitlines) would cut
/// a review containing one in two; some copies of the UCI Yelp file have such a review. Reading the lines here keeps
/// it whole.
/// </remarks>
public static class ReviewFile
{
    /// <summary>Reads every row of a file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">A line has no TAB, empty text, or a label that is not 0/1/false/true.</exception>
    public static List<ModelInput> Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Review file not found: {Path.GetFullPath(path)}", path);
        var lines = File.ReadAllText(path, Encoding.UTF8).Split('\n');
        var rows = new List<ModelInput>(lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].TrimEnd('\r');
            if (line.Length == 0) continue;
            int tab = line.LastIndexOf('\t');
            if (tab < 0)
                throw new InvalidDataException($"{path}, line {i + 1}: no TAB; expected 'sentence<TAB>label'. The line starts: {Preview(line)}");
            var text = line[..tab].Trim();
            var labelField = line[(tab + 1)..].Trim();
            bool? label = ParseLabel(labelField);
            if (label is null)
            {
                if (i == 0 && LooksLikeHeader(text, labelField)) continue; // "sentence<TAB>label"
                throw new InvalidDataException($"{path}, line {i + 1}: label '{Preview(labelField)}' is not 0, 1, false or true.");
            }
            if (text.Length == 0) throw new InvalidDataException($"{path}, line {i + 1}: the sentence is empty.");
            rows.Add(new ModelInput { Sentence = text, Label = label.Value });
        }
        if (rows.Count == 0) throw new InvalidDataException($"{path} has no rows.");
        return rows;
    }

    /// <summary>A seeded Fisher-Yates shuffle (a copy): the same seed gives the same order on every machine.</summary>
    public static List<T> Shuffled<T>(IReadOnlyList<T> rows, int seed)
    {
        var copy = rows.ToList();
        var rng = new Random(seed);
        for (int i = copy.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (copy[i], copy[j]) = (copy[j], copy[i]);
        }
        return copy;
    }

    private static bool? ParseLabel(string field) => field.ToLowerInvariant() switch
    {
        "1" or "true" => true,
        "0" or "false" => false,
        _ => null,
    };

    // A header names columns: two single words (letters, digits, '_').
    private static bool LooksLikeHeader(string text, string label) =>
        text.Length > 0 && text.All(c => char.IsLetterOrDigit(c) || c == '_') && label.All(c => char.IsLetterOrDigit(c) || c == '_');

    private static string Preview(string s) => s.Length <= 60 ? s : s[..60] + "...";
}
