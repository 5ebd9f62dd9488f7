using Microsoft.ML;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Tasks.FineTuning;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft.ScaleOnly;

/// <summary>
/// A method added from outside the library (this folder plus one registry line) trains through <c>ml.FineTune()</c>
/// on the tiny BERT, saves an adapter folder that reads back as its own options, continues from that folder, and
/// round-trips through model.zip with identical scores.
/// </summary>
[TestClass]
public sealed class ScaleOnlyMethodTests
{
    [TestMethod]
    public void AToyMethodTrainsSavesAndReloadsThroughTheRegistry()
    {
        ScaleOnlyMethod.EnsureRegistered();
        var ml = new MLContext(seed: 1);
        var train = BothTasks.Data(ml, BothTasks.TextClassification, 1);
        var test = BothTasks.Data(ml, BothTasks.TextClassification, 2);
        var options = (TextClassificationOptions)BothTasks.Options(BothTasks.TextClassification, TinyModels.BertTiny());
        options.LearningRate = null;   // the method's default (1e-2)
        var model = ml.FineTune().TextClassification(options, new ScaleOnlyOptions()).Fit(train);

        var peft = model.Adapted.Peft;
        var layers = peft.Layers.Values.Cast<ScaleOnlyLinear>().ToList();
        var steps = model.TrainingHistory!.Steps;
        double moved = layers.Max(l => (l.Scale - 1).abs().max().item<float>());
        Console.WriteLine($"scale-only: {peft.Layers.Count} layers ({string.Join(", ", peft.Layers.Keys.Take(2))}, ...), {model.TrainableParameters}; " +
            $"{steps.Count} steps, loss {steps[0].Loss:F4} -> {steps[^1].Loss:F4}; max |s - 1| after training {moved:E2}");
        Assert.AreEqual(4, peft.Layers.Count, "the family's default targets: query and value of both layers");
        Assert.IsTrue(peft.Layers.Keys.All(k => k.EndsWith(".query") || k.EndsWith(".value")));
        long scales = layers.Sum(l => l.OutFeatures);
        long head = peft.SavedModules.Sum(p => ModuleSurgery.Get(model.Adapted.Model, p).parameters().Sum(t => t.numel()));
        Assert.AreEqual(scales + head, model.TrainableParameters.Trainable, "only the scales and the head train");
        Assert.IsTrue(steps.All(s => double.IsFinite(s.Loss)));
        Assert.IsGreaterThan(1e-4, moved, "training must move the scales");

        // The adapter file: the registry writes and reads the method's own key.
        var folder = BothTasks.NewFolder("scale-only");
        model.SaveAdapter(folder);
        var config = File.ReadAllText(Path.Combine(folder, PeftConfigJson.FileName));
        StringAssert.Contains(config, "\"peft_type\": \"SCALE_ONLY\"");
        StringAssert.Contains(config, "\"initial_scale\": 1");
        var read = PeftConfigJson.Read(folder);
        Assert.IsInstanceOfType<ScaleOnlyOptions>(read);
        CollectionAssert.AreEqual(new[] { "query", "value" }, read.TargetModules!.ToArray());
        var saved = PeftAdapterFile.ReadWeights(folder);
        var live = peft.AdapterStateDict();
        CollectionAssert.AreEquivalent(live.Keys.ToArray(), saved.Keys.ToArray());
        foreach (var (key, tensor) in live) Assert.AreEqual(0f, (tensor.cpu() - saved[key]).abs().max().item<float>(), $"{key} differs in the file");

        // Continuing from the folder starts from the saved scales (a negligible learning rate keeps them).
        var again = (TextClassificationOptions)BothTasks.Options(BothTasks.TextClassification, TinyModels.BertTiny());
        again.InitialAdapter = folder;
        again.LearningRate = 1e-12;
        again.Epochs = 1;
        var continued = ml.FineTune().TextClassification(again, new ScaleOnlyOptions()).Fit(train);
        double fromFile = continued.Adapted.Peft.Layers.Zip(peft.Layers).Max(p =>
            (((ScaleOnlyLinear)p.First.Value).Scale - ((ScaleOnlyLinear)p.Second.Value).Scale).abs().max().item<float>());
        Console.WriteLine($"continued from the adapter folder: max |s - saved s| {fromFile:E2}");
        Assert.IsLessThan(1e-6, fromFile);

        // model.zip: the method's config is written by the registry and read back to the same method.
        var before = BothTasks.Scores(model, test);
        var zip = Path.Combine(folder, "model.zip");
        ml.Model.Save(model, train.Schema, zip);
        var loaded = (FineTunedTransformer)new MLContext(seed: 2).Model.Load(zip, out _);
        Assert.IsInstanceOfType<ScaleOnlyOptions>(loaded.Adapted.Peft.Config);
        double difference = BothTasks.MaxDifference(before, BothTasks.Scores(loaded, test));
        Console.WriteLine($"model.zip reload: max |score difference| {difference:E2}");
        Assert.AreEqual(0.0, difference);
        foreach (var t in saved.Values) t.Dispose();
    }
}
