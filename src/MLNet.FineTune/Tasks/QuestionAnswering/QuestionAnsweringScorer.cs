using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.FineTuning.Scoring;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>One row to answer: the paragraph, the question, and the row's position (named in errors).</summary>
internal readonly record struct QaInput(string Context, string Question, long Row);

/// <summary>
/// Answers the question of each row from its context: all windows of the rows of a batch go through the model
/// together, then each row's windows are post-processed into Answer ("" = none), AnswerStart (-1 = none), Score and,
/// for SQuAD v2.0 models, NoAnswerScore. A row whose context or question is empty, blank or missing is answered
/// without the model: no answer (Answer "", AnswerStart -1, Score and NoAnswerScore NaN: nothing was scored), so one
/// such row in live data or a test file does not fail the whole Transform or Evaluate (training refuses such rows).
/// </summary>
internal sealed class QuestionAnsweringScorer : BatchScorer<QaInput, QaPrediction>
{
    private readonly QuestionAnswererModel _model;
    private readonly QuestionAnsweringTransformer.Settings _settings;
    private readonly IReadOnlyList<DataViewSchema.DetachedColumn> _outputs;

    public QuestionAnsweringScorer(QuestionAnswererModel model, QuestionAnsweringTransformer.Settings settings)
    {
        _model = model;
        _settings = settings;
        var outputs = new List<DataViewSchema.DetachedColumn>
        {
            new(settings.AnswerColumn, TextDataViewType.Instance),
            new(settings.AnswerStartColumn, NumberDataViewType.Int32),
            new(settings.ScoreColumn, NumberDataViewType.Single),
        };
        if (settings.VersionTwoWithNegative) outputs.Add(new(settings.NoAnswerScoreColumn, NumberDataViewType.Single));
        _outputs = outputs;
    }

    public override IReadOnlyList<string> InputColumnNames => [_settings.ContextColumn, _settings.QuestionColumn];
    public override IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns => _outputs;

    /// <summary>Rows per batch: each row has at least one window, so a batch runs at least this many windows.</summary>
    public override int BatchSize => _settings.ScoringBatchSize;

    /// <summary><see cref="QuestionAnswererModel.Predict"/> sorts windows by length into its batches.</summary>
    protected override bool GroupsRowsByLength => true;

    public override void CheckInputSchema(DataViewSchema schema)
    {
        ColumnChecks.RequireText(schema, _settings.ContextColumn, "context");
        ColumnChecks.RequireText(schema, _settings.QuestionColumn, "question");
    }

    public override Func<QaInput> CreateInputReader(DataViewRow row)
    {
        var context = ColumnChecks.TextReader(row, row.Schema[_settings.ContextColumn]);
        var question = ColumnChecks.TextReader(row, row.Schema[_settings.QuestionColumn]);
        return () => new QaInput(context(), question(), row.Position);
    }

    public override IReadOnlyList<QaPrediction> Score(IReadOnlyList<QaInput> inputs)
    {
        static bool Answerable(QaInput input) => !string.IsNullOrWhiteSpace(input.Context) && !string.IsNullOrWhiteSpace(input.Question);
        var answerable = inputs.Where(Answerable).ToList();
        var predicted = answerable.Count == 0 ? []
            : _model.Predict(answerable.Select(input => new QaExample($"row {input.Row}", input.Question, input.Context)).ToList(), _settings.ScoringBatchSize);
        var noAnswer = new QaPrediction("", -1, float.NaN, float.NaN, _settings.VersionTwoWithNegative ? float.NaN : null, []);
        int next = 0;
        return inputs.Select(input => Answerable(input) ? predicted[next++] : noAnswer).ToList();
    }

    public override Delegate CreateOutputGetter(int outputIndex, Func<QaPrediction> current) => outputIndex switch
    {
        0 => (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = current().Answer.AsMemory()),
        1 => (ValueGetter<int>)((ref int v) => v = current().AnswerStart),
        2 => (ValueGetter<float>)((ref float v) => v = current().Score),
        _ => (ValueGetter<float>)((ref float v) => v = current().NoAnswerScore ?? float.NaN),
    };
}
