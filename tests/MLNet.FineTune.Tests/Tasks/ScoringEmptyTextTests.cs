using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Tasks;

/// <summary>
/// Real data and live input hold empty strings: one empty (or null) text at prediction time must not fail a whole
/// Transform / Evaluate or throw in a PredictionEngine. A classifier scores an empty text as the tokenizer encodes it
/// ([CLS] [SEP]); a question answerer answers an empty context or question with "no answer" (Answer "", AnswerStart -1).
/// Training still refuses empty rows (the *InputErrorTests).
/// </summary>
[TestClass]
public sealed class ScoringEmptyTextTests
{
    public sealed class Review { public string? Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ReviewPrediction { public bool PredictedLabel { get; set; } public float Score { get; set; } public float Probability { get; set; } }

    public sealed class QaRow
    {
        public string Id { get; set; } = "";
        public string? Context { get; set; } = "Anna lives in Oslo.";
        public string? Question { get; set; } = "Where does Anna live?";
        public string AnswerText { get; set; } = "Oslo";
        public int AnswerStart { get; set; } = 14;
        public string[] AllAnswers { get; set; } = ["Oslo"];
    }

    public sealed class QaInput { public string? Context { get; set; } = ""; public string? Question { get; set; } = ""; }
    public sealed class QaOutput { public string Answer { get; set; } = ""; public int AnswerStart { get; set; } }

    private static List<Review> Reviews(int count) =>
        Enumerable.Range(0, count).Select(i => new Review { Text = i % 2 == 0 ? "the movie was good" : "the food was awful", Label = i % 2 == 0 }).ToList();

    [TestMethod]
    public void AClassifierScoresEmptyTextsAsTheTokenizerEncodesThem()
    {
        var ml = new MLContext(seed: 1);
        var model = ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32, Seed = 3,
        }).Fit(ml.Data.LoadFromEnumerable(Reviews(8)));

        var test = Reviews(6);
        test[1].Text = "";
        test[4].Text = null;
        var scored = model.Transform(ml.Data.LoadFromEnumerable(test));
        var scores = scored.GetColumn<float>("Score").ToArray();
        Console.WriteLine($"scores: {string.Join(", ", scores.Select(s => s.ToString("F4")))}");
        Assert.HasCount(6, scores);
        Assert.IsTrue(scores.All(float.IsFinite), "every row, empty ones included, gets a finite score");
        Assert.AreEqual(scores[1], scores[4], "null and \"\" are the same empty text");

        var metrics = ml.BinaryClassification.Evaluate(scored);
        Console.WriteLine($"accuracy over data with empty rows: {metrics.Accuracy:F3}");

        var engine = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model);
        var empty = engine.Predict(new Review { Text = "" });
        Assert.AreEqual(scores[1], empty.Score, 1e-5, "PredictionEngine and Transform score the empty text alike");
        Assert.AreEqual(scores[4], engine.Predict(new Review { Text = null }).Score, 1e-5);
    }

    [TestMethod]
    public void AQuestionAnswererAnswersEmptyContextsAndQuestionsWithNoAnswer()
    {
        var ml = new MLContext(seed: 1);
        var rows = Enumerable.Range(0, 4).Select(i => new QaRow { Id = $"q{i}" }).ToList();
        var model = ml.FineTune().Lora(new QuestionAnsweringOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 64, DocStride = 16, Epochs = 1, BatchSize = 4,
            Precision = TrainingPrecision.Float32, Seed = 3,
        }).Fit(ml.Data.LoadFromEnumerable(rows));

        var test = Enumerable.Range(0, 5).Select(i => new QaRow { Id = $"t{i}" }).ToList();
        test[1].Context = "";
        test[2].Question = null;
        test[3].Question = "   ";
        var scored = model.Transform(ml.Data.LoadFromEnumerable(test));
        var answers = scored.GetColumn<string>("Answer").ToArray();
        var starts = scored.GetColumn<int>("AnswerStart").ToArray();
        Console.WriteLine(string.Join("; ", answers.Select((a, i) => $"t{i}: \"{a}\" at {starts[i]}")));
        foreach (int i in new[] { 1, 2, 3 })
        {
            Assert.AreEqual("", answers[i], $"row {i}: an empty context or question has no answer");
            Assert.AreEqual(-1, starts[i], $"row {i}");
        }
        var metrics = ml.FineTune().EvaluateQuestionAnswering(scored);
        Console.WriteLine($"over data with empty rows: {metrics}");

        var engine = ml.Model.CreatePredictionEngine<QaInput, QaOutput>(model);
        var none = engine.Predict(new QaInput { Context = "", Question = "Where does Anna live?" });
        Assert.AreEqual("", none.Answer);
        Assert.AreEqual(-1, none.AnswerStart);
        Assert.AreEqual(-1, engine.Predict(new QaInput { Context = "Anna lives in Oslo.", Question = null }).AnswerStart);
    }
}
