using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// Reads question-answering rows from a data view: the question and context, and for training the gold answer (as
/// the featurizer labels it) and every gold answer (as the SQuAD scripts score against).
/// </summary>
internal static class QaRows
{
    /// <summary>One training or validation row: what the featurizer needs, and the gold record the evaluator needs.</summary>
    public sealed record Row(QaExample Example, SquadQuestion Gold);

    /// <summary>Checks the columns training reads, with errors that name the column and the data ("training data").</summary>
    public static void CheckTrainingColumns(DataViewSchema schema, QuestionAnsweringOptions options, string what)
    {
        try
        {
            ColumnChecks.RequireText(schema, options.ContextColumnName, "context");
            ColumnChecks.RequireText(schema, options.QuestionColumnName, "question");
            ColumnChecks.RequireText(schema, options.AnswerTextColumnName, "answer text");
            var start = ColumnChecks.Require(schema, options.AnswerStartColumnName, "answer start");
            if (start.Type != NumberDataViewType.Int32)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Schema mismatch for answer start column '{start.Name}': expected Int32 (the answer's UTF-16 index in the context, -1 for none), got {start.Type}.");
            if (Optional(schema, options.IsImpossibleColumnName) is { } impossible && impossible.Type is not BooleanDataViewType)
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Schema mismatch for is-impossible column '{impossible.Name}': expected Boolean, got {impossible.Type}. Set IsImpossibleColumnName = null to ignore it.");
            if (Optional(schema, options.IdColumnName) is { } id && id.Type is not TextDataViewType)
                throw new ArgumentOutOfRangeException(nameof(schema), $"Schema mismatch for id column '{id.Name}': expected String (text), got {id.Type}.");
            if (Optional(schema, options.AllAnswersColumnName) is { } all && !IsTextOrTextVector(all.Type))
                throw new ArgumentOutOfRangeException(nameof(schema),
                    $"Schema mismatch for all-answers column '{all.Name}': expected a vector of String (or String), got {all.Type}.");
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"In the {what}: {e.Message.Split(" (Parameter")[0]}");
        }
    }

    /// <summary>Reads every row with its gold answers.</summary>
    /// <exception cref="InvalidDataException">A gold answer does not fit its context (the message names the row and question id).</exception>
    public static List<Row> ReadTraining(IDataView data, QuestionAnsweringOptions options, string what)
    {
        var schema = data.Schema;
        var idColumn = Optional(schema, options.IdColumnName);
        var allColumn = Optional(schema, options.AllAnswersColumnName);
        var impossibleColumn = Optional(schema, options.IsImpossibleColumnName);
        var columns = new List<DataViewSchema.Column>
        {
            schema[options.ContextColumnName], schema[options.QuestionColumnName], schema[options.AnswerTextColumnName], schema[options.AnswerStartColumnName],
        };
        columns.AddRange(new[] { idColumn, allColumn, impossibleColumn }.OfType<DataViewSchema.Column>());

        using var cursor = data.GetRowCursor(columns);
        var context = ColumnChecks.NonEmptyTextReader(cursor, schema[options.ContextColumnName], what);
        var question = ColumnChecks.NonEmptyTextReader(cursor, schema[options.QuestionColumnName], what);
        var answerText = ColumnChecks.TextReader(cursor, schema[options.AnswerTextColumnName]);
        var answerStartGetter = cursor.GetGetter<int>(schema[options.AnswerStartColumnName]);
        var id = idColumn is { } i ? ColumnChecks.TextReader(cursor, i) : null;
        var all = allColumn is { } a ? TextsReader(cursor, a) : null;
        var impossibleGetter = impossibleColumn is { } p ? cursor.GetGetter<bool>(p) : null;

        var rows = new List<Row>();
        var seenIds = new HashSet<string>(StringComparer.Ordinal);
        while (cursor.MoveNext())
        {
            int answerStart = 0;
            answerStartGetter(ref answerStart);
            bool impossible = false;
            impossibleGetter?.Invoke(ref impossible);
            var rowId = id?.Invoke() is { Length: > 0 } given ? given : $"row-{cursor.Position}";
            // The evaluator keys predictions by id: a repeated id would score one question twice.
            if (!seenIds.Add(rowId)) rowId = $"{rowId}#row-{cursor.Position}";
            var text = answerText();
            var paragraph = context();
            var example = new QaExample(rowId, question(), paragraph, text, answerStart, impossible);
            CheckNoAnswerIsConsistent(example, cursor.Position, options, what);
            if (example.HasAnswer) CheckAnswerInContext(example, cursor.Position, options, what);
            var golds = all?.Invoke() ?? (example.HasAnswer ? [text] : []);
            var gold = new SquadQuestion(rowId, "", paragraph, example.Question, golds.Select(g => new SquadAnswer(g, -1)).ToList(), impossible || !example.HasAnswer);
            rows.Add(new Row(example, gold));
        }
        return rows;
    }

    /// <summary>A row says "no answer" by an empty answer text (SQuAD v2.0's files: is_impossible with no answers).
    /// A row that gives an answer text and also says there is none is a data error, not a no-answer row: it would
    /// silently train as "no answer" and switch the whole model to SQuAD v2.0.</summary>
    /// <exception cref="InvalidDataException">An answer text with AnswerStart below 0, or with IsImpossible true.</exception>
    private static void CheckNoAnswerIsConsistent(QaExample example, long row, QuestionAnsweringOptions options, string what)
    {
        if (string.IsNullOrEmpty(example.AnswerText)) return;
        var where = $"Row {row} (question '{example.Id}') of the {what}";
        if (example.AnswerStart < 0)
            throw new InvalidDataException(
                $"{where} has the answer \"{example.AnswerText}\" in '{options.AnswerTextColumnName}' but '{options.AnswerStartColumnName}' = {example.AnswerStart}. " +
                "Give the answer's start in the context, or, for a question without answer, an empty answer text (and IsImpossible = true).");
        if (example.IsImpossible)
            throw new InvalidDataException(
                $"{where} is marked unanswerable ('{options.IsImpossibleColumnName}' = true) but has the answer \"{example.AnswerText}\" in " +
                $"'{options.AnswerTextColumnName}'. Empty the answer text for a question without answer, or set '{options.IsImpossibleColumnName}' to false.");
    }

    /// <summary>The gold answer must be the context's text at its start: the featurizer labels the tokens there, so a
    /// wrong start would teach the model another span without a word.</summary>
    /// <exception cref="InvalidDataException">The answer ends past the context, or the context reads otherwise there
    /// (the message names the row, the question id, the columns and both strings).</exception>
    private static void CheckAnswerInContext(QaExample example, long row, QuestionAnsweringOptions options, string what)
    {
        var (text, start, context) = (example.AnswerText!, example.AnswerStart, example.Context);
        var where = $"Row {row} (question '{example.Id}') of the {what}";
        if (start + text.Length > context.Length)
            throw new InvalidDataException(
                $"{where}: the answer in '{options.AnswerTextColumnName}' ({text.Length} characters from '{options.AnswerStartColumnName}' = {start}) " +
                $"ends past its context ({context.Length} characters).");
        if (string.CompareOrdinal(context, start, text, 0, text.Length) != 0)
            throw new InvalidDataException(
                $"{where}: the answer in '{options.AnswerTextColumnName}' is \"{text}\", but the context in '{options.ContextColumnName}' reads " +
                $"\"{context.Substring(start, text.Length)}\" at '{options.AnswerStartColumnName}' = {start}. AnswerStart must be the answer's " +
                "UTF-16 index in the context (LoadFromSquadJson converts SQuAD's offsets); fix the start or the text.");
    }

    /// <summary>The column when <paramref name="name"/> is set and the schema has it, else null.</summary>
    public static DataViewSchema.Column? Optional(DataViewSchema schema, string? name) =>
        string.IsNullOrEmpty(name) ? null : schema.GetColumnOrNull(name);

    public static bool IsTextOrTextVector(DataViewType type) =>
        type is TextDataViewType || type is VectorDataViewType { ItemType: TextDataViewType };

    /// <summary>Reads a text or text-vector column as a list of strings (a scalar gives one, "" gives none).</summary>
    public static Func<string[]> TextsReader(DataViewRow row, DataViewSchema.Column column)
    {
        if (column.Type is TextDataViewType)
        {
            var single = ColumnChecks.TextReader(row, column);
            return () => single() is { Length: > 0 } s ? [s] : [];
        }
        var getter = row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(column);
        VBuffer<ReadOnlyMemory<char>> values = default;
        return () =>
        {
            getter(ref values);
            return values.DenseValues().Select(v => v.ToString()).ToArray();
        };
    }
}
