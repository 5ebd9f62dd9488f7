using System.Text.RegularExpressions;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Tests.Training;
using MLNet.FineTune.Training;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// The options every task shares are checked before any data is read: options that would be ignored without a word
/// (evaluation or early stopping without validation data, half of the checkpoint settings, module choices for full
/// fine-tuning), numbers out of range, and a plot path that could only fail after training. A step with a non-finite
/// loss names its training rows. Each check runs for both tasks: they share it through FineTuningEstimator.
/// </summary>
[TestClass]
public sealed class FineTuningOptionChecksTests
{
    private static readonly string Folder = Directory.CreateTempSubdirectory("mlft-option-checks-").FullName;

    /// <summary>One epoch on the tiny BERT (the checks run before training, or after a few steps).</summary>
    private static FineTuneOptions Options(string task)
    {
        var options = BothTasks.Options(task, TinyModels.BertTiny());
        options.Epochs = 1;
        return options;
    }

    /// <summary>Builds the task's estimator (where the shared checks run) with the method.</summary>
    private static IEstimator<ITransformer> Estimator(MLContext ml, FineTuneOptions options, MethodOptions? method = null) => (options, method) switch
    {
        (TextClassificationOptions o, FullFineTuneOptions full) => ml.FineTune().FullFineTune(o, full),
        (TextClassificationOptions o, LoraOptions lora) => ml.FineTune().Lora(o, lora),
        (TextClassificationOptions o, null) => ml.FineTune().Lora(o),
        (QuestionAnsweringOptions o, FullFineTuneOptions full) => ml.FineTune().FullFineTune(o, full),
        (QuestionAnsweringOptions o, LoraOptions lora) => ml.FineTune().Lora(o, lora),
        (QuestionAnsweringOptions o, null) => ml.FineTune().Lora(o),
        _ => throw new ArgumentException($"No estimator for {options.GetType().Name} with {method?.GetType().Name}."),
    };

