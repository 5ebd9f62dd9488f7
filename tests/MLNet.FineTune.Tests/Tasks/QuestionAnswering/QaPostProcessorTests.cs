using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.Tests.Tokenization;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// Post-processing (utils_qa.py's postprocess_qa_predictions) on hand-made logits over real windows of the MiniLM
/// WordPiece tokenizer: n-best selection, spans outside the context, answer length, windows, and the v2.0 null score.
/// </summary>
[TestClass]
public sealed class QaPostProcessorTests
{
    private const float Low = -10f;
    private static readonly Lazy<HfTokenizer> MiniLm = new(() => HfTokenizer.FromFolder(TokenizerTestData.MiniLmVocabFolder()));
    private const string Context = "The Eiffel Tower was built from 1887 to 1889 as the entrance arch for the World's Fair in Paris.";
    private const string Question = "When was it built?";

    private static QaFeature OneWindow()
    {
        var features = new QaFeaturizer(MiniLm.Value, 384, 128).Featurize(new QaExample("q", Question, Context));
        Assert.HasCount(1, features);
        return features[0];
    }

    /// <summary>The window position of the context token that starts at the first occurrence of <paramref name="word"/>.</summary>
    private static int Position(QaFeature f, string word, int occurrence = 0)
    {
        int at = -1;
        for (int k = 0; k <= occurrence; k++) at = Context.IndexOf(word, at + 1, StringComparison.Ordinal);
        int position = Array.FindIndex(f.ContextOffsets, o => o is { } span && span.Start == at);
        Assert.IsGreaterThanOrEqualTo(0, position, $"no token starts at \"{word}\"");
        return position;
    }

    private static float[] Logits(QaFeature f, params (int Position, float Value)[] set)
    {
        var logits = Enumerable.Repeat(Low, f.Length).ToArray();
        foreach (var (p, v) in set) logits[p] = v;
        return logits;
    }

    [TestMethod]
    public void BestSpan_TextStartAndScore()
    {
        var f = OneWindow();
        var start = Logits(f, (Position(f, "1887"), 5f));
        var end = Logits(f, (Position(f, "1889"), 4f));
        var prediction = new QaPostProcessor().Predict(Context, [f], [start], [end]);
        Console.WriteLine($"answer \"{prediction.Answer}\" at {prediction.AnswerStart}, score {prediction.Score}, p {prediction.Probability:F4}, {prediction.Candidates.Count} candidates");
        Assert.AreEqual("1887 to 1889", prediction.Answer);
        Assert.AreEqual(Context.IndexOf("1887", StringComparison.Ordinal), prediction.AnswerStart);
        Assert.AreEqual(9f, prediction.Score);
        Assert.IsNull(prediction.NoAnswerScore);
        Assert.AreEqual(prediction.Candidates[0].Text, prediction.Answer);
        Assert.AreEqual(1.0, prediction.Candidates.Sum(c => (double)c.Probability), 1e-5);
        // Start 1887 pairs with [CLS] and the 18 lowest positions among the tied -10 ends; many spans are valid, 20 are kept.
        Assert.HasCount(20, prediction.Candidates);
    }

    /// <summary>A better-scoring span longer than MaxAnswerLength tokens is skipped; with a larger limit it wins.</summary>
    [TestMethod]
    public void MaxAnswerLength_ExcludesLongerSpans()
    {
        var f = OneWindow();
        int first = Position(f, "The"), last = Position(f, "Paris");
        var start = Logits(f, (first, 8f), (Position(f, "1887"), 5f));
        var end = Logits(f, (last, 8f), (Position(f, "1889"), 4f));
        int longSpan = last - first + 1;
        var limited = new QaPostProcessor(maxAnswerLength: 5).Predict(Context, [f], [start], [end]);
        var exact = new QaPostProcessor(maxAnswerLength: longSpan).Predict(Context, [f], [start], [end]);
        var oneShort = new QaPostProcessor(maxAnswerLength: longSpan - 1).Predict(Context, [f], [start], [end]);
        Console.WriteLine($"whole-context span {longSpan} tokens; limit 5 -> \"{limited.Answer}\"; limit {longSpan} -> \"{exact.Answer}\"; limit {longSpan - 1} -> \"{oneShort.Answer}\"");
        Assert.AreEqual("1887 to 1889", limited.Answer);
        Assert.AreEqual(9f, limited.Score);
        Assert.AreEqual(Context[..Context.LastIndexOf("Paris", StringComparison.Ordinal)] + "Paris", exact.Answer);
        Assert.AreEqual(16f, exact.Score);
        Assert.AreNotEqual(exact.Answer, oneShort.Answer);
    }

