using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.FineTuning.Scoring;

/// <summary>Scores one row at a time, for PredictionEngine (which maps rows, not data views).</summary>
internal sealed class ScoringRowMapper : IRowToRowMapper
{
    private readonly IBatchScorer _scorer;

    public ScoringRowMapper(DataViewSchema inputSchema, IBatchScorer scorer)
    {
        scorer.CheckInputSchema(inputSchema);
        InputSchema = inputSchema;
        _scorer = scorer;
        OutputSchema = ScoringDataView.BuildOutputSchema(inputSchema, scorer);
    }

    public DataViewSchema InputSchema { get; }
    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var columns = dependingColumns.ToList();
        var needed = columns.Where(c => c.Index < InputSchema.Count).Select(c => InputSchema[c.Index]).ToList();
        if (columns.Any(c => c.Index >= InputSchema.Count))
            needed.AddRange(_scorer.InputColumnNames.Select(n => InputSchema[n]));
        return needed.DistinctBy(c => c.Index).ToList();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        var active = activeColumns.Select(c => c.Index).ToHashSet();
        var outputs = active.Any(i => i >= InputSchema.Count) ? _scorer.CreateRowGetters(input) : null;
        return new Row(this, input, outputs, active);
    }

    private sealed class Row(ScoringRowMapper parent, DataViewRow input, Delegate[]? outputs, HashSet<int> active) : DataViewRow
    {
        public override DataViewSchema Schema => parent.OutputSchema;
        public override long Position => input.Position;
        public override long Batch => input.Batch;
        public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int inputCount = parent.InputSchema.Count;
            if (column.Index < inputCount) return input.GetGetter<TValue>(parent.InputSchema[column.Index]);
            if (outputs is null) throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            return outputs[column.Index - inputCount] as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}, not {typeof(TValue).Name}.");
        }
    }
}
