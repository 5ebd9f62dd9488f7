using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.FineTuning.Scoring;

/// <summary>
/// The input data view plus a scorer's output columns, scored in batches: a lead cursor reads ahead and scores
/// <c>BatchSize</c> rows per forward pass while the cursor the caller sees passes the input columns through.
/// </summary>
internal sealed class ScoringDataView : IDataView
{
    private readonly IDataView _input;
    private readonly IBatchScorer _scorer;

    public ScoringDataView(IDataView input, IBatchScorer scorer)
    {
        scorer.CheckInputSchema(input.Schema);
        _input = input;
        _scorer = scorer;
        Schema = BuildOutputSchema(input.Schema, scorer);
    }

    /// <summary>Input columns (indices unchanged), then the output columns (hiding same-named inputs).</summary>
    internal static DataViewSchema BuildOutputSchema(DataViewSchema input, IBatchScorer scorer)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(input);
        foreach (var column in scorer.OutputColumns) builder.AddColumn(column.Name, column.Type, column.Annotations);
        return builder.ToSchema();
    }

    public bool CanShuffle => false;
    public DataViewSchema Schema { get; }
    public long? GetRowCount() => _input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var needed = columnsNeeded.Select(c => c.Index).ToHashSet();
        int inputCount = _input.Schema.Count;
        var inputColumns = needed.Where(i => i < inputCount).Select(i => _input.Schema[i]).ToList();
        bool scoring = needed.Any(i => i >= inputCount);
        var follower = _input.GetRowCursor(inputColumns);
        ScoringCursorState? state = null;
        if (scoring)
        {
            state = _scorer.CreateState();
            state.Start(_input);
        }
        return new Cursor(this, follower, state, needed);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor(ScoringDataView parent, DataViewRowCursor follower, ScoringCursorState? state, HashSet<int> active) : DataViewRowCursor
    {
        private readonly int _inputCount = parent._input.Schema.Count;

        public override DataViewSchema Schema => parent.Schema;
        public override long Position => follower.Position;
        public override long Batch => follower.Batch;
        public override bool IsColumnActive(DataViewSchema.Column column) => active.Contains(column.Index);
        public override ValueGetter<DataViewRowId> GetIdGetter() => follower.GetIdGetter();

        public override bool MoveNext()
        {
            if (!follower.MoveNext()) return false;
            state?.MoveTo(follower.Position);
            return true;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!active.Contains(column.Index))
                throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
            if (column.Index < _inputCount) return follower.GetGetter<TValue>(parent._input.Schema[column.Index]);
            var getter = state!.CreateGetter(column.Index - _inputCount);
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' is {column.Type}, not {typeof(TValue).Name}.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                follower.Dispose();
                state?.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
