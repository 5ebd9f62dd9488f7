using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tests.Tasks.QuestionAnswering;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// The two tasks FineTuningEstimator serves, for tests that check a shared behaviour once per task: small data and
/// short options on a given base model, and fits through <c>ml.FineTune()</c> with any method (plumbing, not accuracy).
/// </summary>
internal static class BothTasks
{
    public const string TextClassification = "text classification", QuestionAnswering = "question answering";

    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class Topic { public string Text { get; set; } = ""; public string Label { get; set; } = ""; }

    /// <summary>A scratch folder for the files these runs write (data, adapters, checkpoints, zips); removed when the
    /// test assembly finishes.</summary>
    public static readonly string Folder = Directory.CreateTempSubdirectory("mlft-both-tasks-").FullName;

    /// <summary>A new empty folder under <see cref="Folder"/>.</summary>
    public static string NewFolder(string name) => Directory.CreateDirectory(Path.Combine(Folder, $"{name}-{Guid.NewGuid():N}")).FullName;

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

    /// <summary>32 reviews whose string labels are <paramref name="labels"/> (the first for good reviews, the second for
    /// bad ones, a third for neutral ones when given), in that order of appearance.</summary>
    public static IDataView Topics(MLContext ml, int seed, params string[] labels)
    {
        string[][] words = [["good", "great", "excellent", "lovely"], ["bad", "awful", "terrible", "boring"], ["red", "green", "blue", "maybe"]];
        var rng = new Random(seed);
        return ml.Data.LoadFromEnumerable(Enumerable.Range(0, 32).Select(i => new Topic
        {
            Label = labels[i % labels.Length],
            Text = $"the movie was {words[i % labels.Length][rng.Next(4)]}",
        }).ToList());
    }

    /// <summary>Two epochs of batches of 8, float32, seeded.</summary>
    public static FineTuneOptions Options(string task, string baseModel) => task == QuestionAnswering
        ? new QuestionAnsweringOptions { BaseModel = baseModel, MaxSequenceLength = 64, DocStride = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2, Precision = TrainingPrecision.Float32, Seed = 3 }
        : new TextClassificationOptions { BaseModel = baseModel, MaxSequenceLength = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2, Precision = TrainingPrecision.Float32, Seed = 3 };

    /// <summary>LoRA of the given rank on every linear layer, alpha twice the rank, without dropout.</summary>
    public static LoraOptions Lora(int rank = 4) => new() { Rank = rank, Alpha = 2 * rank, Dropout = 0, TargetModules = ["query", "key", "value", "dense"] };

    /// <summary>The estimator of the task's options and the method's catalog entry, as a user builds it.</summary>
    public static IEstimator<FineTunedTransformer> Estimator(MLContext ml, FineTuneOptions options, MethodOptions? method = null)
    {
        method ??= Lora();
        var catalog = ml.FineTune();
        return (options, method) switch
        {
            (TextClassificationOptions o, DoraOptions m) => catalog.Dora(o, m),
            (TextClassificationOptions o, LoraOptions m) => catalog.Lora(o, m),
            (TextClassificationOptions o, AdapterOptions m) => catalog.Adapters(o, m),
            (TextClassificationOptions o, IA3Options m) => catalog.IA3(o, m),
            (TextClassificationOptions o, FullFineTuneOptions m) => catalog.FullFineTune(o, m),
            (QuestionAnsweringOptions o, DoraOptions m) => catalog.Dora(o, m),
            (QuestionAnsweringOptions o, LoraOptions m) => catalog.Lora(o, m),
            (QuestionAnsweringOptions o, AdapterOptions m) => catalog.Adapters(o, m),
            (QuestionAnsweringOptions o, IA3Options m) => catalog.IA3(o, m),
            (QuestionAnsweringOptions o, FullFineTuneOptions m) => catalog.FullFineTune(o, m),
            _ => throw new ArgumentException($"No catalog entry for {options.GetType().Name} with {method.GetType().Name}."),
        };
    }

    /// <summary>Fits the task with <paramref name="method"/> (default: <see cref="Lora"/>).</summary>
    public static FineTunedTransformer Fit(MLContext ml, FineTuneOptions options, IDataView train, MethodOptions? method = null) =>
        Estimator(ml, options, method).Fit(train);

    /// <summary>The Score column: the binary log-odds, or the answer's score.</summary>
    public static float[] Scores(ITransformer model, IDataView data) => model.Transform(data).GetColumn<float>("Score").ToArray();

    public static double MaxDifference(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs((double)p.First - p.Second));
}
