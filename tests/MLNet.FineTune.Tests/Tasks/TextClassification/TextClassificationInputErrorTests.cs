using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Tasks.TextClassification;

/// <summary>
/// Bad text-classification input fails with an error that names the row, the data, the column and the value: empty
/// texts and text pairs (training, validation; scoring scores them, see ScoringEmptyTextTests) and every kind of label problem (missing or mistyped column,
/// one class, validation labels of another type or unseen in training, missing keys). None of these reach training.
/// </summary>
[TestClass]
public sealed class TextClassificationInputErrorTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class Topic { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }
    public sealed class Pair { public string Premise { get; set; } = ""; public string Answer { get; set; } = ""; public bool Label { get; set; } }
    public sealed class Rated { public string Text { get; set; } = ""; public float Label { get; set; } }

    private static TextClassificationOptions Options(IDataView? validation = null) => new()
    {
        BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32, Seed = 3,
        ValidationSet = validation,
    };

    private static List<Review> Reviews(int count) =>
        Enumerable.Range(0, count).Select(i => new Review { Text = i % 2 == 0 ? "the movie was good" : "the food was awful", Label = i % 2 == 0 }).ToList();

    private static List<Pair> Pairs(int count) =>
        Enumerable.Range(0, count).Select(i => new Pair { Premise = "the movie was good", Answer = i % 2 == 0 ? "we agree" : "we disagree", Label = i % 2 == 0 }).ToList();

    private static TextClassificationOptions PairOptions(IDataView? validation = null)
    {
        var options = Options(validation);
        options.TextColumnName = "Premise";
        options.TextPairColumnName = "Answer";
        return options;
    }

    [TestMethod]
    public void EmptyTextPairsAreNamedInTrainingValidationAndScoring()
    {
        var ml = new MLContext(seed: 1);
        var blankPair = Pairs(8);
        blankPair[3].Answer = " ";
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(PairOptions()).Fit(ml.Data.LoadFromEnumerable(blankPair)),
            "Row 3 of the training data", "column 'Answer'", "Remove or fill");
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(PairOptions(ml.Data.LoadFromEnumerable(blankPair))).Fit(ml.Data.LoadFromEnumerable(Pairs(8))),
            "Row 3 of the validation data", "column 'Answer'");

        // Scoring is not training: an empty text is scored as the tokenizer encodes it (ScoringEmptyTextTests), so one
        // empty row in live data does not fail the whole Transform.
        var model = ml.FineTune().Lora(PairOptions()).Fit(ml.Data.LoadFromEnumerable(Pairs(8)));
        Assert.IsTrue(model.Transform(ml.Data.LoadFromEnumerable(blankPair)).GetColumn<float>("Score").All(float.IsFinite));
        var engine = ml.Model.CreatePredictionEngine<Pair, ReviewPrediction>(model);
        Assert.IsTrue(float.IsFinite(engine.Predict(new Pair { Premise = "", Answer = "we agree" }).Score));
    }

    public sealed class ReviewPrediction { public bool PredictedLabel { get; set; } public float Score { get; set; } }

    [TestMethod]
    public void MissingOrMistypedLabelColumnsAreNamed()
    {
        var ml = new MLContext(seed: 1);
        var reviews = ml.Data.LoadFromEnumerable(Reviews(8));
        var options = Options();
        options.LabelColumnName = "Sentiment";
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(options).Fit(reviews), "label column 'Sentiment'", "'Label' (Boolean)");

        var floats = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(i => new Rated { Text = "the movie was good", Label = i % 2 }).ToList());
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options()).Fit(floats), "label column 'Label'", "Single", "MapValueToKey");
    }

    [TestMethod]
    public void TrainingLabelsOfOneClassAreRefused()
    {
        var ml = new MLContext(seed: 1);
        var spam = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(_ => new Topic { Text = "buy now", Label = "spam" }).ToList());
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(spam), "column 'Label'", "(spam)", "at least 2 classes");

        // A bool column always has two classes in name: all rows true is one class in fact.
        var allTrue = Reviews(8).Select(r => new Review { Text = r.Text, Label = true }).ToList();
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(allTrue)), "column 'Label'", "(True)", "at least 2 classes");

        // Keys: one value seen, whatever the key count.
        var topics = ml.Data.LoadFromEnumerable(new[] { "red", "green", "red", "red" }.Select(c => new Topic { Text = $"the {c} one", Label = c }).ToList());
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(topics);
        var onlyRed = keyMap.Transform(ml.Data.LoadFromEnumerable(Enumerable.Range(0, 4).Select(_ => new Topic { Text = "the red one", Label = "red" }).ToList()));
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(onlyRed), "column 'Label'", "(red)");
    }

    [TestMethod]
    public void ValidationLabelsOfAnotherTypeOrUnseenInTrainingAreNamed()
    {
        var ml = new MLContext(seed: 1);
        var reviews = ml.Data.LoadFromEnumerable(Reviews(8));
        var stringLabels = ml.Data.LoadFromEnumerable(new[] { new Topic { Text = "the movie was good", Label = "positive" } });
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options(stringLabels)).Fit(reviews),
            "label column 'Label' in the validation data", "Boolean", "String");

        var colors = ml.Data.LoadFromEnumerable(new[] { "red", "green", "blue", "red" }.Select(c => new Topic { Text = $"the {c} one", Label = c }).ToList());
        var purple = ml.Data.LoadFromEnumerable(new[] { new Topic { Text = "the red one", Label = "red" }, new Topic { Text = "the purple one", Label = "purple" } });
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(purple)).Fit(colors), "Row 1 of the validation data", "'purple'", "label column 'Label'", "blue, green, red");
    }

    [TestMethod]
    public void MissingKeysAndOtherKeyCountsAreNamed()
    {
        var ml = new MLContext(seed: 1);
        Topic T(string label) => new() { Text = $"the {label} one", Label = label };
        var train = ml.Data.LoadFromEnumerable(new[] { T("red"), T("green"), T("blue"), T("red") });
        var keyMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(train);

        // A label the key mapping does not know becomes the missing key (0).
        var unknown = keyMap.Transform(ml.Data.LoadFromEnumerable(new[] { T("red"), T("purple") }));
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(unknown)).Fit(keyMap.Transform(train)), "Row 1 of the validation data", "missing key", "label column 'Label'");
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(unknown), "Row 1 of the training data", "missing key");

        // Validation keys from another mapping (two keys, not three).
        var otherMap = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(new[] { T("red"), T("green") }));
        var twoKeys = otherMap.Transform(ml.Data.LoadFromEnumerable(new[] { T("red") }));
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(Options(twoKeys)).Fit(keyMap.Transform(train)),
            "label column 'Label' in the validation data", "Key<3>", "Key<UInt32, 0-1>");

        // Three keys from a mapping fitted on the validation rows alone (blue, green, red in another order): same type,
        // other meaning. Training's mapping: red 1, green 2, blue 3; this one: blue 1, red 2, green 3.
        var reordered = ml.Transforms.Conversion.MapValueToKey("Label").Fit(ml.Data.LoadFromEnumerable(new[] { T("blue"), T("red"), T("green") }));
        var reorderedValidation = reordered.Transform(ml.Data.LoadFromEnumerable(new[] { T("red"), T("blue") }));
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(reorderedValidation)).Fit(keyMap.Transform(train)),
            "label column 'Label'", "validation data", "key 1 is 'blue' there and 'red' in training", "MapValueToKey");
        // The training data's own mapping applied to the validation rows is accepted (no error before training starts).
        var sameMapping = keyMap.Transform(ml.Data.LoadFromEnumerable(new[] { T("red"), T("blue") }));
        var model = ml.FineTune().Lora(Options(sameMapping)).Fit(keyMap.Transform(train));
        CollectionAssert.AreEqual(new[] { "red", "green", "blue" }, model.Labels.ToArray());
    }
}
