using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tests.Training;
using MLNet.FineTune.Training;
using static MLNet.FineTune.Tests.Tasks.FineTuning.BothTasks;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// The training options of <see cref="FineTuneOptions"/> reach the training loop through <c>ml.FineTune()</c> and
/// do there what they promise: cancellation, early stopping with best-weight restore, evaluation every N steps,
/// gradient accumulation, the training plot and the output column names. (Checkpoints and resume:
/// <see cref="CheckpointResumeTests"/>.) The tiny BERT, a few steps each.
/// </summary>
[TestClass]
public sealed class EstimatorTrainingOptionsTests
{
    private const string TextClassification = BothTasks.TextClassification, QuestionAnswering = BothTasks.QuestionAnswering;

    private static TextClassificationOptions ClassifierOptions() => (TextClassificationOptions)Options(TextClassification, TinyModels.BertTiny());

    /// <summary>Progress that cancels <paramref name="source"/> once step <paramref name="step"/> is reported.</summary>
    private static IProgress<TrainingProgress> CancelAfter(long step, CancellationTokenSource source) =>
        new SyncProgress<TrainingProgress>(p => { if (p.Step == step) source.Cancel(); });

    private static long[] EvaluatedSteps(FineTunedTransformer model) =>
        model.TrainingHistory!.Steps.Where(s => s.ValidationMetric is not null).Select(s => s.Step).ToArray();

