using System.Reflection;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tests.Training;
using MLNet.FineTune.Training;
using static MLNet.FineTune.Tests.Tasks.FineTuning.BothTasks;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// The options every task shares reach each task through <see cref="FineTuningEstimator{TOptions, TTransformer}"/>:
/// Dropout (in the training model, not in the saved config), InitialAdapter (training continues from a saved
/// adapter) and Progress (the caller and the MLContext's progress channel see every step). The tiny BERT, a few
/// steps: plumbing, not accuracy.
/// </summary>
[TestClass]
public sealed class FineTuningEstimatorTests
{
    private const string TextClassification = BothTasks.TextClassification, QuestionAnswering = BothTasks.QuestionAnswering;

    [TestMethod]
    [DataRow(TextClassification)]
    [DataRow(QuestionAnswering)]
    public void DropoutReplacesTheCheckpointsInTheTrainingModelOnly(string task)
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, task, 1);

        // The trained model put back in train mode: with no dropout left it scores exactly as in eval mode, and the
        // same twice; the checkpoint's dropout (0.1 on hidden states, attention and the classifier) makes it vary.
        (double VersusEval, double VersusItself) TrainModeSpread(FineTunedTransformer model)
        {
            var eval = Scores(model, train);
            model.Adapted.Model.train();
            try
            {
                var first = Scores(model, train);
                return (MaxDifference(first, eval), MaxDifference(first, Scores(model, train)));
            }
            finally { model.Adapted.Model.eval(); }
        }

        var options = Options(task, TinyModels.BertTinyWithDropout());
        var kept = Fit(ml, options, train);
        options.Dropout = 0;
        var off = Fit(ml, options, train);
        var (keptVersusEval, keptVersusItself) = TrainModeSpread(kept);
        var (offVersusEval, offVersusItself) = TrainModeSpread(off);
        Console.WriteLine($"{task}: max |train-mode - eval-mode score|: checkpoint's dropout {keptVersusEval:E2} (two train-mode passes {keptVersusItself:E2}); Dropout = 0: {offVersusEval:E2} ({offVersusItself:E2})");
        Assert.IsGreaterThan(1e-4, keptVersusItself, "the checkpoint's dropout must act in train mode, or this test could not see an override");
        Assert.AreEqual(0.0, offVersusItself, "Dropout = 0 must leave no dropout in the training model");
        Assert.IsLessThan(1e-6, offVersusEval, "with Dropout = 0, train mode must score as eval mode does");

        // model.zip keeps the checkpoint's config: the override was for training.
        var path = Path.Combine(Folder, $"dropout-{Guid.NewGuid():N}.zip");
        ml.Model.Save(off, train.Schema, path);
        var loaded = (FineTunedTransformer)new MLContext(seed: 2).Model.Load(path, out _);
        foreach (var key in new[] { "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout" })
        {
            Assert.AreEqual(0.1, off.Adapted.Config.GetDouble(key), $"the fitted model's config must keep the checkpoint's {key}");
            Assert.AreEqual(0.1, loaded.Adapted.Config.GetDouble(key), $"model.zip must keep the checkpoint's {key}");
        }
        File.Delete(path);
    }

    [TestMethod]
    [DataRow(TextClassification)]
    [DataRow(QuestionAnswering)]
    public void TrainingContinuesFromAnInitialAdapter(string task)
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, task, 1);
        var test = Data(ml, task, 2);
        var first = Fit(ml, Options(task, TinyModels.BertTiny()), train);
        var adapter = Path.Combine(Folder, $"adapter-{Guid.NewGuid():N}");
        first.SaveAdapter(adapter);
        Assert.IsTrue(File.Exists(Path.Combine(adapter, "adapter_model.safetensors")));
        var expected = Scores(first, test);

        // A negligible learning rate: the continued model must start from (and stay at) the saved adapter and head.
        var resumed = Options(task, TinyModels.BertTiny());
        resumed.Epochs = 1;
        resumed.LearningRate = 1e-12;
        resumed.InitialAdapter = adapter;
        double continued = MaxDifference(expected, Scores(Fit(ml, resumed, train), test));
        resumed.InitialAdapter = null;
        double fresh = MaxDifference(expected, Scores(Fit(ml, resumed, train), test));
        Console.WriteLine($"{task}: max |score difference| from the saved model: continued {continued:E2}; fresh adapter {fresh:E2}");
        Assert.IsLessThan(1e-4, continued, "the continued model differs from the saved adapter");
        Assert.IsGreaterThan(100 * continued + 1e-3, fresh, "a fresh adapter should differ, or this test could not see a missed load");
        Directory.Delete(adapter, recursive: true);
    }

    [TestMethod]
    [DataRow(TextClassification)]
    [DataRow(QuestionAnswering)]
    public void ProgressReachesTheCallerAndTheMLContextsProgressChannel(string task)
    {
        var ml = new MLContext(seed: 1);
        var tracker = ProgressTracker(ml);
        var train = Data(ml, task, 1);
        var options = Options(task, TinyModels.BertTiny());
        var reports = new List<TrainingProgress>();
        var polled = new List<(TrainingProgress Report, ProgressReporting.ProgressEntry Entry)>();
        var calculations = new HashSet<string>();
        // Poll ML.NET's tracker as a host tool would, from inside each report (after the channel saw the step).
        options.Progress = new SyncProgress<TrainingProgress>(p =>
        {
            reports.Add(p);
            foreach (var e in tracker.GetAllProgress())
            {
                calculations.Add(e.Name);
                if (e.Kind == ProgressReporting.ProgressEvent.EventKind.Progress) polled.Add((p, e.ProgressEntry));
            }
        });
        var model = Fit(ml, options, train);
        var afterFit = tracker.GetAllProgress();

        var steps = model.TrainingHistory!.Steps;
        Console.WriteLine($"{task}: {reports.Count} reports for {steps.Count} steps; {polled.Count} entries polled from [{string.Join(", ", calculations)}]; after Fit: {string.Join(", ", afterFit.Select(e => e.Kind))}");
        CollectionAssert.AreEqual(steps.Select(s => s.Step).ToArray(), reports.Select(r => r.Step).ToArray(), "the caller's Progress must see every step, in order");
        Assert.IsTrue(calculations.Any(n => n.StartsWith("Fine-tuning", StringComparison.Ordinal)), "no progress channel was opened on the MLContext");
        Assert.IsGreaterThanOrEqualTo(reports.Count - 1, polled.Count, "the MLContext's progress channel must report every step after the first poll");
        foreach (var (report, entry) in polled)
        {
            Assert.AreEqual((double)report.Step, entry.Progress[0], "step");
            Assert.AreEqual((double)report.TotalSteps, entry.ProgressLim[0], "total steps");
            Assert.AreEqual(report.Loss, entry.Metrics[0], "loss");
        }
        Assert.IsTrue(afterFit.Any(e => e.Kind == ProgressReporting.ProgressEvent.EventKind.Stop), "the progress channel must be closed when Fit returns");
    }

    /// <summary>The MLContext's progress tracker (what ML.NET's console host polls); ML.NET keeps it in a protected
    /// field of its environment.</summary>
    private static ProgressReporting.ProgressTracker ProgressTracker(MLContext ml)
    {
        var env = typeof(MLContext).GetFields(BindingFlags.Instance | BindingFlags.NonPublic).Select(f => f.GetValue(ml)).OfType<LocalEnvironment>().SingleOrDefault()
            ?? throw new InvalidOperationException("MLContext no longer holds a LocalEnvironment field: update this test to the ML.NET version in use.");
        var field = typeof(HostEnvironmentBase<LocalEnvironment>).GetField("ProgressTracker", BindingFlags.Instance | BindingFlags.NonPublic)
            ?? throw new InvalidOperationException("HostEnvironmentBase has no ProgressTracker field: update this test to the ML.NET version in use.");
        return (ProgressReporting.ProgressTracker)field.GetValue(env)!;
    }
}
