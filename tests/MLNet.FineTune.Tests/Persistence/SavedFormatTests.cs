using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Tests.Peft;
using MLNet.FineTune.Tests.Tasks.QuestionAnswering;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// Models saved by earlier builds must keep loading and scoring the same: each shipped model.zip format is committed
/// under Fixtures/saved-models (tiny BERT, float32, self-contained, a few hundred KB) with the outputs it gave when it
/// was written, and is loaded and scored here by the current code.
/// </summary>
/// <remarks>
/// When a transformer's format version changes, keep the old zip and add one for the new version:
/// <c>MLNET_FINETUNE_WRITE_SAVED_MODELS=tests/MLNet.FineTune.Tests/Fixtures/saved-models dotnet test ... --filter
/// "FullyQualifiedName~SavedFormatTests.WriteFixtures"</c> writes <c>*-&lt;next version&gt;.zip</c> and its outputs.
/// </remarks>
[TestClass]
public sealed class SavedFormatTests
{
    private const string WriterVariable = "MLNET_FINETUNE_WRITE_SAVED_MODELS";
    /// <summary>The format version the writer names its files after (the transformers' currentVersion).</summary>
    private const string CurrentFormat = "v00010002";
    /// <summary>float32 scores of the same weights, reloaded: only the order of float additions may differ.</summary>
    private const double ScoreTolerance = 1e-5;

    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ClassifierOutputs { public string[] Texts { get; set; } = []; public float[] Scores { get; set; } = []; public float[] Probabilities { get; set; } = []; public bool[] Predicted { get; set; } = []; }
    public sealed class AnswerOutputs { public string[] Answers { get; set; } = []; public int[] Starts { get; set; } = []; public float[] Scores { get; set; } = []; public float[] NoAnswerScores { get; set; } = []; }

    private static readonly string[] ReviewTexts =
    [
        "the movie was great", "the food was awful", "a wonderful room", "very boring book", "the service was lovely today",
        "poor phone", "excellent", "terrible service yesterday",
    ];

    private static IEnumerable<string> Fixtures(string prefix) =>
        Directory.Exists(TestPaths.Fixture("saved-models"))
            ? Directory.EnumerateFiles(TestPaths.Fixture("saved-models"), prefix + "-*.zip").Order()
            : [];

    [TestMethod]
    public void SavedTextClassifiersLoadAndScoreAsWhenTheyWereSaved()
    {
        var zips = Fixtures("text-classification").ToList();
        Assert.IsNotEmpty(zips, "no committed text-classification model.zip under Fixtures/saved-models");
        foreach (var zip in zips)
        {
            var expected = JsonSerializer.Deserialize<ClassifierOutputs>(File.ReadAllText(Path.ChangeExtension(zip, ".json")))!;
            var ml = new MLContext(seed: 1);
            var model = ml.Model.Load(zip, out _);
            var actual = ScoreClassifier(ml, model, expected.Texts);
            double maxError = expected.Scores.Zip(actual.Scores).Max(p => Math.Abs(p.First - p.Second));
            Console.WriteLine($"{Path.GetFileName(zip)}: {expected.Texts.Length} rows, max |score - saved score| {maxError:E2}");
            Assert.IsTrue(maxError <= ScoreTolerance, $"{Path.GetFileName(zip)}: scores moved by {maxError} after reloading");
            CollectionAssert.AreEqual(expected.Predicted, actual.Predicted, $"{Path.GetFileName(zip)}: predicted labels changed");
        }
    }

    [TestMethod]
    public void SavedQuestionAnswerersLoadAndAnswerAsWhenTheyWereSaved()
    {
        var zips = Fixtures("question-answering").ToList();
        Assert.IsNotEmpty(zips, "no committed question-answering model.zip under Fixtures/saved-models");
        foreach (var zip in zips)
        {
            var expected = JsonSerializer.Deserialize<AnswerOutputs>(File.ReadAllText(Path.ChangeExtension(zip, ".json")))!;
            var ml = new MLContext(seed: 1);
            var model = ml.Model.Load(zip, out _);
            var actual = Answer(ml, model, TestPaths.Fixture("saved-models", "question-answering-questions.json"));
            double maxError = expected.Scores.Zip(actual.Scores).Concat(expected.NoAnswerScores.Zip(actual.NoAnswerScores)).Max(p => Math.Abs(p.First - p.Second));
            Console.WriteLine($"{Path.GetFileName(zip)}: {expected.Answers.Length} questions, {expected.Answers.Count(a => a == "")} answered \"\", max |score - saved score| {maxError:E2}");
            Assert.IsTrue(maxError <= ScoreTolerance, $"{Path.GetFileName(zip)}: scores moved by {maxError} after reloading");
            CollectionAssert.AreEqual(expected.Answers, actual.Answers, $"{Path.GetFileName(zip)}: answers changed");
            CollectionAssert.AreEqual(expected.Starts, actual.Starts, $"{Path.GetFileName(zip)}: answer starts changed");
        }
    }