    /// <summary>The highest logits on question tokens, [CLS] and [SEP] are not answers (v1.1 has no null answer).</summary>
    [TestMethod]
    public void SpansOutsideTheContext_AreSkipped()
    {
        var f = OneWindow();
        int sep = Array.FindIndex(f.ContextOffsets, o => o is not null) - 1;
        var start = Logits(f, (0, 30f), (1, 20f), (sep, 19f), (Position(f, "1887"), 5f));
        var end = Logits(f, (0, 30f), (2, 20f), (sep, 19f), (f.Length - 1, 18f), (Position(f, "1889"), 4f));
        var prediction = new QaPostProcessor().Predict(Context, [f], [start], [end]);
        Assert.AreEqual("1887 to 1889", prediction.Answer);
        Assert.IsTrue(prediction.Candidates.All(c => !c.IsNoAnswer && c.Text.Length > 0));

        // End before start: the best pair is reversed, so the next valid pair wins.
        var reversedStart = Logits(f, (Position(f, "1889"), 7f), (Position(f, "1887"), 1f));
        var reversedEnd = Logits(f, (Position(f, "1887"), 7f), (Position(f, "1889"), 1f));
        var reversed = new QaPostProcessor().Predict(Context, [f], [reversedStart], [reversedEnd]);
        Console.WriteLine($"outside-context logits -> \"{prediction.Answer}\"; reversed pair -> \"{reversed.Answer}\" (score {reversed.Score})");
        Assert.AreEqual("1889", reversed.Answer);
        Assert.AreEqual(8f, reversed.Score);
    }

    /// <summary>
    /// As in Hugging Face, n-best is taken over all positions of the window: with NBest 1 the top start is a question
    /// token, so no span remains and the answer is "" (HF's "empty" stand-in, score 0).
    /// </summary>
    [TestMethod]
    public void NBest_CountsPositionsOutsideTheContext()
    {
        var f = OneWindow();
        var start = Logits(f, (1, 20f), (Position(f, "1887"), 5f));
        var end = Logits(f, (Position(f, "1889"), 4f));
        var one = new QaPostProcessor(nBest: 1).Predict(Context, [f], [start], [end]);
        var two = new QaPostProcessor(nBest: 2).Predict(Context, [f], [start], [end]);
        Console.WriteLine($"NBest 1 -> \"{one.Answer}\" ({one.AnswerStart}, score {one.Score}); NBest 2 -> \"{two.Answer}\"");
        Assert.AreEqual("", one.Answer);
        Assert.AreEqual(-1, one.AnswerStart);
        Assert.AreEqual(0f, one.Score);
        Assert.AreEqual("1887 to 1889", two.Answer);
        // The second-best end is [CLS] (equal logits go to the lower position), so one span is left.
        Assert.HasCount(1, two.Candidates);
    }

    /// <summary>The answer may come from any window; its start is an index into the whole context.</summary>
    [TestMethod]
    public void AcrossWindows_BestSpanOfAnyWindow()
    {
        var context = string.Join(" ", Enumerable.Range(0, 12).Select(i => $"Sentence number {i} mentions the year {1800 + i} and the city of Lyon."));
        var windows = new QaFeaturizer(MiniLm.Value, 48, 12).Featurize(new QaExample("w", Question, context));
        Assert.IsGreaterThan(3, windows.Count);
        int target = context.IndexOf("1807", StringComparison.Ordinal);
        var starts = new List<float[]>();
        var ends = new List<float[]>();
        int labelled = -1;
        for (int w = 0; w < windows.Count; w++)
        {
            var f = windows[w];
            int p = Array.FindIndex(f.ContextOffsets, o => o is { } s && s.Start == target);
            // A weaker span in every window; "1807" strongest in the last window holding it.
            int any = Array.FindIndex(f.ContextOffsets, o => o is not null);
            var start = Logits(f, (any, 2f));
            var end = Logits(f, (any, 2f));
            if (p >= 0) { start[p] = 3f + w; end[p] = 3f + w; labelled = w; }
            starts.Add(start);
            ends.Add(end);
        }
        var prediction = new QaPostProcessor().Predict(context, windows, starts, ends);
        Console.WriteLine($"{windows.Count} windows; \"1807\" strongest in window {labelled}: answer \"{prediction.Answer}\" at {prediction.AnswerStart}, score {prediction.Score}");
        Assert.AreEqual("1807", prediction.Answer);
        Assert.AreEqual(target, prediction.AnswerStart);
        Assert.AreEqual(2f * (3f + labelled), prediction.Score);
    }

