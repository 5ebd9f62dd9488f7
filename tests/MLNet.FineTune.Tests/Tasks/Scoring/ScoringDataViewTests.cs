using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.FineTuning.Scoring;

namespace MLNet.FineTune.Tests.Tasks.Scoring;

[TestClass]
public sealed class ScoringDataViewTests
{
    private sealed class Input { public string Text { get; set; } = ""; public float Other { get; set; } }

    /// <summary>Scores the text length; records batch sizes so the test sees batching happen.</summary>
    private sealed class LengthScorer(int batchSize, bool groupsRowsByLength = false) : BatchScorer<string, float>
    {
        protected override bool GroupsRowsByLength => groupsRowsByLength;
        public List<int> Batches { get; } = [];
        public override IReadOnlyList<string> InputColumnNames => ["Text"];
        public override IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns =>
            [new DataViewSchema.DetachedColumn("Length", NumberDataViewType.Single)];
        public override int BatchSize => batchSize;
        public override void CheckInputSchema(DataViewSchema schema)
        {
            if (schema.GetColumnOrNull("Text") is null) throw new ArgumentOutOfRangeException("Text", "Column 'Text' not found");
        }
        public override Func<string> CreateInputReader(DataViewRow row)
        {
            var getter = row.GetGetter<ReadOnlyMemory<char>>(row.Schema["Text"]);
            return () => { ReadOnlyMemory<char> v = default; getter(ref v); return v.ToString(); };
        }
        public override IReadOnlyList<float> Score(IReadOnlyList<string> inputs) { Batches.Add(inputs.Count); return inputs.Select(s => (float)s.Length).ToList(); }
        public override Delegate CreateOutputGetter(int outputIndex, Func<float> current) => (ValueGetter<float>)((ref float v) => v = current());
    }

    [TestMethod]
    public void ScoresInBatchesAndPassesInputColumnsThrough()
    {
        var ml = new MLContext(1);
        var rows = Enumerable.Range(0, 23).Select(i => new Input { Text = new string('x', i), Other = i * 10 }).ToList();
        var data = ml.Data.LoadFromEnumerable(rows);
        var scorer = new LengthScorer(batchSize: 5);
        var scored = new ScoringDataView(data, scorer);

        var lengths = scored.GetColumn<float>("Length").ToArray();
        var others = scored.GetColumn<float>("Other").ToArray();
        CollectionAssert.AreEqual(rows.Select(r => (float)r.Text.Length).ToArray(), lengths);
        CollectionAssert.AreEqual(rows.Select(r => r.Other).ToArray(), others);
        CollectionAssert.AreEqual(new[] { 5, 5, 5, 5, 3 }, scorer.Batches);
        Console.WriteLine($"batches: {string.Join(",", scorer.Batches)}");

        // A cursor that needs only input columns does not score.
        scorer.Batches.Clear();
        _ = scored.GetColumn<float>("Other").ToArray();
        Assert.AreEqual(0, scorer.Batches.Count);
    }

    [TestMethod]
    public void AScorerThatSortsByLengthGetsEightBatchesAtATimeAndRowsStayInOrder()
    {
        var ml = new MLContext(1);
        var rows = Enumerable.Range(0, 100).Select(i => new Input { Text = new string('x', (i * 37) % 23), Other = i }).ToList();
        var scorer = new LengthScorer(batchSize: 4, groupsRowsByLength: true);
        var scored = new ScoringDataView(ml.Data.LoadFromEnumerable(rows), scorer);

        CollectionAssert.AreEqual(rows.Select(r => (float)r.Text.Length).ToArray(), scored.GetColumn<float>("Length").ToArray());
        CollectionAssert.AreEqual(rows.Select(r => r.Other).ToArray(), scored.GetColumn<float>("Other").ToArray());
        Assert.AreEqual(32, scorer.ReadAheadRows);
        CollectionAssert.AreEqual(new[] { 32, 32, 32, 4 }, scorer.Batches.Take(4).ToArray(), "read ahead 8 batches of 4, then the rest");
    }

    [TestMethod]
    public void RowMapperScoresOneRowAtATime()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Input { Text = "abc" }, new Input { Text = "hello" } });
        var scorer = new LengthScorer(batchSize: 8);
        var mapper = new ScoringRowMapper(data.Schema, scorer);
        using var cursor = data.GetRowCursor(mapper.GetDependencies([mapper.OutputSchema["Length"]]));
        var row = mapper.GetRow(cursor, [mapper.OutputSchema["Length"]]);
        var getter = row.GetGetter<float>(mapper.OutputSchema["Length"]);
        var values = new List<float>();
        while (cursor.MoveNext()) { float v = 0; getter(ref v); getter(ref v); values.Add(v); }
        CollectionAssert.AreEqual(new[] { 3f, 5f }, values);
        CollectionAssert.AreEqual(new[] { 1, 1 }, scorer.Batches, "each row scored once, even when read twice");
    }

    [TestMethod]
    public void MissingInputColumnIsANamedError()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(new[] { new { Other = 1f } });
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ScoringDataView(data, new LengthScorer(4)));
        StringAssert.Contains(error.Message, "Text");
    }
}
