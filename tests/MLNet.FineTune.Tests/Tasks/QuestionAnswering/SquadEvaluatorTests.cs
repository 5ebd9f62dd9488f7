namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// The evaluator on small hand-made datasets whose scores are worked out by hand in the comments.
/// </summary>
[TestClass]
public sealed class SquadEvaluatorTests
{
    private static SquadQuestion Q(string id, params string[] answers) =>
        new(id, "title", "context", "question?", answers.Select(a => new SquadAnswer(a, 0)).ToList(), answers.Length == 0);

    // Five questions, three with an answer:
    //   q1 gold "Denver Broncos",    pred "Denver Broncos": EM 1, F1 1,   na 0.1
    //   q2 gold "Carolina Panthers", pred "Panthers":       EM 0, F1 2/3, na 0.6   (p = 1, r = 1/2)
    //   q3 no answer,                pred "Santa Clara":    EM 0, F1 0,   na 0.3
    //   q4 no answer,                pred "":               EM 1, F1 1,   na 0.8
    //   q5 gold "Levi's Stadium",    pred "the stadium":    EM 0, F1 2/3, na 0.9   ([stadium] vs [levis stadium])
    private static readonly SquadQuestion[] Dataset =
        [Q("q1", "Denver Broncos"), Q("q2", "Carolina Panthers"), Q("q3"), Q("q4"), Q("q5", "Levi's Stadium")];

    private static readonly Dictionary<string, string> Predictions = new()
    {
        ["q1"] = "Denver Broncos", ["q2"] = "Panthers", ["q3"] = "Santa Clara", ["q4"] = "", ["q5"] = "the stadium",
    };

    private static readonly Dictionary<string, double> NoAnswerProbabilities = new()
    {
        ["q1"] = 0.1, ["q2"] = 0.6, ["q3"] = 0.3, ["q4"] = 0.8, ["q5"] = 0.9,
    };

    [TestMethod]
    public void V2SplitsWithoutProbabilities()
    {
        var m = SquadEvaluator.Evaluate(Dataset, Predictions);
        Console.WriteLine(m);
        Assert.AreEqual(SquadVersion.V2, m.Version);                       // auto: the dataset has unanswerable questions
        AssertClose(100.0 * 2 / 5, m.ExactMatch, "exact");                 // q1, q4
        AssertClose(100.0 * (1 + 2.0 / 3 + 0 + 1 + 2.0 / 3) / 5, m.F1, "f1");
        Assert.AreEqual(5, m.Total);
        AssertClose(100.0 / 3, m.HasAnsExact, "HasAns_exact");
        AssertClose(100.0 * (1 + 2.0 / 3 + 2.0 / 3) / 3, m.HasAnsF1, "HasAns_f1");
        Assert.AreEqual(3, m.HasAnsTotal);
        AssertClose(50, m.NoAnsExact, "NoAns_exact");
        AssertClose(50, m.NoAnsF1, "NoAns_f1");
        Assert.AreEqual(2, m.NoAnsTotal);
        Assert.IsNull(m.BestExact);
        Assert.IsNull(m.BestF1Threshold);
        CollectionAssert.AreEqual(new[] { "exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total" },
            m.ToOfficialDictionary().Keys.ToArray());
    }

    [TestMethod]
    public void BestThresholdsFollowTheOfficialWalk()
    {
        // Start: every question answered "" -> the 2 no-answer questions right (score 2 of 5).
        // Walk by rising na: q1 (0.1) +1 -> 3 (best, thresh 0.1); q3 (0.3) non-empty on no-answer -1 -> 2;
        // q2 (0.6) + EM 0 / F1 2/3; q4 (0.8) "" on no-answer 0; q5 (0.9) + EM 0 / F1 2/3.
        // EM: best 3 at 0.1 -> 60 %.  F1: 3, 2, 2.667, 2.667, 3.333 -> best 3.333 at 0.9 -> 66.67 %.
        var m = SquadEvaluator.Evaluate(Dataset, Predictions, NoAnswerProbabilities);
        Console.WriteLine(m);
        AssertClose(60, m.BestExact, "best_exact");
        AssertClose(0.1, m.BestExactThreshold, "best_exact_thresh");
        AssertClose(100.0 * (10.0 / 3) / 5, m.BestF1, "best_f1");
        AssertClose(0.9, m.BestF1Threshold, "best_f1_thresh");
        // With the default threshold 1.0 no probability is above it: the plain scores are unchanged.
        AssertClose(40, m.ExactMatch, "exact");
        AssertClose(200.0 / 3, m.F1, "f1");
    }

    [TestMethod]
    public void NoAnswerThresholdTurnsConfidentNoAnswersIntoEmptyAnswers()
    {
        // Threshold 0.5: q2 (0.6), q4 (0.8), q5 (0.9) are taken as "": q2 0, q4 1, q5 0; q1 1, q3 0 as before.
        var m = SquadEvaluator.Evaluate(Dataset, Predictions, NoAnswerProbabilities, noAnswerProbabilityThreshold: 0.5);
        Console.WriteLine(m);
        AssertClose(40, m.ExactMatch, "exact");
        AssertClose(40, m.F1, "f1");
        AssertClose(100.0 / 3, m.HasAnsF1, "HasAns_f1");
        AssertClose(50, m.NoAnsF1, "NoAns_f1");
        // The best thresholds use the raw scores, whatever the threshold.
        AssertClose(60, m.BestExact, "best_exact");
    }

