using Microsoft.ML;

namespace MLNet.FineTune;

/// <summary>Loads SQuAD JSON files into ML.NET.</summary>
public static class SquadDataLoaderExtensions
{
    /// <summary>
    /// Reads a SQuAD v1.1 or v2.0 JSON file into an <see cref="IDataView"/> with one row per question.
    /// </summary>
    /// <remarks>
    /// <list type="table">
    /// <listheader><term>Column</term><description>Type and meaning</description></listheader>
    /// <item><term>Id</term><description>text: the question id</description></item>
    /// <item><term>Title</term><description>text: the article title ("" when absent)</description></item>
    /// <item><term>Context</term><description>text: the paragraph</description></item>
    /// <item><term>Question</term><description>text</description></item>
    /// <item><term>AnswerText</term><description>text: the first gold answer, "" when the question has none</description></item>
    /// <item><term>AnswerStart</term><description>Int32: the first gold answer's start in Context (UTF-16 index), -1 when none</description></item>
    /// <item><term>AllAnswers</term><description>vector of text (variable length): every gold answer, duplicates kept</description></item>
    /// <item><term>IsImpossible</term><description>Boolean: SQuAD v2.0's is_impossible; false for v1.1</description></item>
    /// </list>
    /// The file is read at once (<see cref="SquadJson.Read"/>); rows come in file order.
    /// </remarks>
    /// <param name="catalog">The data catalog (<c>mlContext.Data</c>).</param>
    /// <param name="path">The SQuAD JSON file.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or lacks a field (the message names the file and the JSON path).</exception>
    public static IDataView LoadFromSquadJson(this DataOperationsCatalog catalog, string path)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        var rows = SquadJson.Read(path).Select(SquadRow.From).ToList();
        return catalog.LoadFromEnumerable(rows);
    }

    /// <summary>The row shape ML.NET maps to columns by field name.</summary>
    internal sealed class SquadRow
    {
        public string Id = "";
        public string Title = "";
        public string Context = "";
        public string Question = "";
        public string AnswerText = "";
        public int AnswerStart;
        public string[] AllAnswers = [];
        public bool IsImpossible;

        public static SquadRow From(SquadQuestion q) => new()
        {
            Id = q.Id,
            Title = q.Title,
            Context = q.Context,
            Question = q.Question,
            AnswerText = q.AnswerText,
            AnswerStart = q.AnswerStart,
            AllAnswers = q.Answers.Select(a => a.Text).ToArray(),
            IsImpossible = q.IsImpossible,
        };
    }
}
