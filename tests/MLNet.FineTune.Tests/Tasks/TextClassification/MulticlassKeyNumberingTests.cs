using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Tasks.TextClassification;

/// <summary>
/// Multiclass evaluation must not depend on how the user numbers the classes: string labels used to be numbered in
/// sorted order while MapValueToKey numbers them in order of appearance, so a perfect model evaluated after
/// MapValueToKey scored 0% accuracy. The documented path (MapValueToKey, then the estimator, then Evaluate) must
/// work, also with a ValidationSet of raw string labels (which does not pass through the pipeline's MapValueToKey).
/// </summary>
[TestClass]
public sealed class MulticlassKeyNumberingTests
{
    public sealed class Topic { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }

    // First appearance: sports, weather, music; sorted: music, sports, weather. Every word names its class.
    private static readonly string[] Classes = ["sports", "weather", "music"];
    private static readonly string[][] Words = [["good", "great", "excellent"], ["red", "green", "blue"], ["cat", "dog", "bird"]];

    private static List<Topic> Topics(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(i => new Topic { Text = $"{Words[i % 3][rng.Next(3)]} {Words[i % 3][rng.Next(3)]}", Label = Classes[i % 3] }).ToList();
    }

    private static TextClassificationOptions Options(IDataView? validation = null) => new()
    {
        BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 20, BatchSize = 8, LearningRate = 2e-2,
        Precision = TrainingPrecision.Float32, Seed = 3, ValidationSet = validation,
    };

    [TestMethod]
    public void RawStringLabels_EvaluatedAfterMapValueToKeyFittedOnTheTrainingData_ScoreWhatTheModelScores()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Topics(60, 1));
        var test = ml.Data.LoadFromEnumerable(Topics(30, 2));
        var model = ml.FineTune().Lora(Options(), new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }).Fit(train);
        var scored = model.Transform(test);

        // The model's own accuracy: argmax slot name against the label text.
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        scored.Schema["Score"].GetSlotNames(ref slotNames);
        var names = slotNames.DenseValues().Select(v => v.ToString()).ToArray();
        var labels = scored.GetColumn<string>("Label").ToArray();
        double own = scored.GetColumn<float[]>("Score").Select((s, i) => names[Array.IndexOf(s, s.Max())] == labels[i] ? 1.0 : 0.0).Average();

        // What getting-started.md told users: map the string labels to keys, then Evaluate.
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train).Transform(scored);
        var metrics = ml.MulticlassClassification.Evaluate(keyed);
        Console.WriteLine($"classes in slot order: {string.Join(", ", names)}; model's own accuracy {own:F3}; Evaluate after MapValueToKey: {metrics.MicroAccuracy:F3}");
        Assert.IsGreaterThan(0.9, own, "the task is separable: every word names its class");
        Assert.AreEqual(own, metrics.MicroAccuracy, 1e-9, "Evaluate must see the model's predictions, not renumbered classes");
    }

    [TestMethod]
    public void MapValueToKeyThenTheEstimatorThenEvaluate_WithARawValidationSet()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Topics(60, 1));
        var validation = ml.Data.LoadFromEnumerable(Topics(15, 3));   // raw string labels: not through the pipeline
        var test = ml.Data.LoadFromEnumerable(Topics(30, 2));
        var pipeline = ml.Transforms.Conversion.MapValueToKey("Label")
            .Append(ml.FineTune().Lora(Options(validation), new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }));
        var model = pipeline.Fit(train);
        var metrics = ml.MulticlassClassification.Evaluate(model.Transform(test));
        var validationAccuracy = model.LastTransformer.TrainingHistory!.Steps.Where(s => s.ValidationMetric is not null).Select(s => s.ValidationMetric!.Value).ToList();
        Console.WriteLine($"test accuracy {metrics.MicroAccuracy:F3}; validation accuracy per epoch: {string.Join(", ", validationAccuracy.Select(v => v.ToString("F3")))}");
        Assert.IsGreaterThan(0.9, metrics.MicroAccuracy);
        Assert.IsGreaterThan(0.9, validationAccuracy.Last(), "the validation rows are read with the training data's key numbering");
    }
}
