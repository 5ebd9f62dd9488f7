using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Tasks.TextClassification;

namespace MLNet.FineTune.Tests.Tasks.TextClassification;

/// <summary>
/// Fine-tunes through the public ML.NET surface: the real pretrained MiniLM (from NuGet) where learning must show,
/// the tiny random BERT where plumbing is checked (its random [CLS] barely sees the other tokens, so it learns only
/// the easiest tasks).
/// </summary>
[TestClass]
public sealed class TextClassificationEndToEndTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ReviewPrediction { public bool PredictedLabel { get; set; } public float Score { get; set; } public float Probability { get; set; } }
    public sealed class Topic { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }
    public sealed class Pair { public string Premise { get; set; } = ""; public string Answer { get; set; } = ""; public bool Label { get; set; } }

    private static readonly string[] Positive = ["good", "great", "excellent", "wonderful", "lovely"];
    private static readonly string[] Negative = ["bad", "awful", "terrible", "boring", "poor"];
    private static readonly string[] Subjects = ["movie", "food", "service", "room", "book", "phone"];

    private static List<Review> Reviews(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i =>
        {
            bool positive = i % 2 == 0;
            var adjective = (positive ? Positive : Negative)[rng.Next(5)];
            var text = $"the {Subjects[rng.Next(Subjects.Length)]} was {(rng.Next(2) == 0 ? "very " : "")}{adjective} {(rng.Next(2) == 0 ? "today" : "")}".Trim();
            return new Review { Text = text, Label = positive };
        }).ToList();
    }

    private static TextClassificationOptions Options(IDataView? validation = null) => new()
    {
        BaseModel = TinyModels.BertTiny(),
        MaxSequenceLength = 16, Epochs = 10, BatchSize = 16, LearningRate = 1e-2, WarmupRatio = 0.1,
        ValidationSet = validation, Precision = TrainingPrecision.Float32, Seed = 3,
    };

    /// <summary>The pretrained MiniLM, briefly: bf16 base on CPUs that have it, 32 tokens.</summary>
    private static TextClassificationOptions MiniLmOptions(IDataView? validation = null) => new()
    {
        BaseModel = DefaultModels.MiniLM(),
        MaxSequenceLength = 32, Epochs = 2, BatchSize = 16, ValidationSet = validation, Seed = 3,
    };

    private static LoraOptions AllLinearLora() => new() { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = ["query", "key", "value", "dense"] };

    [TestMethod]
    public void BinaryLoraLearnsAndEvaluatesWithMLNetsEvaluator()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(128, 1));
        var test = ml.Data.LoadFromEnumerable(Reviews(60, 2));
        var options = MiniLmOptions(test);
        // After 2 epochs the mean of the last 3 losses sat at 0.47-0.57 over seeds 1-6 (the bound, 0.7 x 0.69, is 0.48),
        // with libtorch's dropout and the library's alike; the third epoch is where it falls: 0.05-0.12 on every seed.
        options.Epochs = 3;
        var model = ml.FineTune().Lora(options, new LoraOptions { TargetModules = ["query", "key", "value", "dense"] }).Fit(train);

        var steps = model.TrainingHistory!.Steps;
        double firstLoss = steps.Take(3).Average(s => s.Loss), lastLoss = steps.TakeLast(3).Average(s => s.Loss);
        var metrics = ml.BinaryClassification.Evaluate(model.Transform(test));
        Console.WriteLine($"loss {firstLoss:F3} -> {lastLoss:F3}; accuracy {metrics.Accuracy:F3}, AUC {metrics.AreaUnderRocCurve:F3}, F1 {metrics.F1Score:F3}; {model.TrainableParameters}");
        Assert.IsTrue(lastLoss < firstLoss * 0.7, $"loss did not fall: {firstLoss} -> {lastLoss}");
        Assert.IsTrue(metrics.Accuracy > 0.8, $"accuracy {metrics.Accuracy} does not beat chance (0.5) clearly");
    }

    [TestMethod]
    public void ThreeClassStringLabelsMapBackThroughKeyValues()
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(5);
        string[] colors = ["red", "green", "blue"];
        List<Topic> Make(int n) => Enumerable.Range(0, n).Select(i => new Topic
        {
            Label = colors[i % 3],
            Text = $"{Subjects[rng.Next(Subjects.Length)]} {colors[i % 3]} {(rng.Next(2) == 0 ? "today" : "yesterday")}",
        }).ToList();
        var train = ml.Data.LoadFromEnumerable(Make(150));
        var test = ml.Data.LoadFromEnumerable(Make(60));

        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.FineTune().Lora(Options(), AllLinearLora()))
            .Append(ml.Transforms.Conversion.MapKeyToValue("PredictedText", "PredictedLabel"));
        var model = pipeline.Fit(train);
        var scored = model.Transform(test);
        var metrics = ml.MulticlassClassification.Evaluate(scored);
        var predicted = scored.GetColumn<string>("PredictedText").ToArray();
        var truth = test.GetColumn<string>("Label").ToArray();
        double agreement = predicted.Zip(truth).Count(p => p.First == p.Second) / (double)truth.Length;
        Console.WriteLine($"macro accuracy {metrics.MacroAccuracy:F3}, micro {metrics.MicroAccuracy:F3}, log-loss {metrics.LogLoss:F3}; mapped-back agreement {agreement:F3}");
        Assert.IsTrue(metrics.MicroAccuracy > 0.6, $"accuracy {metrics.MicroAccuracy} does not beat chance (0.33) clearly");
        Assert.AreEqual(metrics.MicroAccuracy, agreement, 1e-9, "MapKeyToValue must give back the original labels");
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        scored.Schema["Score"].GetSlotNames(ref slotNames);
        CollectionAssert.AreEquivalent(colors, slotNames.DenseValues().Select(v => v.ToString()).ToArray());
    }

    [TestMethod]
    public void SentencePairsUseTheSecondText()
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(9);
        List<Pair> Make(int n) => Enumerable.Range(0, n).Select(i => new Pair
        {
            Premise = $"the {Subjects[rng.Next(Subjects.Length)]} is {(rng.Next(2) == 0 ? Positive : Negative)[rng.Next(5)]}",
            Answer = i % 2 == 0 ? "we agree" : "we disagree",
            Label = i % 2 == 0,
        }).ToList();
        var train = ml.Data.LoadFromEnumerable(Make(128));
        var test = ml.Data.LoadFromEnumerable(Make(60));
        var options = MiniLmOptions();
        options.TextColumnName = "Premise";
        options.TextPairColumnName = "Answer";
        var model = ml.FineTune().Lora(options, new LoraOptions { TargetModules = ["query", "key", "value", "dense"] }).Fit(train);
        var metrics = ml.BinaryClassification.Evaluate(model.Transform(test));
        Console.WriteLine($"pair accuracy {metrics.Accuracy:F3}");
        Assert.IsTrue(metrics.Accuracy > 0.8, $"accuracy {metrics.Accuracy}: the pair's text did not reach the model");
    }

    [TestMethod]
    [DataRow(BaseModelStorage.SelfContained)]
    [DataRow(BaseModelStorage.ByReference)]
    public void ModelZipRoundTripGivesIdenticalScoresAndPredictionEngineEqualsTransform(BaseModelStorage storage)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(64, 1));
        var test = ml.Data.LoadFromEnumerable(Reviews(20, 2));
        var options = Options();
        options.Epochs = 1;
        options.BaseModelStorage = storage;
        options.Precision = TrainingPrecision.BFloat16; // also covers a bf16 base in the zip
        var model = ml.FineTune().Dora(options, new DoraOptions { Rank = 4, Dropout = 0 }).Fit(train);
        var before = model.Transform(test).GetColumn<float>("Score").ToArray();

        var path = Path.Combine(Path.GetTempPath(), $"mlft-tc-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, train.Schema, path);
            var ml2 = new MLContext(seed: 2);
            var loaded = ml2.Model.Load(path, out var schema);
            var after = loaded.Transform(ml2.Data.LoadFromEnumerable(Reviews(20, 2))).GetColumn<float>("Score").ToArray();
            double diff = before.Zip(after).Max(p => Math.Abs(p.First - p.Second));
            Console.WriteLine($"{storage}: zip {new FileInfo(path).Length / 1024} KiB, max |score difference| {diff:E2}");
            Assert.AreEqual(0.0, diff, "scores after reload must be identical");

            // The parameter counts are numbers a caller can report (not only PEFT's printed line), and survive the zip.
            var counts = model.TrainableParameters;
            var loadedCounts = ((TextClassificationTransformer)loaded).TrainableParameters;
            Console.WriteLine($"trained: {counts}; reloaded: {loadedCounts}");
            Assert.IsTrue(counts.Trainable > 0 && counts.Trainable < counts.Total, $"DoRA trains a part of the model: {counts}");
            Assert.AreEqual(counts, loadedCounts);

            var engine = ml2.Model.CreatePredictionEngine<Review, ReviewPrediction>(loaded);
            var rows = Reviews(20, 2);
            for (int i = 0; i < rows.Count; i++)
                Assert.AreEqual(before[i], engine.Predict(rows[i]).Score, 1e-6f, $"PredictionEngine differs from Transform at row {i}");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void BadInputGivesNamedErrors()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(10, 1));
        var wrongColumn = Options();
        wrongColumn.TextColumnName = "Sentence";
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(wrongColumn).Fit(train));
        StringAssert.Contains(missing.Message, "'Sentence'");

        var numbers = ml.Data.LoadFromEnumerable(new[] { new { Text = 1.5f, Label = true } });
        var notText = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options()).Fit(numbers));
        StringAssert.Contains(notText.Message, "'Text'");
        StringAssert.Contains(notText.Message, "expected String");

        var empty = ml.Data.LoadFromEnumerable(new List<Review>());
        var noRows = Assert.ThrowsExactly<InvalidOperationException>(() => ml.FineTune().Lora(Options()).Fit(empty));
        StringAssert.Contains(noRows.Message, "empty");

        var blank = ml.Data.LoadFromEnumerable(new[] { new Review { Text = "good", Label = true }, new Review { Text = "  ", Label = false } });
        var blankText = Assert.ThrowsExactly<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(blank));
        StringAssert.Contains(blankText.Message, "Row 1");
        Console.WriteLine(string.Join("\n", missing.Message, notText.Message, noRows.Message, blankText.Message));
    }
}