    /// <summary>Writes this build's formats (see the class remarks); skipped unless asked for.</summary>
    [TestMethod]
    public void WriteFixtures()
    {
        var folder = Environment.GetEnvironmentVariable(WriterVariable);
        if (string.IsNullOrEmpty(folder)) Assert.Inconclusive($"Set {WriterVariable} to the source Fixtures/saved-models folder to write the saved-format fixtures.");
        Directory.CreateDirectory(folder!);
        var ml = new MLContext(seed: 1);

        var reviews = Enumerable.Range(0, 64).Select(i => new Review { Text = ReviewTexts[i % ReviewTexts.Length], Label = i % ReviewTexts.Length % 2 == 0 }).ToList();
        var classifier = ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 2, BatchSize = 16, LearningRate = 1e-2,
            Precision = TrainingPrecision.Float32, Seed = 3,
        }, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }).Fit(ml.Data.LoadFromEnumerable(reviews));
        var classifierZip = Path.Combine(folder!, $"text-classification-{CurrentFormat}.zip");
        ml.Model.Save(classifier, null, classifierZip);
        var classifierOutputs = ScoreClassifier(ml, ml.Model.Load(classifierZip, out _), ReviewTexts);
        File.WriteAllText(Path.ChangeExtension(classifierZip, ".json"), JsonSerializer.Serialize(classifierOutputs));

        var questions = Path.Combine(folder!, "question-answering-questions.json");
        if (!File.Exists(questions)) SyntheticSquad.Write(questions, contexts: 4, seed: 11, unanswerableFraction: 0.25);
        var answerer = ml.FineTune().Lora(new QuestionAnsweringOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 48, DocStride = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2,
            Precision = TrainingPrecision.Float32, Seed = 3, Dropout = 0,
        }, new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0 }).Fit(ml.Data.LoadFromSquadJson(SyntheticSquad.Write(Path.GetTempFileName(), 16, 12, 0.25)));
        var answererZip = Path.Combine(folder!, $"question-answering-{CurrentFormat}.zip");
        ml.Model.Save(answerer, null, answererZip);
        var answerOutputs = Answer(ml, ml.Model.Load(answererZip, out _), questions);
        File.WriteAllText(Path.ChangeExtension(answererZip, ".json"), JsonSerializer.Serialize(answerOutputs));
        Console.WriteLine($"wrote {classifierZip} ({new FileInfo(classifierZip).Length} bytes) and {answererZip} ({new FileInfo(answererZip).Length} bytes)");
    }

    private static ClassifierOutputs ScoreClassifier(MLContext ml, ITransformer model, string[] texts)
    {
        var scored = model.Transform(ml.Data.LoadFromEnumerable(texts.Select(t => new Review { Text = t })));
        return new ClassifierOutputs
        {
            Texts = texts,
            Scores = scored.GetColumn<float>("Score").ToArray(),
            Probabilities = scored.GetColumn<float>("Probability").ToArray(),
            Predicted = scored.GetColumn<bool>("PredictedLabel").ToArray(),
        };
    }

    private static AnswerOutputs Answer(MLContext ml, ITransformer model, string questionsPath)
    {
        var scored = model.Transform(ml.Data.LoadFromSquadJson(questionsPath));
        return new AnswerOutputs
        {
            Answers = scored.GetColumn<string>("Answer").ToArray(),
            Starts = scored.GetColumn<int>("AnswerStart").ToArray(),
            Scores = scored.GetColumn<float>("Score").ToArray(),
            NoAnswerScores = scored.GetColumn<float>("NoAnswerScore").ToArray(),
        };
    }
}