    [TestMethod]
    public void BestThresholdTiesFollowTheProbabilityOrder()
    {
        // Equal probabilities: the script walks them in the file's order and may stop inside the tie.
        // qa (has answer, right) then qb (no answer, non-empty): 1 -> 2 (best at 0.5) -> 1: 100 %.
        // qb then qa: 1 -> 0 -> 1, never above the start: 50 % at threshold 0.
        SquadQuestion[] dataset = [Q("qa", "x"), Q("qb")];
        var predictions = new Dictionary<string, string> { ["qa"] = "x", ["qb"] = "y" };
        var first = SquadEvaluator.Evaluate(dataset, predictions, new Dictionary<string, double> { ["qa"] = 0.5, ["qb"] = 0.5 });
        var second = SquadEvaluator.Evaluate(dataset, predictions, new Dictionary<string, double> { ["qb"] = 0.5, ["qa"] = 0.5 });
        Console.WriteLine(first);
        Console.WriteLine(second);
        AssertClose(100, first.BestF1, "best_f1 (qa first)");
        AssertClose(0.5, first.BestF1Threshold, "best_f1_thresh (qa first)");
        AssertClose(50, second.BestF1, "best_f1 (qb first)");
        AssertClose(0.0, second.BestF1Threshold, "best_f1_thresh (qb first)");
    }

    [TestMethod]
    public void V2GoldAnswersThatNormaliseToNothingMeanNoAnswer()
    {
        // Gold "The" normalises to "": the script scores against [""], yet the question counts as HasAns
        // (it has an answer in the file).
        SquadQuestion[] dataset = [Q("q", "The"), Q("r", "Denver")];
        var m = SquadEvaluator.Evaluate(dataset, new Dictionary<string, string> { ["q"] = "", ["r"] = "Denver" }, version: SquadVersion.V2);
        Console.WriteLine(m);
        AssertClose(100, m.ExactMatch, "exact");
        AssertClose(100, m.F1, "f1");
        Assert.AreEqual(2, m.HasAnsTotal);
        Assert.IsNull(m.NoAnsTotal);
        // v1.1 on the same data: EM 1 ("" == "" after normalisation) but F1 0 (no common token).
        var v1 = SquadEvaluator.Evaluate(dataset, new Dictionary<string, string> { ["q"] = "", ["r"] = "Denver" }, version: SquadVersion.V1);
        Console.WriteLine(v1);
        AssertClose(100, v1.ExactMatch, "v1 exact_match");
        AssertClose(50, v1.F1, "v1 f1");
    }

    [TestMethod]
    public void V1TakesTheBestGoldAnswerAndScoresUnansweredQuestionsZero()
    {
        // a: golds "Denver Broncos" / "Broncos": pred "the Broncos" -> EM 1 (second gold), F1 1.
        // b: gold "Carolina Panthers", pred "Carolina": EM 0, F1 2/3.  c: no prediction -> 0, still in the total.
        SquadQuestion[] dataset = [Q("a", "Denver Broncos", "Broncos"), Q("b", "Carolina Panthers"), Q("c", "Santa Clara")];
        var predictions = new Dictionary<string, string> { ["a"] = "the Broncos", ["b"] = "Carolina", ["extra"] = "ignored" };
        var m = SquadEvaluator.Evaluate(dataset, predictions);
        Console.WriteLine(m);
        Assert.AreEqual(SquadVersion.V1, m.Version);
        AssertClose(100.0 / 3, m.ExactMatch, "exact_match");
        AssertClose(100.0 * (1 + 2.0 / 3) / 3, m.F1, "f1");
        Assert.AreEqual(3, m.Total);
        CollectionAssert.AreEqual(new[] { "c" }, m.UnansweredQuestionIds.ToArray());
        Assert.IsNull(m.HasAnsExact);
        CollectionAssert.AreEqual(new[] { "exact_match", "f1" }, m.ToOfficialDictionary().Keys.ToArray());
        StringAssert.Contains(m.ToString(), "1 questions had no prediction");
    }

    [TestMethod]
    public void V2UnansweredQuestionsScoreZeroInTheirSplit()
    {
        SquadQuestion[] dataset = [Q("a", "x"), Q("b"), Q("c")];
        var m = SquadEvaluator.Evaluate(dataset, new Dictionary<string, string> { ["a"] = "x", ["b"] = "" });
        Console.WriteLine(m);
        AssertClose(200.0 / 3, m.ExactMatch, "exact");
        Assert.AreEqual(3, m.Total);
        AssertClose(50, m.NoAnsExact, "NoAns_exact");
        CollectionAssert.AreEqual(new[] { "c" }, m.UnansweredQuestionIds.ToArray());
    }

    [TestMethod]
    public void ClearErrors()
    {
        var v1Error = Assert.ThrowsExactly<ArgumentException>(() =>
            SquadEvaluator.Evaluate([Q("a", "x"), Q("nothing")], new Dictionary<string, string> { ["a"] = "x", ["nothing"] = "" }, version: SquadVersion.V1));
        StringAssert.Contains(v1Error.Message, "'nothing'");

        var naError = Assert.ThrowsExactly<ArgumentException>(() =>
            SquadEvaluator.Evaluate(Dataset, Predictions, new Dictionary<string, double> { ["q1"] = 0.5 }));
        StringAssert.Contains(naError.Message, "'q2'");

        Assert.ThrowsExactly<ArgumentException>(() =>
            SquadEvaluator.Evaluate(Dataset, Predictions, NoAnswerProbabilities, SquadVersion.V1));
        Assert.ThrowsExactly<ArgumentException>(() => SquadEvaluator.Evaluate([], Predictions));
    }

    private static void AssertClose(double expected, double? actual, string name)
    {
        Assert.IsNotNull(actual, $"{name} is missing");
        Console.WriteLine($"{name}: measured {actual.Value:R}, expected {expected:R}, diff {actual.Value - expected:E2}");
        Assert.AreEqual(expected, actual.Value, 1e-9, name);
    }
}
