using Microsoft.ML;
using MLNet.FineTune.Tasks.TextClassification;
using static MLNet.FineTune.Tests.Tasks.FineTuning.BothTasks;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// <see cref="FineTuneOptions.InitialAdapter"/> continues only an adapter that means the same thing: one of the
/// estimator's method, and for a classifier one trained on the same labels in the same order (recorded beside the
/// adapter in task_labels.json; for an adapter saved by PEFT, the classifier's shape gives the class count).
/// </summary>
[TestClass]
public sealed class InitialAdapterTests
{
    private static TextClassificationOptions ClassifierOptions()
    {
        var options = (TextClassificationOptions)Options(BothTasks.TextClassification, TinyModels.BertTiny());
        options.Epochs = 1;
        return options;
    }

    /// <summary>Trains a classifier on <paramref name="train"/> and saves its adapter; returns the folder.</summary>
    private static string SavedAdapter(MLContext ml, IDataView train, MethodOptions? method = null)
    {
        var folder = NewFolder("adapter");
        Fit(ml, ClassifierOptions(), train, method).SaveAdapter(folder);
        return folder;
    }

    private static string Refusal(MLContext ml, string adapter, IDataView train, MethodOptions? method = null)
    {
        var options = ClassifierOptions();
        options.InitialAdapter = adapter;
        return NamedErrors.Expect<ArgumentException>(() => Fit(ml, options, train, method), "InitialAdapter").Message;
    }

    [TestMethod]
    public void AClassifiersAdapterRecordsItsLabelsAndRefusesAnotherSetOrOrder()
    {
        var ml = new MLContext(seed: 1);
        var adapter = SavedAdapter(ml, Topics(ml, 1, "negative", "positive"));
        var recorded = File.ReadAllText(Path.Combine(adapter, AdapterLabels.FileName));
        Console.WriteLine($"{AdapterLabels.FileName}: {recorded}");
        CollectionAssert.AreEqual(new[] { "negative", "positive" }, AdapterLabels.Read(adapter)!.ToArray());

        // Same number of classes: the classifier's shape fits, the meaning of its outputs does not.
        var otherSet = Refusal(ml, adapter, Topics(ml, 1, "bad", "good"));
        StringAssert.Contains(otherSet, "trained on 2 classes (negative, positive; recorded in task_labels.json)");
        StringAssert.Contains(otherSet, "'Label' of the training data has 2 classes (bad, good)");

        // Keys in order of appearance: the same classes, swapped.
        var swapped = Topics(ml, 1, "positive", "negative");
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(swapped).Transform(swapped);
        var otherOrder = Refusal(ml, adapter, keyed);
        StringAssert.Contains(otherOrder, "has 2 classes (positive, negative)");
        StringAssert.Contains(otherOrder, "another order");
    }

    [TestMethod]
    public void AnotherClassCountIsNamedInClassesWithOrWithoutRecordedLabels()
    {
        var ml = new MLContext(seed: 1);
        var adapter = SavedAdapter(ml, Topics(ml, 1, "negative", "neutral", "positive"));
        var twoClasses = Topics(ml, 1, "negative", "positive");
        StringAssert.Contains(Refusal(ml, adapter, twoClasses), "trained on 3 classes (negative, neutral, positive; recorded in task_labels.json)");

        // An adapter saved by PEFT records no labels: the classifier's shape is all there is.
        File.Delete(Path.Combine(adapter, AdapterLabels.FileName));
        var message = Refusal(ml, adapter, twoClasses);
        StringAssert.Contains(message, "holds a classifier for 3 classes ('base_model.model.classifier.weight' has shape [3, 32])");
        StringAssert.Contains(message, "has 2 classes (negative, positive)");
        Assert.DoesNotContain("another base model", message);
    }

    [TestMethod]
    public void AnAdapterOfAnotherMethodIsRefused()
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, BothTasks.TextClassification, 1);
        var ia3 = SavedAdapter(ml, train, new IA3Options());
        var lora = SavedAdapter(ml, train, Lora());

        var ia3AsLora = Refusal(ml, ia3, train, Lora());
        StringAssert.Contains(ia3AsLora, "holds an adapter of method IA3 (peft_type IA3 in adapter_config.json), but this estimator trains with LoRA");
        StringAssert.Contains(ia3AsLora, "ml.FineTune().IA3(...)");
        var loraAsDora = Refusal(ml, lora, train, new DoraOptions { Rank = 4, Dropout = 0 });
        StringAssert.Contains(loraAsDora, "holds an adapter of method LoRA (peft_type LORA in adapter_config.json), but this estimator trains with DoRA");

        // The matching method continues.
        var options = ClassifierOptions();
        options.InitialAdapter = ia3;
        var continued = Fit(ml, options, train, new IA3Options());
        Console.WriteLine($"IA3 continued from {ia3}: {continued.TrainableParameters}");
    }
}
