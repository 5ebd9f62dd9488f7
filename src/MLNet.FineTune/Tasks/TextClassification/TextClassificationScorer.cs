using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.FineTuning.Scoring;

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>
/// Scores text columns with a fine-tuned classifier, adding ML.NET's classification columns: binary (bool labels):
/// Score (log-odds), Probability, PredictedLabel (bool); multiclass: Score (class probabilities, with slot names)
/// and PredictedLabel (key, with the labels as key values so MapKeyToValue restores them).
/// </summary>
internal sealed class TextClassificationScorer : BatchScorer<TextInput, float[]>
{
    private readonly TextClassifierModel _model;
    private readonly string _textColumn;
    private readonly string? _pairColumn;
    private readonly IReadOnlyList<DataViewSchema.DetachedColumn> _outputs;

    public TextClassificationScorer(TextClassifierModel model, string textColumn, string? pairColumn,
        string scoreColumn, string predictedLabelColumn, int batchSize)
    {
        _model = model;
        _textColumn = textColumn;
        _pairColumn = pairColumn;
        BatchSize = batchSize;
        _outputs = model.Labels.IsBinary
            ? [new(scoreColumn, NumberDataViewType.Single), new("Probability", NumberDataViewType.Single), new(predictedLabelColumn, BooleanDataViewType.Instance)]
            : [new(scoreColumn, new VectorDataViewType(NumberDataViewType.Single, model.Labels.Count), SlotNames(model.Labels.Names)),
               new(predictedLabelColumn, new KeyDataViewType(typeof(uint), model.Labels.Count), KeyValues(model.Labels.Names))];
    }

    public override IReadOnlyList<string> InputColumnNames => _pairColumn is null ? [_textColumn] : [_textColumn, _pairColumn];
    public override IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns => _outputs;
    public override int BatchSize { get; }

    /// <summary><see cref="TextClassifierModel.Predict"/> sorts rows by token count into its batches.</summary>
    protected override bool GroupsRowsByLength => true;

    public override void CheckInputSchema(DataViewSchema schema)
    {
        ColumnChecks.RequireText(schema, _textColumn, "text");
        if (_pairColumn is not null) ColumnChecks.RequireText(schema, _pairColumn, "text pair");
    }

    public override Func<TextInput> CreateInputReader(DataViewRow row)
    {
        // An empty or missing text is scored as the tokenizer encodes it ([CLS] [SEP]), as transformers' pipeline does:
        // one empty row in live data must not fail the whole Transform (training refuses empty rows).
        var text = ColumnChecks.TextReader(row, row.Schema[_textColumn]);
        var pair = _pairColumn is null ? null : ColumnChecks.TextReader(row, row.Schema[_pairColumn]);
        return () => new TextInput(text(), pair?.Invoke());
    }

    public override IReadOnlyList<float[]> Score(IReadOnlyList<TextInput> inputs) =>
        inputs.Count == 0 ? [] : _model.Predict(inputs, BatchSize);

    public override Delegate CreateOutputGetter(int outputIndex, Func<float[]> current)
    {
        if (_model.Labels.IsBinary)
        {
            return outputIndex switch
            {
                // Log-odds of the positive class: what ML.NET's calibrated binary trainers put in Score.
                0 => (ValueGetter<float>)((ref float v) => { var p = current(); v = MathF.Log(Math.Max(p[1], 1e-30f)) - MathF.Log(Math.Max(p[0], 1e-30f)); }),
                1 => (ValueGetter<float>)((ref float v) => v = current()[1]),
                _ => (ValueGetter<bool>)((ref bool v) => { var p = current(); v = p[1] > p[0]; }),
            };
        }
        return outputIndex switch
        {
            0 => (ValueGetter<VBuffer<float>>)((ref VBuffer<float> v) => { var p = current(); v = new VBuffer<float>(p.Length, (float[])p.Clone()); }),
            _ => (ValueGetter<uint>)((ref uint v) => v = (uint)ArgMax(current()) + 1),
        };
    }

    private static int ArgMax(float[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    private static DataViewSchema.Annotations SlotNames(IReadOnlyList<string> names) => TextVectorAnnotation("SlotNames", names);
    private static DataViewSchema.Annotations KeyValues(IReadOnlyList<string> names) => TextVectorAnnotation("KeyValues", names);

    private static DataViewSchema.Annotations TextVectorAnnotation(string kind, IReadOnlyList<string> names)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        var values = new VBuffer<ReadOnlyMemory<char>>(names.Count, names.Select(n => n.AsMemory()).ToArray());
        builder.Add(kind, new VectorDataViewType(TextDataViewType.Instance, names.Count), (ref VBuffer<ReadOnlyMemory<char>> v) => values.CopyTo(ref v));
        return builder.ToAnnotations();
    }
}
