using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.FineTuning.Scoring;

/// <summary>
/// What a fitted task model contributes to scoring: which input columns it reads, how it scores a batch of rows, and
/// the output columns it adds. <see cref="ScoringDataView"/> runs it over whole data views in batches;
/// <see cref="ScoringRowMapper"/> runs it one row at a time for PredictionEngine.
/// </summary>
/// <typeparam name="TIn">One row's inputs, as read from the data view.</typeparam>
/// <typeparam name="TOut">One row's outputs.</typeparam>
internal abstract class BatchScorer<TIn, TOut> : IBatchScorer
{
    /// <summary>How errors about a row being scored name its data ("Row 3 of the data to score ...").</summary>
    protected const string DataToScore = "data to score";

    /// <summary>Input columns the scorer reads (resolved against the input schema with named errors).</summary>
    public abstract IReadOnlyList<string> InputColumnNames { get; }

    /// <summary>The columns added to the output (with their annotations, e.g. key values).</summary>
    public abstract IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns { get; }

    /// <summary>Rows scored per forward pass.</summary>
    public abstract int BatchSize { get; }

    /// <summary>True when <see cref="Score"/> puts rows of similar length into the same batch (less padding) and
    /// scores several batches side by side (<see cref="Runtime.ScoringWorkers"/>): Transform then reads
    /// <see cref="SortedReadAheadBatches"/> batches ahead so that it has rows to sort and batches to share.</summary>
    protected virtual bool GroupsRowsByLength => false;

    /// <summary>Batches one read-ahead holds for a scorer that <see cref="GroupsRowsByLength"/>.</summary>
    private const int SortedReadAheadBatches = 8;

    /// <summary>Rows Transform reads ahead and passes to one <see cref="Score"/> call.</summary>
    public int ReadAheadRows => GroupsRowsByLength ? BatchSize * SortedReadAheadBatches : BatchSize;

    /// <summary>Returns a function that reads the current row of <paramref name="row"/>.</summary>
    public abstract Func<TIn> CreateInputReader(DataViewRow row);

    /// <summary>Scores a batch; one output per input, in order.</summary>
    public abstract IReadOnlyList<TOut> Score(IReadOnlyList<TIn> inputs);

    /// <summary>A ValueGetter of output column <paramref name="outputIndex"/> that reads from <paramref name="current"/>.</summary>
    public abstract Delegate CreateOutputGetter(int outputIndex, Func<TOut> current);

    /// <summary>Checks that the input schema has the columns this scorer reads, with the right types.</summary>
    public abstract void CheckInputSchema(DataViewSchema schema);

    ScoringCursorState IBatchScorer.CreateState() => new State(this);

    Delegate[] IBatchScorer.CreateRowGetters(DataViewRow input)
    {
        // One row at a time (PredictionEngine): score on first use at each position, then reuse.
        var read = CreateInputReader(input);
        long cachedPosition = -1;
        TOut cached = default!;
        TOut Current()
        {
            if (input.Position != cachedPosition)
            {
                // One row is too little work to share: on the calling thread alone it skips waking OpenMP's sleeping
                // threads for every operator (docs/performance.md, serving latency).
                using (CallingThreadIntraOp.SingleThreaded()) cached = Score([read()])[0];
                cachedPosition = input.Position;
            }
            return cached;
        }
        return OutputColumns.Select((_, i) => CreateOutputGetter(i, Current)).ToArray();
    }

    /// <summary>Reads ahead with its own cursor, scores <see cref="ReadAheadRows"/> at a time, serves results by row
    /// position.</summary>
    private sealed class State(BatchScorer<TIn, TOut> scorer) : ScoringCursorState
    {
        private DataViewRowCursor? _lead;
        private Func<TIn>? _read;
        private IReadOnlyList<TOut> _batch = [];
        private long _batchStart;
        private long _position = -1;

        public override void Start(IDataView input)
        {
            var columns = scorer.InputColumnNames.Select(n => input.Schema[n]).ToArray();
            _lead = input.GetRowCursor(columns);
            _read = scorer.CreateInputReader(_lead);
            _batchStart = 0;
            _batch = [];
        }

        public override void MoveTo(long position) => _position = position;

        public TOut Current()
        {
            long offset = _position - _batchStart;
            if (offset >= _batch.Count)
            {
                // The follower moved past the batch: score the next rows. Cursors advance in lock step, so the
                // lead cursor's next row is the follower's current one.
                _batchStart += _batch.Count;
                var inputs = new List<TIn>(scorer.ReadAheadRows);
                while (inputs.Count < scorer.ReadAheadRows && _lead!.MoveNext()) inputs.Add(_read!());
                _batch = scorer.Score(inputs);
                offset = _position - _batchStart;
                if (offset < 0 || offset >= _batch.Count)
                    throw new InvalidOperationException($"Scoring lost its place: row {_position} is not in the batch that starts at {_batchStart}.");
            }
            return _batch[(int)offset];
        }

        public override Delegate CreateGetter(int outputIndex) => scorer.CreateOutputGetter(outputIndex, Current);

        public override void Dispose() => _lead?.Dispose();
    }
}

/// <summary>The non-generic face of <see cref="BatchScorer{TIn, TOut}"/>.</summary>
internal interface IBatchScorer
{
    IReadOnlyList<string> InputColumnNames { get; }
    IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns { get; }
    void CheckInputSchema(DataViewSchema schema);
    ScoringCursorState CreateState();
    Delegate[] CreateRowGetters(DataViewRow input);
}

/// <summary>Per-cursor scoring state.</summary>
internal abstract class ScoringCursorState : IDisposable
{
    public abstract void Start(IDataView input);
    public abstract void MoveTo(long position);
    public abstract Delegate CreateGetter(int outputIndex);
    public abstract void Dispose();
}