    [TestMethod]
    public void CancellingAfterStepTwoReturnsThatModelWithCompleteCheckpointsOnly()
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, TextClassification, 1);
        var test = Data(ml, TextClassification, 2);
        var checkpoints = NewFolder("checkpoints");
        using var cancel = new CancellationTokenSource();
        var options = ClassifierOptions();
        options.CheckpointDirectory = checkpoints;
        options.CheckpointEverySteps = 1;
        options.CancellationToken = cancel.Token;
        options.Progress = CancelAfter(2, cancel);
        var cancelled = Fit(ml, options, train);
        var entries = Directory.GetFileSystemEntries(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();

        // The cancelled run's last checkpoint finishes the job as if nothing had stopped it.
        var resumedOptions = ClassifierOptions();
        resumedOptions.ResumeFromCheckpoint = checkpoints;
        double resumedVersusUninterrupted = MaxDifference(Scores(Fit(ml, resumedOptions, train), test), Scores(Fit(ml, ClassifierOptions(), train), test));

        var history = cancelled.TrainingHistory!;
        Console.WriteLine($"cancelled after step 2: {history.Steps.Count} steps, stop reason {history.StopReason}; checkpoint folder: {string.Join(", ", entries)}; " +
            $"resumed from it vs uninterrupted: max |score difference| {resumedVersusUninterrupted:E2}");
        Assert.AreEqual(TrainingStopReason.Cancelled, history.StopReason);
        CollectionAssert.AreEqual(new long[] { 1, 2 }, history.Steps.Select(s => s.Step).ToArray(), "training stops before the step after the cancelling one");
        CollectionAssert.AreEqual(new[] { "checkpoint-1", "checkpoint-2" }, entries, "only complete checkpoints, no temporary folder");
        Assert.HasCount(32, Scores(cancelled, test), "the model trained so far scores");
        Assert.AreEqual(0.0, resumedVersusUninterrupted);
    }

    [TestMethod]
    public void EarlyStoppingRestoresTheBestWeightsAndPlotsTheCurves()
    {
        // Question answering: its validation F1 moves within a few steps of the tiny BERT (a classifier's accuracy
        // stays at chance for longer).
        var ml = new MLContext(seed: 1);
        var train = Data(ml, QuestionAnswering, 1);
        var validation = Data(ml, QuestionAnswering, 2);
        var test = Data(ml, QuestionAnswering, 3);
        // A constant rate: a run cancelled after step n then holds exactly the weights the early-stopped run had at n.
        FineTuneOptions Constant()
        {
            var o = Options(QuestionAnswering, TinyModels.BertTiny());
            o.Epochs = 6;
            o.Schedule = LearningRateSchedule.Constant;
            o.WarmupRatio = 0;
            o.LearningRate = 1e-3;
            return o;
        }
        var options = Constant();
        options.ValidationSet = validation;
        options.EvaluateEverySteps = 1;
        options.EarlyStoppingPatience = 3;
        options.TrainingPlotPath = Path.Combine(NewFolder("plot"), "curves.png");
        var stopped = Fit(ml, options, train);
        var history = stopped.TrainingHistory!;
        var best = history.Steps.Where(s => s.ValidationMetric is not null).MaxBy(s => s.ValidationMetric!.Value)!; // the first of equals
        long lastStep = history.Steps[^1].Step, planned = 6 * (history.Steps.Count(s => s.Epoch == 1));

        float[] CancelledAt(long step)
        {
            using var cancel = new CancellationTokenSource();
            var o = Constant();
            o.CancellationToken = cancel.Token;
            o.Progress = CancelAfter(step, cancel);
            return Scores(Fit(ml, o, train), test);
        }
        var scores = Scores(stopped, test);
        double versusBest = MaxDifference(scores, CancelledAt(best.Step)), versusLast = MaxDifference(scores, CancelledAt(lastStep));
        var png = File.ReadAllBytes(options.TrainingPlotPath);

        Console.WriteLine($"validation {history.ValidationMetricName} by step: {string.Join(", ", history.Steps.Select(s => $"{s.Step}: {s.ValidationMetric:F2}"))}; stop reason {history.StopReason}");
        Console.WriteLine($"best step {best.Step} of {lastStep}: max |score difference| of the returned model vs the weights at step {best.Step} {versusBest:E2}, " +
            $"vs those at step {lastStep} {versusLast:E2}; plot {png.Length} bytes");
        Assert.AreEqual(TrainingStopReason.EarlyStopped, history.StopReason);
        Assert.IsLessThan(planned, lastStep, $"early stopping must end the run before its {planned} planned steps");
        Assert.IsGreaterThan(1L, best.Step, "the metric must improve after the first evaluation, so that the tracker's improvements are exercised");
        Assert.IsTrue(history.Steps.All(s => s.ValidationMetric is not null), "EvaluateEverySteps = 1 evaluates after every step");
        Assert.AreEqual(0.0, versusBest, "the returned model must hold the weights of the best evaluation");
        Assert.IsGreaterThan(1e-5, versusLast, "the last step's weights must differ, or the restore would be invisible");
        CollectionAssert.AreEqual(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png.Take(4).ToArray(), "TrainingPlotPath must hold a PNG");
    }

    [TestMethod]
    public void EvaluationsFollowEvaluateEveryStepsOrEpochEnds()
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, TextClassification, 1);
        var options = ClassifierOptions(); // 2 epochs of 4 steps
        options.ValidationSet = Data(ml, TextClassification, 2);
        var byEpoch = EvaluatedSteps(Fit(ml, options, train));
        options.EvaluateEverySteps = 3;
        var byThree = EvaluatedSteps(Fit(ml, options, train));
        Console.WriteLine($"evaluated at steps: per epoch {string.Join(", ", byEpoch)}; every 3 steps {string.Join(", ", byThree)}");
        CollectionAssert.AreEqual(new long[] { 4, 8 }, byEpoch);
        CollectionAssert.AreEqual(new long[] { 3, 6 }, byThree);
    }

    [TestMethod]
    public void GradientAccumulationMakesOneStepOfSeveralBatches()
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, TextClassification, 1);
        var test = Data(ml, TextClassification, 2);
        (FineTunedTransformer Model, long PlannedSteps) Run(int batchSize, int accumulation)
        {
            var options = ClassifierOptions();
            options.BatchSize = batchSize;
            options.GradientAccumulationSteps = accumulation;
            options.LengthBucketing = false; // the same example order for every batch size
            long planned = 0;
            options.Progress = new SyncProgress<TrainingProgress>(p => planned = p.TotalSteps);
            return (Fit(ml, options, train), planned);
        }
        var (accumulated, accumulatedPlan) = Run(8, 2);
        var (large, largePlan) = Run(16, 1);
        var (_, plainPlan) = Run(8, 1);
        var steps = accumulated.TrainingHistory!.Steps;
        double lossDifference = steps.Zip(large.TrainingHistory!.Steps).Max(p => Math.Abs(p.First.Loss - p.Second.Loss));
        double scoreDifference = MaxDifference(Scores(accumulated, test), Scores(large, test));
        Console.WriteLine($"32 rows, 2 epochs: batches of 8 accumulated 2 -> {steps.Count} steps (planned {accumulatedPlan}); batches of 16 -> planned {largePlan}; " +
            $"batches of 8 -> planned {plainPlan}. 8 x 2 vs 16: max |difference| of step losses {lossDifference:E2}, of test scores {scoreDifference:E2}");
        Assert.AreEqual(4, steps.Count);
        Assert.AreEqual(4L, accumulatedPlan);
        Assert.AreEqual(8L, plainPlan);
        Assert.IsLessThan(1e-5, lossDifference, "two accumulated batches of 8 must train as one batch of 16");
        Assert.IsLessThan(1e-5, scoreDifference);
    }

    [TestMethod]
    public void CustomOutputColumnNamesReachTheOutputAndSurviveModelZip()
    {
        var ml = new MLContext(seed: 1);
        var classifierOptions = ClassifierOptions();
        classifierOptions.Epochs = 1;
        classifierOptions.ScoreColumnName = "Logit";
        classifierOptions.PredictedLabelColumnName = "IsPositive";
        var qaOptions = (QuestionAnsweringOptions)Options(QuestionAnswering, TinyModels.BertTiny());
        qaOptions.Epochs = 1;
        qaOptions.PredictedAnswerColumnName = "Reply";
        qaOptions.PredictedAnswerStartColumnName = "ReplyStart";
        qaOptions.ScoreColumnName = "Confidence";

        foreach (var (options, named, defaults) in new (FineTuneOptions, string[], string[])[]
        {
            (classifierOptions, ["Logit", "IsPositive", "Probability"], ["Score", "PredictedLabel"]),
            (qaOptions, ["Reply", "ReplyStart", "Confidence"], ["Answer", "Score"]),
        })
        {
            var task = options is QuestionAnsweringOptions ? QuestionAnswering : TextClassification;
            var train = Data(ml, task, 1);
            var estimator = Estimator(ml, options);
            var promised = estimator.GetOutputSchema(SchemaShape.Create(train.Schema)).Select(c => c.Name).ToHashSet();
            var model = estimator.Fit(train);
            var path = Path.Combine(Folder, $"columns-{Guid.NewGuid():N}.zip");
            ml.Model.Save(model, train.Schema, path);
            var loaded = new MLContext(seed: 2).Model.Load(path, out _);
            foreach (var (what, scored) in new[] { ("fitted", model.Transform(train)), ("reloaded", loaded.Transform(train)) })
            {
                var columns = scored.Schema.Select(c => c.Name).ToHashSet();
                Console.WriteLine($"{task}, {what}: output columns {string.Join(", ", scored.Schema.Select(c => c.Name))}");
                foreach (var name in named)
                {
                    Assert.Contains(name, columns, $"{task} ({what}) must output '{name}'");
                    Assert.Contains(name, promised, $"{task}: GetOutputSchema must promise '{name}'");
                }
                foreach (var name in defaults) Assert.DoesNotContain(name, columns, $"{task} ({what}) must not output the default '{name}'");
            }
            if (task == TextClassification)
            {
                var metrics = ml.BinaryClassification.Evaluate(loaded.Transform(train), scoreColumnName: "Logit", predictedLabelColumnName: "IsPositive");
                Console.WriteLine($"ML.NET's binary evaluator on the renamed columns: accuracy {metrics.Accuracy:F3}, AUC {metrics.AreaUnderRocCurve:F3}");
            }
            File.Delete(path);
        }
    }
}