    /// <summary>
    /// SQuAD v2.0: the null score is the smallest [CLS] start+end over windows; the answer is "" when null minus the
    /// best span exceeds the threshold, and the difference is reported either way.
    /// </summary>
    [TestMethod]
    public void VersionTwo_NullScoreMinimumOverWindowsAndThreshold()
    {
        var context = string.Join(" ", Enumerable.Range(0, 8).Select(i => $"Sentence number {i} mentions the year {1800 + i} and the city of Lyon."));
        var windows = new QaFeaturizer(MiniLm.Value, 48, 12).Featurize(new QaExample("v2", Question, context));
        Assert.IsGreaterThan(1, windows.Count);
        var starts = windows.Select(f => Logits(f)).ToList();
        var ends = windows.Select(f => Logits(f)).ToList();
        // [CLS]: window 0 says 2 + 2 = 4, window 1 says 1 + 0.5 = 1.5, the rest 3 + 3 = 6: the null score is 1.5.
        for (int w = 0; w < windows.Count; w++) { starts[w][0] = 3f; ends[w][0] = 3f; }
        (starts[0][0], ends[0][0]) = (2f, 2f);
        (starts[1][0], ends[1][0]) = (1f, 0.5f);
        var f0 = windows[0];
        int p = Array.FindIndex(f0.ContextOffsets, o => o is not null) + 2;
        starts[0][p] = 1.5f;
        ends[0][p] = 1.5f;   // best span: 3.0
        string spanText = context[f0.ContextOffsets[p]!.Value.Start..f0.ContextOffsets[p]!.Value.End];

        var answered = new QaPostProcessor(versionTwoWithNegative: true).Predict(context, windows, starts, ends);
        var nulled = new QaPostProcessor(versionTwoWithNegative: true, nullScoreDifferenceThreshold: -2.0).Predict(context, windows, starts, ends);
        var v1 = new QaPostProcessor(versionTwoWithNegative: false).Predict(context, windows, starts, ends);
        Console.WriteLine($"v2 threshold 0 -> \"{answered.Answer}\" (null odds {answered.NoAnswerScore}); threshold -2 -> \"{nulled.Answer}\" (score {nulled.Score}, p {nulled.Probability:F4}); v1 -> \"{v1.Answer}\"");
        Assert.AreEqual(spanText, answered.Answer);
        Assert.AreEqual(3f, answered.Score);
        Assert.AreEqual(-1.5f, answered.NoAnswerScore);   // 1.5 - 3; the largest [CLS] score (6) would give +3 and answer ""
        Assert.AreEqual("", nulled.Answer);
        Assert.AreEqual(-1, nulled.AnswerStart);
        Assert.AreEqual(1.5f, nulled.Score);
        Assert.AreEqual(-1.5f, nulled.NoAnswerScore);
        Assert.AreEqual(1, answered.Candidates.Count(c => c.IsNoAnswer), "the null candidate joins the n-best once");
        Assert.AreEqual(spanText, v1.Answer);
        Assert.IsNull(v1.NoAnswerScore);

        // A weaker span: null - best = 1.5 - 1 = 0.5 > 0, so "".
        starts[0][p] = 0.5f;
        ends[0][p] = 0.5f;
        var weak = new QaPostProcessor(versionTwoWithNegative: true).Predict(context, windows, starts, ends);
        Assert.AreEqual("", weak.Answer);
        Assert.AreEqual(0.5f, weak.NoAnswerScore);
        var probability = weak.Candidates.Single(c => c.IsNoAnswer).Probability;
        Assert.AreEqual(probability, weak.Probability);
        var expected = Math.Exp(1.5) / weak.Candidates.Sum(c => Math.Exp(c.Score));
        Assert.AreEqual(expected, weak.Probability, 1e-6);
    }

