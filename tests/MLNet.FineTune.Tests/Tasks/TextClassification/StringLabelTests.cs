using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Tests.Peft;

namespace MLNet.FineTune.Tests.Tasks.TextClassification;

/// <summary>
/// docs/getting-started.md: a raw string label (no MapValueToKey in front) makes a multiclass classifier whose Score
/// slots are named by the labels and whose PredictedLabel is a key with the labels as key values.
/// </summary>
[TestClass]
public sealed class StringLabelTests
{
    public sealed class Topic { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }

    [TestMethod]
    public void RawStringLabelsNameTheScoreSlotsAndThePredictedKeys()
    {
        var ml = new MLContext(seed: 1);
        string[] labels = ["sports", "weather", "music"];
        var rows = Enumerable.Range(0, 60).Select(i => new Topic { Text = $"{labels[i % 3]} news item {i}", Label = labels[i % 3] }).ToList();
        var model = ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 1, BatchSize = 16,
            Precision = TrainingPrecision.Float32, Seed = 3,
        }, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }).Fit(ml.Data.LoadFromEnumerable(rows));

        var scored = ml.Transforms.Conversion.MapKeyToValue("PredictedText", "PredictedLabel").Fit(model.Transform(ml.Data.LoadFromEnumerable(rows)))
            .Transform(model.Transform(ml.Data.LoadFromEnumerable(rows)));
        var slotNames = default(VBuffer<ReadOnlyMemory<char>>);
        scored.Schema["Score"].GetSlotNames(ref slotNames);
        var keyValues = default(VBuffer<ReadOnlyMemory<char>>);
        scored.Schema["PredictedLabel"].GetKeyValues(ref keyValues);
        var slots = slotNames.DenseValues().Select(v => v.ToString()).ToArray();
        var keys = keyValues.DenseValues().Select(v => v.ToString()).ToArray();
        Console.WriteLine($"Score slots: {string.Join(", ", slots)}; PredictedLabel key values: {string.Join(", ", keys)}; model labels: {string.Join(", ", model.Labels)}");
        CollectionAssert.AreEquivalent(labels, slots);
        CollectionAssert.AreEqual(slots, keys, "slot i and key i + 1 must name the same class");
        CollectionAssert.AreEqual(model.Labels.ToArray(), slots);

        // PredictedLabel is the argmax of Score, and mapping the key back gives that slot's name.
        var scores = scored.GetColumn<float[]>("Score").ToArray();
        var predicted = scored.GetColumn<uint>("PredictedLabel").ToArray();
        var text = scored.GetColumn<string>("PredictedText").ToArray();
        for (int i = 0; i < scores.Length; i++)
        {
            int argmax = Array.IndexOf(scores[i], scores[i].Max());
            Assert.AreEqual((uint)(argmax + 1), predicted[i], $"row {i}: key {predicted[i]} is not the argmax slot {argmax} + 1");
            Assert.AreEqual(slots[argmax], text[i], $"row {i}");
        }
    }
}
