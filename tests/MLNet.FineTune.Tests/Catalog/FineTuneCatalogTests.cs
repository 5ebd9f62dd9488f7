using Microsoft.Data.Analysis;
using Microsoft.ML;

namespace MLNet.FineTune.Tests.Catalog;

[TestClass]
public sealed class FineTuneCatalogTests
{
    [TestMethod]
    public void EveryPlainParameterReachesTheOptions()
    {
        var ml = new MLContext(1);
        var validation = ml.Data.LoadFromEnumerable(new[] { new { Text = "x", Label = true } });
        var folder = TinyModels.BertTiny();

        var lora = ml.FineTune().Lora("Y", "Body", folder, rank: 5, alpha: 7, epochs: 4, batchSize: 9, learningRate: 0.003, maxSequenceLength: 33, validationSet: validation);
        AssertTask(lora.Options, "Y", "Body", folder, 4, 9, 0.003, 33, validation);
        var loraMethod = (LoraOptions)lora.Method;
        Assert.AreEqual(5, loraMethod.Rank);
        Assert.AreEqual(7, loraMethod.Alpha);

        var dora = ml.FineTune().Dora("Y", "Body", folder, rank: 6, alpha: 12, epochs: 2, batchSize: 3, learningRate: 0.001, maxSequenceLength: 20, validationSet: validation);
        AssertTask(dora.Options, "Y", "Body", folder, 2, 3, 0.001, 20, validation);
        Assert.IsInstanceOfType<DoraOptions>(dora.Method);
        Assert.AreEqual(6, ((DoraOptions)dora.Method).Rank);
        Assert.AreEqual(12, ((DoraOptions)dora.Method).Alpha);

        var adapters = ml.FineTune().Adapters("Y", "Body", folder, reductionFactor: 4, epochs: 3, batchSize: 5, learningRate: 0.002, maxSequenceLength: 40, validationSet: validation);
        AssertTask(adapters.Options, "Y", "Body", folder, 3, 5, 0.002, 40, validation);
        Assert.AreEqual(4, ((AdapterOptions)adapters.Method).ReductionFactor);

        var ia3 = ml.FineTune().IA3("Y", "Body", folder, epochs: 6, batchSize: 7, learningRate: 0.01, maxSequenceLength: 24, validationSet: validation);
        AssertTask(ia3.Options, "Y", "Body", folder, 6, 7, 0.01, 24, validation);
        Assert.IsInstanceOfType<IA3Options>(ia3.Method);

        var full = ml.FineTune().FullFineTune("Y", "Body", folder, epochs: 1, batchSize: 2, learningRate: 1e-5, maxSequenceLength: 12, validationSet: validation);
        AssertTask(full.Options, "Y", "Body", folder, 1, 2, 1e-5, 12, validation);
        Assert.IsInstanceOfType<FullFineTuneOptions>(full.Method);
    }

    private static void AssertTask(TextClassificationOptions o, string label, string text, string folder, int epochs, int batch, double lr, int maxLength, IDataView validation)
    {
        Assert.AreEqual(label, o.LabelColumnName);
        Assert.AreEqual(text, o.TextColumnName);
        Assert.AreEqual(folder, o.BaseModel);
        Assert.AreEqual(epochs, o.Epochs);
        Assert.AreEqual(batch, o.BatchSize);
        Assert.AreEqual(lr, o.LearningRate);
        Assert.AreEqual(maxLength, o.MaxSequenceLength);
        Assert.AreSame(validation, o.ValidationSet);
    }

    [TestMethod]
    public void InvalidOptionsAreNamed()
    {
        var ml = new MLContext(1);
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new TextClassificationOptions { BaseModel = TinyModels.BertTiny(), Epochs = 0 }));
        StringAssert.Contains(error.Message, "Epochs");
        var folder = Assert.ThrowsExactly<DirectoryNotFoundException>(() => ml.FineTune().Lora(new TextClassificationOptions { BaseModel = "/no/such/model" }));
        StringAssert.Contains(folder.Message, "/no/such/model");

        // The checks of the shared options hold for every task.
        var dropout = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new TextClassificationOptions { BaseModel = TinyModels.BertTiny(), Dropout = 1 }));
        StringAssert.Contains(dropout.Message, "Dropout");
        var qaDropout = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new QuestionAnsweringOptions { BaseModel = TinyModels.BertTiny(), Dropout = -0.1 }));
        StringAssert.Contains(qaDropout.Message, "Dropout");
        var empty = Directory.CreateTempSubdirectory("mlft-no-adapter-").FullName;
        try
        {
            var adapter = Assert.ThrowsExactly<FileNotFoundException>(() => ml.FineTune().Lora(new QuestionAnsweringOptions { BaseModel = TinyModels.BertTiny(), InitialAdapter = empty }));
            StringAssert.Contains(adapter.Message, "adapter_config.json");
            Console.WriteLine(string.Join("\n", error.Message, folder.Message, dropout.Message, qaDropout.Message, adapter.Message));
        }
        finally { Directory.Delete(empty); }
    }

    [TestMethod]
    public void TrainsFromADataFrameAndRejectsUnknownValidationLabels()
    {
        var ml = new MLContext(1);
        string[] colors = ["red", "green", "blue"];
        var frame = new DataFrame(
            new StringDataFrameColumn("Text", Enumerable.Range(0, 60).Select(i => $"the cat {colors[i % 3]}")),
            new StringDataFrameColumn("Label", Enumerable.Range(0, 60).Select(i => colors[i % 3])));
        var options = new TextClassificationOptions { BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 12, Epochs = 1, BatchSize = 16, Precision = TrainingPrecision.Float32 };
        var model = ml.FineTune().Lora(options).Fit(frame);
        Assert.AreEqual(3, model.Labels.Count);
        // Numbered in order of first appearance, as MapValueToKey numbers them (issue 14; was sorted order).
        CollectionAssert.AreEqual(new[] { "red", "green", "blue" }, model.Labels.ToArray());

        options.ValidationSet = new DataFrame(new StringDataFrameColumn("Text", ["the dog"]), new StringDataFrameColumn("Label", ["purple"]));
        var error = Assert.ThrowsExactly<InvalidDataException>(() => ml.FineTune().Lora(options).Fit(frame));
        StringAssert.Contains(error.Message, "'purple'");
        Console.WriteLine(error.Message);
    }
}