    /// <summary>
    /// Random logits over several windows against a brute-force search of every pair of the n-best starts and ends:
    /// the chosen answer's score and text are the maximum (0 mismatches over 300 cases).
    /// </summary>
    [TestMethod]
    public void RandomLogits_EqualBruteForceSearch()
    {
        var context = string.Join(" ", Enumerable.Range(0, 10).Select(i => $"Sentence {i} names {1800 + i} and Lyon."));
        var windows = new QaFeaturizer(MiniLm.Value, 40, 10).Featurize(new QaExample("r", Question, context));
        var random = new Random(7);
        int mismatches = 0;
        const int nBest = 5, maxLength = 4;
        var processor = new QaPostProcessor(nBest, maxLength);
        for (int trial = 0; trial < 300; trial++)
        {
            var starts = windows.Select(f => Enumerable.Range(0, f.Length).Select(_ => (float)random.NextDouble() * 10).ToArray()).ToList();
            var ends = windows.Select(f => Enumerable.Range(0, f.Length).Select(_ => (float)random.NextDouble() * 10).ToArray()).ToList();
            float best = float.NegativeInfinity;
            var bestTexts = new HashSet<string>();
            for (int w = 0; w < windows.Count; w++)
            {
                var o = windows[w].ContextOffsets;
                var topS = Enumerable.Range(0, windows[w].Length).OrderByDescending(i => starts[w][i]).Take(nBest);
                var topE = Enumerable.Range(0, windows[w].Length).OrderByDescending(i => ends[w][i]).Take(nBest).ToList();
                foreach (var s in topS)
                    foreach (var e in topE)
                    {
                        if (o[s] is null || o[e] is null || e < s || e - s + 1 > maxLength) continue;
                        float score = starts[w][s] + ends[w][e];
                        var text = context[o[s]!.Value.Start..o[e]!.Value.End];
                        if (score > best) { best = score; bestTexts.Clear(); }
                        if (score == best) bestTexts.Add(text);
                    }
            }
            var prediction = processor.Predict(context, windows, starts, ends);
            bool ok = best == float.NegativeInfinity ? prediction.Answer == "" : prediction.Score == best && bestTexts.Contains(prediction.Answer);
            if (!ok) mismatches++;
        }
        Console.WriteLine($"{windows.Count} windows, 300 random cases (NBest {nBest}, MaxAnswerLength {maxLength}): {mismatches} mismatches vs brute force");
        Assert.AreEqual(0, mismatches);
    }

    [TestMethod]
    public void TopPositions_LargestFirstTiesInPositionOrder()
    {
        var random = new Random(3);
        int mismatches = 0;
        for (int trial = 0; trial < 500; trial++)
        {
            int length = random.Next(1, 60);
            var values = Enumerable.Range(0, length).Select(_ => (float)random.Next(0, 8)).ToArray();   // many ties
            int count = random.Next(1, 25);
            var expected = Enumerable.Range(0, length).OrderByDescending(i => values[i]).ThenBy(i => i).Take(count).ToArray();
            if (!expected.SequenceEqual(QaPostProcessor.TopPositions(values, length, count))) mismatches++;
        }
        Console.WriteLine($"TopPositions vs sort: 500 cases, {mismatches} mismatches");
        Assert.AreEqual(0, mismatches);
    }

    [TestMethod]
    public void Errors_LogitsThatDoNotFitTheWindows()
    {
        var f = OneWindow();
        var processor = new QaPostProcessor();
        var count = Assert.ThrowsExactly<ArgumentException>(() => processor.Predict(Context, [f], [], []));
        var shortLogits = Assert.ThrowsExactly<ArgumentException>(() => processor.Predict(Context, [f], [new float[3]], [new float[3]]));
        StringAssert.Contains(shortLogits.Message, "'q'");
        Console.WriteLine(count.Message);
        Console.WriteLine(shortLogits.Message);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new QaPostProcessor(nBest: 0));
    }
}
