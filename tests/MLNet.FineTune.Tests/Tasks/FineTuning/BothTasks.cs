using Microsoft.ML;
using MLNet.FineTune.Tests.Tasks.QuestionAnswering;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// The two tasks FineTuningEstimator serves, for tests that check a shared behaviour once per task: small data and
/// short options on a given base model (plumbing, not accuracy).
/// </summary>
internal static class BothTasks
{
    public const string TextClassification = "text classification", QuestionAnswering = "question answering";

    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }

    private static readonly string Folder = Directory.CreateTempSubdirectory("mlft-both-tasks-").FullName;

    /// <summary>32 rows of the task: short reviews with bool labels, or 8 synthetic SQuAD contexts with 4 questions each.</summary>
    public static IDataView Data(MLContext ml, string task, int seed)
    {
        if (task == QuestionAnswering) return ml.Data.LoadFromSquadJson(SyntheticSquad.Write(Path.Combine(Folder, $"squad-{seed}.json"), 8, seed));
        string[] good = ["good", "great", "excellent", "lovely"], bad = ["bad", "awful", "terrible", "boring"], subjects = ["movie", "food", "room", "book"];
        var rng = new Random(seed);
        return ml.Data.LoadFromEnumerable(Enumerable.Range(0, 32).Select(i => new Review
        {
            Label = i % 2 == 0,
            Text = $"the {subjects[rng.Next(4)]} was {(i % 2 == 0 ? good : bad)[rng.Next(4)]}",
        }).ToList());
    }

    /// <summary>Two epochs of batches of 8, float32, seeded.</summary>
    public static FineTuneOptions Options(string task, string baseModel) => task == QuestionAnswering
        ? new QuestionAnsweringOptions { BaseModel = baseModel, MaxSequenceLength = 64, DocStride = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2, Precision = TrainingPrecision.Float32, Seed = 3 }
        : new TextClassificationOptions { BaseModel = baseModel, MaxSequenceLength = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2, Precision = TrainingPrecision.Float32, Seed = 3 };
}
