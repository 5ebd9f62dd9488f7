using Microsoft.ML;
using MLNet.FineTune.Tasks.TextClassification;
using MLNet.FineTune.Tests.Peft;

namespace MLNet.FineTune.Tests.Tasks.TextClassification;

/// <summary>
/// A row's score and the rows scored with it (issue 15), on the real all-MiniLM-L6-v2 (a model large enough for
/// bfloat16 rounding to show): the same 50 sentences of varied length scored one at a time (PredictionEngine) and in
/// padded batches of 32 (Transform). <see cref="ScoringPrecision.Float32"/> agrees to 1e-5 in probability for a
/// classifier trained with a bfloat16 base, and model.zip keeps the base in bfloat16 and scores the same after a
/// reload; the default, <see cref="ScoringPrecision.AsTrained"/>, keeps the bfloat16 base and shows the dependence
/// Float32 removes.
/// </summary>
[TestClass]
public sealed class BatchInvarianceTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ReviewPrediction { public float Probability { get; set; } public bool PredictedLabel { get; set; } }

    private const int SentenceCount = 50, BatchSize = 32, TrainRows = 16;
    private const double Tolerance = 1e-5;

    private static List<Review> Sentences()
    {
        var random = new Random(5);
        string[] words = TinyModels.Words;
        // 3..40 words: batches of 32 pad most rows, some by tens of positions.
        return Enumerable.Range(0, SentenceCount).Select(i => new Review
        {
            Text = string.Join(" ", Enumerable.Range(0, 3 + random.Next(38)).Select(_ => words[random.Next(words.Length)])),
            Label = i % 2 == 0,
        }).ToList();
    }

    /// <summary>LoRA on MiniLM, bf16 base, one step of 16 rows (B becomes non-zero, so the adapter matters).</summary>
    private static TextClassificationTransformer Fit(MLContext ml, List<Review> rows, ScoringPrecision? precision)
    {
        var options = new TextClassificationOptions
        {
            BaseModel = DefaultModels.MiniLM(), MaxSequenceLength = 64, Epochs = 1, BatchSize = TrainRows, Seed = 3,
            Precision = TrainingPrecision.BFloat16, ScoringBatchSize = BatchSize,
        };
        if (precision is { } p) options.ScoringPrecision = p;
        return ml.FineTune().Lora(options, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 })
            .Fit(ml.Data.LoadFromEnumerable(rows.Take(TrainRows)));
    }

    /// <summary>(alone, batched) predictions of every row.</summary>
    private static (ReviewPrediction[] Alone, ReviewPrediction[] Batched) Score(MLContext ml, ITransformer model, List<Review> rows)
    {
        var engine = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model);
        var alone = rows.Select(r => engine.Predict(r)).ToArray();
        var batched = ml.Data.CreateEnumerable<ReviewPrediction>(model.Transform(ml.Data.LoadFromEnumerable(rows)), reuseRowObject: false).ToArray();
        return (alone, batched);
    }

    private static double MaxDifference(ReviewPrediction[] a, ReviewPrediction[] b) =>
        a.Zip(b).Max(p => Math.Abs((double)p.First.Probability - p.Second.Probability));

    [TestMethod]
    public void SentencesScoredAloneAndInBatchesOf32AgreeInFloat32Scoring()
    {
        var ml = new MLContext(seed: 1);
        var rows = Sentences();
        var model = Fit(ml, rows, ScoringPrecision.Float32);
        var (alone, batched) = Score(ml, model, rows);
        double difference = MaxDifference(alone, batched);
        Console.WriteLine($"{SentenceCount} sentences, MiniLM with a bf16-trained base scored in float32: max |P(alone) - P(batch of {BatchSize})| = {difference:E2}");
        Assert.IsTrue(difference <= Tolerance, $"alone vs batched probabilities differ by {difference:E2} > {Tolerance:E0}");

        // model.zip stores the base as trained (bfloat16) and the reloaded model scores exactly the same.
        string zip = Path.Combine(Path.GetTempPath(), $"mlnet-finetune-invariance-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, ml.Data.LoadFromEnumerable(rows).Schema, zip);
            var reloaded = (TextClassificationTransformer)ml.Model.Load(zip, out _);
            Assert.AreEqual(TorchSharp.torch.ScalarType.BFloat16, reloaded.Adapted.BaseDType, "model.zip keeps the base in the dtype it was trained in");
            Assert.AreEqual(ScoringPrecision.Float32, reloaded.ScoringPrecision);
            var (reloadedAlone, _) = Score(ml, reloaded, rows);
            double reloadDifference = MaxDifference(alone, reloadedAlone);
            Console.WriteLine($"after a model.zip reload: max |P - P(reloaded)| = {reloadDifference:E2}");
            Assert.AreEqual(0.0, reloadDifference, "a reloaded model must score as the fitted one");
        }
        finally
        {
            File.Delete(zip);
        }
    }

    [TestMethod]
    public void DefaultScoringKeepsTheBfloat16BaseWhoseScoresMoveWithTheBatch()
    {
        var ml = new MLContext(seed: 1);
        var rows = Sentences();
        var model = Fit(ml, rows, precision: null);
        Assert.AreEqual(ScoringPrecision.AsTrained, model.ScoringPrecision, "the default scores as trained");
        var frozen = model.Adapted.Model.named_parameters().Where(p => !p.parameter.requires_grad).Select(p => p.parameter.dtype).Distinct().ToList();
        CollectionAssert.AreEqual(new[] { TorchSharp.torch.ScalarType.BFloat16 }, frozen, "AsTrained scores with the base as trained");
        var (alone, batched) = Score(ml, model, rows);
        double difference = MaxDifference(alone, batched);
        int labelsChanged = alone.Zip(batched).Count(p => p.First.PredictedLabel != p.Second.PredictedLabel);
        Console.WriteLine($"{SentenceCount} sentences, MiniLM bf16 base scored in bf16: max |P(alone) - P(batch of {BatchSize})| = {difference:E2}, predicted labels changed: {labelsChanged}");
        // The dependence Float32 scoring removes: were it absent here, the float32 test above would prove nothing.
        Assert.IsTrue(difference > Tolerance, $"bf16 scores alone and batched differ by only {difference:E2}: the test model no longer shows the dependence");
        Assert.IsTrue(difference < 1e-2, $"bf16 batch dependence {difference:E2} is larger than rounding explains");
    }
}
