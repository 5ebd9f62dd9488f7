using Microsoft.ML;
using static MLNet.FineTune.Tests.Tasks.FineTuning.BothTasks;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// <see cref="FineTuneOptions.CheckpointDirectory"/>, <see cref="FineTuneOptions.CheckpointEverySteps"/> and
/// <see cref="FineTuneOptions.ResumeFromCheckpoint"/> through <c>ml.FineTune()</c>: a resumed Fit ends where an
/// uninterrupted one does, and a checkpoint of another run (base model, method, labels) is refused by name.
/// </summary>
[TestClass]
public sealed class CheckpointResumeTests
{
    private const string TextClassification = BothTasks.TextClassification, QuestionAnswering = BothTasks.QuestionAnswering;

    [TestMethod]
    [DataRow(TextClassification)]
    [DataRow(QuestionAnswering)]
    public void AResumedFitEndsWithTheWeightsAndScoresOfAnUninterruptedOne(string task)
    {
        var ml = new MLContext(seed: 1);
        var train = Data(ml, task, 1);
        var test = Data(ml, task, 2);
        // The base with dropout: the resumed run must also restore the generator that draws the masks.
        var options = Options(task, TinyModels.BertTinyWithDropout());
        var checkpoints = NewFolder("checkpoints");
        options.CheckpointDirectory = checkpoints;
        options.CheckpointEverySteps = 3;
        var full = Fit(ml, options, train);
        var written = Directory.GetFileSystemEntries(checkpoints).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();

        options.CheckpointDirectory = null;
        options.CheckpointEverySteps = null;
        options.ResumeFromCheckpoint = Path.Combine(checkpoints, "checkpoint-3");
        var resumed = Fit(new MLContext(seed: 1), options, train);

        var fullSteps = full.TrainingHistory!.Steps;
        var resumedSteps = resumed.TrainingHistory!.Steps;
        double lossDifference = fullSteps.Zip(resumedSteps).Max(p => Math.Abs(p.First.Loss - p.Second.Loss));
        double scoreDifference = MaxDifference(Scores(full, test), Scores(resumed, test));
        var fullWeights = full.Adapted.Peft.TrainableParameters().ToDictionary(p => p.Name, p => p.Parameter);
        double weightDifference = resumed.Adapted.Peft.TrainableParameters().Max(p => (p.Parameter - fullWeights[p.Name]).abs().max().item<float>());
        Console.WriteLine($"{task}: checkpoints {string.Join(", ", written)}; {fullSteps.Count} steps uninterrupted, {resumedSteps.Count} resumed from step 3; " +
            $"max |difference|: loss {lossDifference:E2}, trainable weights {weightDifference:E2}, test scores {scoreDifference:E2}");
        var expected = Enumerable.Range(1, fullSteps.Count / 3).Select(i => $"checkpoint-{3 * i}").Order(StringComparer.Ordinal).ToArray();
        CollectionAssert.AreEqual(expected, written, $"CheckpointEverySteps = 3 over {fullSteps.Count} steps, and nothing else in the folder");
        Assert.HasCount(fullSteps.Count, resumedSteps, "the resumed history holds the steps before the checkpoint too");
        Assert.AreEqual(0.0, lossDifference, "every step's loss must equal the uninterrupted run's");
        Assert.AreEqual(0.0, weightDifference);
        Assert.AreEqual(0.0, scoreDifference);
    }

    [TestMethod]
    public void ACheckpointOfAnotherRunIsRefusedNamingWhatDiffers()
    {
        var ml = new MLContext(seed: 1);
        var train = Topics(ml, 1, "negative", "positive");
        var options = (TextClassificationOptions)Options(TextClassification, TinyModels.BertTiny());
        options.Epochs = 1;
        options.CheckpointDirectory = NewFolder("checkpoints");
        options.CheckpointEverySteps = 2;
        Fit(ml, options, train);
        var checkpoint = Path.Combine(options.CheckpointDirectory, "checkpoint-2");
        options.CheckpointDirectory = null;
        options.CheckpointEverySteps = null;
        options.ResumeFromCheckpoint = checkpoint;

        string Refusal(FineTuneOptions o, IDataView data, MethodOptions method, string difference) =>
            NamedErrors.Expect<ArgumentException>(() => Fit(ml, o, data, method), $"Cannot resume from {checkpoint}", difference).Message;

        // Another rank.
        Refusal(options, train, Lora(rank: 8), "method: lora_alpha 8 in the checkpoint, 16 now, r 4 in the checkpoint, 8 now");
        // Another label set of the same size: the classifier's shape fits, the meaning of its outputs does not.
        Refusal(options, Topics(ml, 1, "bad", "good"), Lora(), """task: labels ["negative","positive"] in the checkpoint, ["bad","good"] now""");
        // Another base model of the same architecture.
        var otherBase = (TextClassificationOptions)Options(TextClassification, TinyModels.BertTinyWithDropout());
        otherBase.Epochs = 1;
        otherBase.ResumeFromCheckpoint = checkpoint;
        var message = Refusal(otherBase, train, Lora(), "base model SHA-256: ");
        Assert.DoesNotContain("method:", message, "only the base model differs");
        Assert.DoesNotContain("task:", message, "only the base model differs");

        // The run that wrote it resumes.
        var resumed = Fit(ml, options, train);
        Assert.AreEqual(4, resumed.TrainingHistory!.Steps.Count);
    }
}