    /// <summary>The error building the estimator with the options as <paramref name="change"/> sets them; it must name
    /// <paramref name="option"/> (in the message and as the parameter).</summary>
    private static ArgumentException Rejected(string task, Action<FineTuneOptions> change, string option, MethodOptions? method = null)
    {
        var options = Options(task);
        change(options);
        var error = Assert.Throws<ArgumentException>(() => Estimator(new MLContext(seed: 1), options, method));
        Console.WriteLine($"{task}: {error.Message}");
        StringAssert.Contains(error.Message, option);
        Assert.AreEqual(option, error.ParamName);
        return error;
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void OptionsThatWouldBeIgnoredAreRejectedNamingThem(string task)
    {
        StringAssert.Contains(Rejected(task, o => o.EvaluateEverySteps = 10, nameof(FineTuneOptions.EvaluateEverySteps)).Message, "ValidationSet");
        StringAssert.Contains(Rejected(task, o => o.EarlyStoppingPatience = 2, nameof(FineTuneOptions.EarlyStoppingPatience)).Message, "ValidationSet");
        StringAssert.Contains(Rejected(task, o => o.CheckpointEverySteps = 5, nameof(FineTuneOptions.CheckpointDirectory)).Message, "CheckpointEverySteps");
        StringAssert.Contains(Rejected(task, o => o.CheckpointDirectory = Path.Combine(Folder, "checkpoints"), nameof(FineTuneOptions.CheckpointEverySteps)).Message, "CheckpointDirectory");
        Rejected(task, o => { o.CheckpointDirectory = " "; o.CheckpointEverySteps = 5; }, nameof(FineTuneOptions.CheckpointDirectory));

        // With a validation set (or both checkpoint settings) the same options are accepted.
        var ml = new MLContext(seed: 1);
        var accepted = Options(task);
        accepted.ValidationSet = BothTasks.Data(ml, task, 2);
        accepted.EvaluateEverySteps = 10;
        accepted.EarlyStoppingPatience = 2;
        accepted.CheckpointEverySteps = 5;
        accepted.CheckpointDirectory = Path.Combine(Folder, "checkpoints");
        Estimator(ml, accepted);
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void NumbersOutOfRangeAreRejectedNamingTheOption(string task)
    {
        Rejected(task, o => o.MaxGradientNorm = double.NaN, nameof(FineTuneOptions.MaxGradientNorm));
        Rejected(task, o => o.MaxGradientNorm = -1, nameof(FineTuneOptions.MaxGradientNorm));
        Rejected(task, o => o.LearningRate = double.NaN, nameof(FineTuneOptions.LearningRate));
        Rejected(task, o => o.LearningRate = double.PositiveInfinity, nameof(FineTuneOptions.LearningRate));
        Rejected(task, o => o.WeightDecay = -0.1, nameof(FineTuneOptions.WeightDecay));
        Rejected(task, o => o.WarmupRatio = double.NaN, nameof(FineTuneOptions.WarmupRatio));
        Rejected(task, o => o.EarlyStoppingThreshold = double.NaN, nameof(FineTuneOptions.EarlyStoppingThreshold));
        Rejected(task, o => { o.ValidationSet = BothTasks.Data(new MLContext(1), task, 2); o.EvaluateEverySteps = 0; }, nameof(FineTuneOptions.EvaluateEverySteps));
        Rejected(task, o => { o.ValidationSet = BothTasks.Data(new MLContext(1), task, 2); o.EarlyStoppingPatience = 0; }, nameof(FineTuneOptions.EarlyStoppingPatience));
        Rejected(task, o => { o.CheckpointDirectory = Folder; o.CheckpointEverySteps = 0; }, nameof(FineTuneOptions.CheckpointEverySteps));

        // 0 is the documented way to turn clipping off.
        var noClipping = Options(task);
        noClipping.MaxGradientNorm = 0;
        Estimator(new MLContext(seed: 1), noClipping);
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void FullFineTuningRejectsModuleChoicesItWouldIgnore(string task)
    {
        Rejected(task, _ => { }, nameof(MethodOptions.TargetModules), new FullFineTuneOptions { TargetModules = ["query"] });
        Rejected(task, _ => { }, nameof(MethodOptions.TargetModulesPattern), new FullFineTuneOptions { TargetModulesPattern = ".*query" });
        Rejected(task, _ => { }, nameof(MethodOptions.ExcludeModules), new FullFineTuneOptions { ExcludeModules = ["key"] });
        Estimator(new MLContext(seed: 1), Options(task), new FullFineTuneOptions());
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void APlotPathThatCannotBeWrittenIsRejectedBeforeTraining(string task)
    {
        string option = nameof(FineTuneOptions.TrainingPlotPath);
        StringAssert.Contains(Rejected(task, o => o.TrainingPlotPath = Path.Combine(Folder, "curves.jpg"), option).Message, ".png");
        var file = Path.Combine(Folder, "a-file");
        File.WriteAllText(file, "not a folder");
        StringAssert.Contains(Rejected(task, o => o.TrainingPlotPath = Path.Combine(file, "sub", "curves.png"), option).Message, file);
        var folderNamedPng = Directory.CreateDirectory(Path.Combine(Folder, "folder.png")).FullName;
        Rejected(task, o => o.TrainingPlotPath = folderNamedPng, option);
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void APlotThatFailsAfterTrainingIsAWarningAndTheModelIsReturned(string task)
    {
        var ml = new MLContext(seed: 1);
        var warnings = new List<string>();
        ml.Log += (_, e) => { if (e.Message.Contains("Warning: could not write the training plot", StringComparison.Ordinal)) warnings.Add(e.Message); };
        var options = Options(task);
        var plot = Path.Combine(Folder, $"blocked-{task.Replace(' ', '-')}", "curves.png");
        options.TrainingPlotPath = plot;
        // The path passes the checks; during training a folder takes the file's name, so the write fails at the end.
        options.Progress = new SyncProgress<TrainingProgress>(_ => Directory.CreateDirectory(plot));
        var model = (Microsoft.ML.ITransformer)Estimator(ml, options).Fit(BothTasks.Data(ml, task, 1));
        Console.WriteLine($"{task}: {string.Join("\n", warnings)}");
        Assert.IsNotNull(model);
        Assert.HasCount(1, warnings);
        StringAssert.Contains(warnings[0], plot);

        // A writable path gets the plot.
        var good = Path.Combine(Folder, $"written-{task.Replace(' ', '-')}", "curves.png");
        options.Progress = null;
        options.TrainingPlotPath = good;
        Estimator(ml, options).Fit(BothTasks.Data(ml, task, 1));
        Console.WriteLine($"{task}: {good}: {new FileInfo(good).Length} bytes");
        Assert.IsGreaterThan(1000L, new FileInfo(good).Length);
    }

    [TestMethod]
    [DataRow(BothTasks.TextClassification)]
    [DataRow(BothTasks.QuestionAnswering)]
    public void ANonFiniteLossNamesTheStepAndItsTrainingRows(string task)
    {
        // A huge learning rate: the first step blows the adapter's weights up, and the next loss is not finite.
        var ml = new MLContext(seed: 1);
        var options = Options(task);
        options.LearningRate = 1e30;
        options.WarmupRatio = 0;
        options.MaxGradientNorm = 0;
        var data = BothTasks.Data(ml, task, 1);
        var error = Assert.ThrowsExactly<NonFiniteLossException>(() => Estimator(ml, options).Fit(data));
        Console.WriteLine($"{task}: {error.Message}");
        StringAssert.Contains(error.Message, $"optimizer step {error.Step}");
        Assert.IsGreaterThan(1L, error.Step, "the first step's loss is computed before any update, so it is finite");
        Assert.IsInstanceOfType<NonFiniteLossException>(error.InnerException, "the trainer's error (with the raw indices) is kept as the inner exception");
        Assert.HasCount(options.BatchSize, error.ExampleIndices, "one micro-batch of BatchSize examples per step");

        var listed = Regex.Match(error.Message, @"training rows ([^.]*)\.").Groups[1].Value;
        Assert.IsFalse(string.IsNullOrEmpty(listed), "the message must name the step's training rows");
        if (task == BothTasks.TextClassification)
        {
            // One example per row: the rows are the trainer's indices.
            Assert.AreEqual(string.Join(", ", error.ExampleIndices), listed);
        }
        else
        {
            // Examples are windows; the message names each window's row and its question id, as the data has them.
            var ids = data.GetColumn<string>("Id").ToArray();
            var rows = Regex.Matches(listed, @"(\d+) \(question '([^']+)'\)").Select(m => (Row: int.Parse(m.Groups[1].Value), Id: m.Groups[2].Value)).ToList();
            Assert.IsNotEmpty(rows);
            foreach (var (row, id) in rows) Assert.AreEqual(ids[row], id, $"row {row}");
        }
    }
}
