using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// Reads a scored data view (gold answers and predicted answers side by side) and scores it with
/// <see cref="SquadEvaluator"/>, as the official SQuAD scripts do.
/// </summary>
internal static class QuestionAnsweringEvaluation
{
    public static QuestionAnsweringMetrics Evaluate(IDataView scored, string idColumnName, string allAnswersColumnName,
        string? isImpossibleColumnName, string predictedAnswerColumnName, string? noAnswerScoreColumnName, SquadVersion version)
    {
        ArgumentNullException.ThrowIfNull(scored);
        var schema = scored.Schema;
        var id = ColumnChecks.RequireText(schema, idColumnName, "question id");
        var gold = ColumnChecks.Require(schema, allAnswersColumnName, "gold answers");
        if (!QaRows.IsTextOrTextVector(gold.Type))
            throw new ArgumentOutOfRangeException(nameof(allAnswersColumnName),
                $"Schema mismatch for gold answers column '{allAnswersColumnName}': expected a vector of String (every gold answer, as LoadFromSquadJson's AllAnswers) or String, got {gold.Type}.");
        var predicted = schema.GetColumnOrNull(predictedAnswerColumnName) ?? throw new ArgumentOutOfRangeException(nameof(predictedAnswerColumnName),
            $"Could not find predicted answer column '{predictedAnswerColumnName}': evaluate the output of a question-answering transformer's Transform. " +
            $"The data has columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}'"))}.");
        if (predicted.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(predictedAnswerColumnName), $"Schema mismatch for predicted answer column '{predictedAnswerColumnName}': expected String (text), got {predicted.Type}.");
        var impossible = QaRows.Optional(schema, isImpossibleColumnName);
        if (impossible is not null && impossible.Value.Type is not BooleanDataViewType)
            throw new ArgumentOutOfRangeException(nameof(isImpossibleColumnName), $"Schema mismatch for is-impossible column '{isImpossibleColumnName}': expected Boolean, got {impossible.Value.Type}.");
        var noAnswer = QaRows.Optional(schema, noAnswerScoreColumnName);
        if (noAnswer is not null && noAnswer.Value.Type != NumberDataViewType.Single)
            throw new ArgumentOutOfRangeException(nameof(noAnswerScoreColumnName), $"Schema mismatch for no-answer score column '{noAnswerScoreColumnName}': expected Single, got {noAnswer.Value.Type}.");

        var columns = new[] { id, gold, predicted, impossible, noAnswer }.OfType<DataViewSchema.Column>().ToList();
        var dataset = new List<SquadQuestion>();
        var predictions = new Dictionary<string, string>(StringComparer.Ordinal);
        var noAnswerScores = noAnswer is null ? null : new Dictionary<string, double>(StringComparer.Ordinal);
        using (var cursor = scored.GetRowCursor(columns))
        {
            var readId = ColumnChecks.TextReader(cursor, id);
            var readGold = QaRows.TextsReader(cursor, gold);
            var readAnswer = ColumnChecks.TextReader(cursor, predicted);
            var readImpossible = impossible is { } ic ? cursor.GetGetter<bool>(ic) : null;
            var readNoAnswer = noAnswer is { } nc ? cursor.GetGetter<float>(nc) : null;
            while (cursor.MoveNext())
            {
                var questionId = readId();
                if (questionId.Length == 0)
                    throw new InvalidDataException($"Row {cursor.Position} has an empty question id in column '{idColumnName}'; SQuAD scoring keys answers by id.");
                bool isImpossible = false;
                readImpossible?.Invoke(ref isImpossible);
                var answers = readGold().Select(t => new SquadAnswer(t, -1)).ToList();
                dataset.Add(new SquadQuestion(questionId, "", "", "", answers, isImpossible));
                predictions[questionId] = readAnswer();
                if (readNoAnswer is not null)
                {
                    float value = 0;
                    readNoAnswer(ref value);
                    noAnswerScores![questionId] = value;
                }
            }
        }
        if (dataset.Count == 0) throw new InvalidOperationException("The scored data is empty: there are no questions to evaluate.");

        // The dataset decides the rules (not the presence of no-answer scores): a v2.0 model scored on v1.1 data gets v1.1 metrics.
        if (version == SquadVersion.Auto)
            version = dataset.Any(q => q.IsImpossible || q.Answers.Count == 0) ? SquadVersion.V2 : SquadVersion.V1;
        // The Answer column already says "" where the model's threshold chose no answer, so EM and F1 score it as it
        // is (threshold +inf); the no-answer scores feed only the official best-threshold search.
        return version == SquadVersion.V2
            ? SquadEvaluator.Evaluate(dataset, predictions, noAnswerScores, SquadVersion.V2, double.PositiveInfinity)
            : SquadEvaluator.Evaluate(dataset, predictions, null, SquadVersion.V1);
    }
}
