using Microsoft.ML;

namespace MLNet.FineTune.Tests.Tasks;

/// <summary>
/// Every option is validated when the estimator is built, before any data is read, with an error naming the option
/// (<c>Type.Option</c>): the method options Peft.MethodOptionsTests does not cover (rank pattern, DoRA's rank, adapter
/// scaling), non-finite weight decay, column options that name one column twice (a label read from the text column, a
/// score written over the predicted label, an output hiding an input), and a CheckpointDirectory that cannot be a folder.
/// </summary>
[TestClass]
public sealed class OptionValidationTests
{
    private static TextClassificationOptions Classifier() => new() { BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16 };
    private static QuestionAnsweringOptions Answerer() => new() { BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 64, DocStride = 16 };

    /// <summary>Each case builds an estimator with one bad option; the strings must all appear in the error.</summary>
    private static readonly Dictionary<string, (Func<MLContext, object> Build, Type Error, string[] Expected)> Cases = new()
    {
        ["LoRA rank pattern 0"] = (ml => ml.FineTune().Lora(Classifier(), new LoraOptions { RankPattern = new Dictionary<string, int> { ["query"] = 0 } }), typeof(ArgumentOutOfRangeException), ["LoraOptions.RankPattern['query']"]),
        ["DoRA rank 0"] = (ml => ml.FineTune().Dora(Classifier(), new DoraOptions { Rank = 0 }), typeof(ArgumentOutOfRangeException), ["DoraOptions.Rank"]),
        ["adapter scaling NaN"] = (ml => ml.FineTune().Adapters(Classifier(), new AdapterOptions { Scaling = double.NaN }), typeof(ArgumentOutOfRangeException), ["AdapterOptions.Scaling"]),
        ["weight decay NaN"] = (ml => ml.FineTune().Lora(Classifier() with { WeightDecay = double.NaN }), typeof(ArgumentOutOfRangeException), ["TextClassificationOptions.WeightDecay"]),
        ["weight decay infinite"] = (ml => ml.FineTune().Lora(Classifier() with { WeightDecay = double.PositiveInfinity }), typeof(ArgumentOutOfRangeException), ["TextClassificationOptions.WeightDecay"]),
        ["label column = text column"] = (ml => ml.FineTune().Lora(Classifier() with { LabelColumnName = "Text" }), typeof(ArgumentException), ["TextClassificationOptions.TextColumnName", "TextClassificationOptions.LabelColumnName", "'Text'"]),
        ["text pair column = text column"] = (ml => ml.FineTune().Lora(Classifier() with { TextPairColumnName = "Text" }), typeof(ArgumentException), ["TextPairColumnName", "'Text'"]),
        ["score column = predicted label column"] = (ml => ml.FineTune().Lora(Classifier() with { ScoreColumnName = "PredictedLabel" }), typeof(ArgumentException), ["TextClassificationOptions.ScoreColumnName", "TextClassificationOptions.PredictedLabelColumnName", "'PredictedLabel'"]),
        ["predicted label over the label"] = (ml => ml.FineTune().Lora(Classifier() with { PredictedLabelColumnName = "Label" }), typeof(ArgumentException), ["LabelColumnName", "PredictedLabelColumnName", "'Label'"]),
        ["QA context column = question column"] = (ml => ml.FineTune().Lora(Answerer() with { QuestionColumnName = "Context" }), typeof(ArgumentException), ["QuestionAnsweringOptions.ContextColumnName", "QuestionAnsweringOptions.QuestionColumnName"]),
        ["QA answer written over the gold answers"] = (ml => ml.FineTune().Lora(Answerer() with { PredictedAnswerColumnName = "AllAnswers" }), typeof(ArgumentException), ["AllAnswersColumnName", "PredictedAnswerColumnName", "'AllAnswers'"]),
    };

    public static IEnumerable<object[]> CaseNames() => Cases.Keys.Select(k => new object[] { k });

    [TestMethod]
    [DynamicData(nameof(CaseNames))]
    public void ABadOptionIsNamedWhenTheEstimatorIsBuilt(string name)
    {
        var (build, error, expected) = Cases[name];
        var thrown = Assert.Throws<Exception>(() => build(new MLContext(seed: 1)));
        Console.WriteLine($"{name}: {thrown.GetType().Name}: {thrown.Message}");
        Assert.AreEqual(error, thrown.GetType(), name);
        foreach (var text in expected) StringAssert.Contains(thrown.Message, text, name);
    }

    [TestMethod]
    public void CheckpointDirectoryOnAFile_IsRefusedBeforeTraining()
    {
        var folder = Directory.CreateTempSubdirectory("mlft-checkpoint-file-").FullName;
        try
        {
            var file = Path.Combine(folder, "not-a-folder.txt");
            File.WriteAllText(file, "x");
            var ml = new MLContext(seed: 1);
            NamedErrors.Expect<ArgumentException>(() => ml.FineTune().Lora(Classifier() with { CheckpointDirectory = file, CheckpointEverySteps = 10 }),
                "CheckpointDirectory", file, "is a file");
            NamedErrors.Expect<ArgumentException>(() => ml.FineTune().Lora(Classifier() with { CheckpointDirectory = Path.Combine(file, "checkpoints"), CheckpointEverySteps = 10 }),
                "CheckpointDirectory", "cannot be created", file);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
