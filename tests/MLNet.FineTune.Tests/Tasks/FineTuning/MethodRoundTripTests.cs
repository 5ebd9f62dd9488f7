using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
using static MLNet.FineTune.Tests.Tasks.FineTuning.BothTasks;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// Every method the catalog offers, fitted through <c>ml.FineTune()</c> for both tasks, saved into model.zip and
/// loaded back by ML.NET: the reloaded model holds the same method and scores identically. The tiny BERT, one epoch of
/// four steps at each method's default learning rate.
/// </summary>
[TestClass]
public sealed class MethodRoundTripTests
{
    private const string TextClassification = BothTasks.TextClassification, QuestionAnswering = BothTasks.QuestionAnswering;

    /// <summary>The method options, and what the saved model must say about the method.</summary>
    private static (MethodOptions Options, Func<MethodOptions, bool> IsExpected) Method(string name) => name switch
    {
        "Adapters" => (new AdapterOptions { ReductionFactor = 4 }, c => c is AdapterOptions { ReductionFactor: 4 }),
        "IA3" => (new IA3Options(), c => c is IA3Options),
        "FullFineTune" => (new FullFineTuneOptions(), c => c is FullFineTuneOptions),
        "rsLoRA" => (new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, UseRsLora = true }, c => c is LoraOptions { UseRsLora: true, UseDora: false, Rank: 4 }),
        "LoRA+" => (new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, LoraPlusLearningRateRatio = 16 }, c => c is LoraOptions { UseRsLora: false, UseDora: false, Rank: 4 }),
        _ => throw new ArgumentException($"Unknown method {name}."),
    };

    [TestMethod]
    [DataRow(TextClassification, "Adapters")]
    [DataRow(TextClassification, "IA3")]
    [DataRow(TextClassification, "FullFineTune")]
    [DataRow(TextClassification, "rsLoRA")]
    [DataRow(TextClassification, "LoRA+")]
    [DataRow(QuestionAnswering, "Adapters")]
    [DataRow(QuestionAnswering, "IA3")]
    [DataRow(QuestionAnswering, "FullFineTune")]
    [DataRow(QuestionAnswering, "rsLoRA")]
    [DataRow(QuestionAnswering, "LoRA+")]
    public void FitSaveLoadGivesTheSameMethodAndIdenticalScores(string task, string method)
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, task, 1);
        var test = Data(ml, task, 2);
        var options = Options(task, TinyModels.BertTiny());
        options.Epochs = 1;
        options.LearningRate = null; // the method's default
        var (methodOptions, isExpected) = Method(method);
        var model = Fit(ml, options, train, methodOptions);
        var before = Scores(model, test);

        var path = Path.Combine(Folder, $"{method}-{Guid.NewGuid():N}.zip");
        ml.Model.Save(model, train.Schema, path);
        var loaded = (FineTunedTransformer)new MLContext(seed: 2).Model.Load(path, out _);
        var after = Scores(loaded, test);

        // The same run at a negligible learning rate: the scores before training. Training must move them, or an
        // identical reload could be a reload that dropped what was trained.
        options.LearningRate = 1e-12;
        double trained = MaxDifference(before, Scores(Fit(ml, options, train, methodOptions), test));

        var steps = model.TrainingHistory!.Steps;
        var counts = model.TrainableParameters;
        double difference = MaxDifference(before, after);
        Console.WriteLine($"{task}, {method}: {counts}; {steps.Count} steps, loss {steps[0].Loss:F4} -> {steps[^1].Loss:F4}; " +
            $"zip {new FileInfo(path).Length / 1024} KiB; max |score difference| over {before.Length} rows: training moved them {trained:E2}, after reload {difference:E2}");
        Assert.IsTrue(isExpected(model.Adapted.Peft.Config), $"the fitted model holds {model.Adapted.Peft.Config}, not {method}");
        Assert.IsTrue(isExpected(loaded.Adapted.Peft.Config), $"the reloaded model holds {loaded.Adapted.Peft.Config}, not {method}");
        Assert.IsTrue(steps.All(s => double.IsFinite(s.Loss)), "every step's loss must be finite");
        if (method == "FullFineTune") Assert.AreEqual(counts.Total, counts.Trainable, "full fine-tuning trains every weight");
        else Assert.IsTrue(counts.Trainable > 0 && counts.Trainable < counts.Total / 2, $"{method} trains a small part of the model: {counts}");
        Assert.AreEqual(counts, loaded.TrainableParameters, "the reloaded model has the same trainable parameters");
        Assert.IsGreaterThan(1e-5, trained, "training must change the scores, or this test could not see a reload that loses it");
        Assert.AreEqual(0.0, difference, "scores after reload must be identical");
        if (task == QuestionAnswering)
            CollectionAssert.AreEqual(model.Transform(test).GetColumn<string>("Answer").ToArray(), loaded.Transform(test).GetColumn<string>("Answer").ToArray(),
                "answers after reload must be identical");
        File.Delete(path);
    }
}
