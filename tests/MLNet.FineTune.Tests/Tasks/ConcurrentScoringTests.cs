using Microsoft.ML;
using MLNet.FineTune.Tests.Peft;

namespace MLNet.FineTune.Tests.Tasks;

/// <summary>
/// docs/getting-started.md: "several engines over one model are safe": threads with one PredictionEngine each over
/// the same fitted transformer get exactly the scores one engine gets alone. (The model also serialises its forward
/// passes; libtorch's inference happened to stay correct without that lock here, so this checks the promise, not the lock.)
/// </summary>
[TestClass]
public sealed class ConcurrentScoringTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ReviewPrediction { public float Score { get; set; } }

    [TestMethod]
    public void EnginesOnSeveralThreadsOverOneModelScoreAsOneEngineAlone()
    {
        var ml = new MLContext(seed: 1);
        string[] words = ["good", "bad", "great", "awful", "fine", "poor"];
        var rows = Enumerable.Range(0, 48).Select(i => new Review { Text = $"the {words[i % 6]} film number {i}", Label = i % 2 == 0 }).ToList();
        var model = ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 1, BatchSize = 16,
            Precision = TrainingPrecision.Float32, Seed = 3,
        }, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }).Fit(ml.Data.LoadFromEnumerable(rows));

        var alone = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model);
        var expected = rows.Select(r => alone.Predict(r).Score).ToArray();

        const int threads = 4, rounds = 3;
        var actual = new float[threads][];
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            var engine = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model); // one engine per thread
            var scores = new float[rows.Count];
            for (int round = 0; round < rounds; round++)
                for (int i = 0; i < rows.Count; i++) scores[(i + t * 7) % rows.Count] = engine.Predict(rows[(i + t * 7) % rows.Count]).Score;
            actual[t] = scores;
        });
        double maxError = actual.Max(scores => scores.Zip(expected).Max(p => Math.Abs(p.First - p.Second)));
        Console.WriteLine($"{threads} threads x {rounds} x {rows.Count} predictions: max |score - single-engine score| {maxError:E2}");
        Assert.AreEqual(0.0, maxError, "concurrent engines over one model must give the single engine's scores");
    }
}
