using System.Diagnostics;
using System.Text.Json;
using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.Tests.Tokenization;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// The featurizer against Hugging Face's QA windows (fixture hf-reference/tokenizers/wordpiece.json: transformers 5.17
/// with tokenizers 0.23, max_length 48, stride 16, padding to max_length, all-MiniLM-L6-v2's vocab.txt), whole-context
/// coverage, and throughput on SQuAD v1.1 train when ../shared is present.
/// </summary>
[TestClass]
public sealed class QaFeaturizerParityTests
{
    private static readonly Lazy<HfTokenizer> MiniLm = new(() => HfTokenizer.FromFolder(TokenizerTestData.MiniLmVocabFolder()));

    /// <summary>
    /// In tokenizers-0.23 mode the featurizer's windows equal the fixture field for field: input_ids, token_type_ids,
    /// attention_mask, and the evaluation offsets (the fixture's offset_mapping where sequence_ids is 1, null elsewhere).
    /// </summary>
    [TestMethod]
    public void Tokenizers023Mode_WindowsEqualHuggingFace()
    {
        var (qa, question, context, maxLength, stride) = LoadQa();
        var featurizer = new QaFeaturizer(MiniLm.Value, maxLength, stride, padToMaxLength: true, ContextWindowing.Tokenizers023);
        var features = featurizer.Featurize(new QaExample("fixture", question, context));

        int expectedWindows = qa.GetProperty("input_ids").GetArrayLength();
        int mismatches = 0, compared = 0;
        for (int w = 0; w < Math.Min(expectedWindows, features.Count); w++)
        {
            var f = features[w];
            var ids = TokenizerTestData.Ints(qa.GetProperty("input_ids")[w]);
            var types = TokenizerTestData.Ints(qa.GetProperty("token_type_ids")[w]);
            var mask = TokenizerTestData.Ints(qa.GetProperty("attention_mask")[w]);
            var offsets = TokenizerTestData.Offsets(qa.GetProperty("offset_mapping")[w]);
            var sequenceIds = qa.GetProperty("sequence_ids")[w].EnumerateArray()
                .Select(e => e.ValueKind == JsonValueKind.Null ? (int?)null : e.GetInt32()).ToArray();
            Assert.AreEqual(ids.Length, f.Length, $"window {w} length");
            for (int i = 0; i < ids.Length; i++)
            {
                // The context is ASCII: the fixture's code-point offsets are UTF-16 offsets.
                (int, int)? expectedOffset = sequenceIds[i] == 1 ? offsets[i] : null;
                if (f.InputIds[i] != ids[i]) mismatches++;
                if (f.TokenTypeIds[i] != types[i]) mismatches++;
                if (f.AttentionMask[i] != mask[i]) mismatches++;
                if (f.ContextOffsets[i] != expectedOffset) mismatches++;
                compared += 4;
            }
        }
        Console.WriteLine($"QA featurizer, tokenizers-0.23 mode vs HF fixture (max_length {maxLength}, stride {stride}): " +
                          $"{features.Count} windows (HF {expectedWindows}), {compared} values compared, {mismatches} mismatches");
        Assert.HasCount(expectedWindows, features);
        Assert.AreEqual(0, mismatches);

        // Labels on these windows: an answer in the first sentence is in window 0 only; the fixture's windows stop early,
        // so an answer in the last sentence is in no window in this mode (the bug WholeContext avoids).
        int early = context.IndexOf("1887 to 1889", StringComparison.Ordinal);
        var first = featurizer.Featurize(new QaExample("early", question, context, "1887 to 1889", early));
        var check = QaFeaturizerTests.CheckLabels(new QaExample("early", question, context, "1887 to 1889", early), first);
        Assert.AreEqual(0, check.Mismatches, check.Report);
        Assert.IsTrue(first[0].ContainsAnswer);
        Assert.AreEqual("1887 to 1889", QaFeaturizerTests.Extract(context, first[0]));
        int late = context.LastIndexOf("World's Fair", StringComparison.Ordinal);
        var lost = featurizer.Featurize(new QaExample("late", question, context, "World's Fair", late));
        Console.WriteLine($"answer at {late} (\"World's Fair\", last sentence): windows holding it in 0.23 mode: {lost.Count(f => f.ContainsAnswer)}");
        Assert.IsFalse(lost.Any(f => f.ContainsAnswer));
    }

    /// <summary>Default windowing: the windows' context tokens together are every token of the context, in order.</summary>
    [TestMethod]
    public void WholeContextMode_EveryContextTokenCovered()
    {
        var (_, question, context, maxLength, stride) = LoadQa();
        var featurizer = new QaFeaturizer(MiniLm.Value, maxLength, stride, padToMaxLength: true);
        var features = featurizer.Featurize(new QaExample("fixture", question, context));
        var all = MiniLm.Value.Encode(context, addSpecialTokens: false).Offsets.ToArray();
        var covered = features.SelectMany(f => f.ContextOffsets.Where(o => o is not null).Select(o => o!.Value)).ToHashSet();
        int missing = all.Count(o => !covered.Contains(o));

        // An answer in the last sentence is labelled in the last window.
        int late = context.LastIndexOf("World's Fair", StringComparison.Ordinal);
        var example = new QaExample("late", question, context, "World's Fair", late);
        var labelled = featurizer.Featurize(example);
        var check = QaFeaturizerTests.CheckLabels(example, labelled);
        Console.WriteLine($"Whole-context windows: {features.Count}; context tokens {all.Length}, covered {all.Length - missing}, missing {missing}; " +
                          $"last-sentence answer labelled in {check.Whole} window(s), mismatches {check.Mismatches}");
        Assert.AreEqual(0, missing);
        Assert.AreEqual(all.Length, covered.Count);
        Assert.IsTrue(labelled[^1].ContainsAnswer);
        Assert.AreEqual(0, check.Mismatches, check.Report);
    }

    /// <summary>
    /// SQuAD v1.1 train (../shared, skipped when absent) at 384/128: windows per second, the window count, and every
    /// gold answer labelled in at least one window with the labelled text equal to the gold text, except answers that
    /// start or end inside a token (the labels then cover the whole token, as in Hugging Face).
    /// </summary>
    [TestMethod]
    public void SquadV11Train_Throughput()
    {
        var path = TestPaths.SharedOrSkip("data", "squad", "squad-v1.1-train.json");
        var questions = SquadJson.Read(path);
        var examples = questions.Select(q => new QaExample(q.Id, q.Question, q.Context, q.AnswerText, q.AnswerStart, q.IsImpossible)).ToList();
        var options = new QuestionAnsweringOptions();
        var featurizer = QaFeaturizer.FromOptions(MiniLm.Value, options);
        featurizer.FeaturizeAll(examples.Take(2000));   // warm up (tiered JIT)

        var watch = Stopwatch.StartNew();
        var features = featurizer.FeaturizeAll(examples);
        watch.Stop();

        int unlabelled = 0, textMismatches = 0, insideWord = 0, multiWindow = 0;
        foreach (var group in features.GroupBy(f => f.ExampleIndex))
        {
            var example = examples[group.Key];
            if (group.Count() > 1) multiWindow++;
            var labelled = group.Where(f => f.ContainsAnswer).ToList();
            if (labelled.Count == 0) { unlabelled++; continue; }
            foreach (var f in labelled)
            {
                if (QaFeaturizerTests.Extract(example.Context, f) == example.AnswerText) continue;
                var (s, e) = (example.AnswerStart, example.AnswerStart + example.AnswerText!.Length);
                // Labels are whole tokens: a gold answer that starts or ends inside a token ("20,980" of "£20,980") cannot be cut out.
                bool cutsWord = f.ContextOffsets.Any(o => o is { } t && (t.Start < s && s < t.End || t.Start < e && e < t.End));
                if (cutsWord) insideWord++;
                else if (textMismatches++ < 5)
                    Console.WriteLine($"  '{example.Id}': gold \"{example.AnswerText}\" at {s}, labelled \"{QaFeaturizerTests.Extract(example.Context, f)}\"");
            }
        }
        double seconds = watch.Elapsed.TotalSeconds;

        // The tokenizer's share: the same windows straight from EncodePairWindows.
        var tokenizerWatch = Stopwatch.StartNew();
        long tokenizerWindows = 0;
        foreach (var example in examples)
            tokenizerWindows += MiniLm.Value.EncodePairWindows(QaFeaturizer.StripLeadingWhitespace(example.Question), example.Context,
                options.MaxSequenceLength, options.DocStride, padToMaxLength: false).Count;
        tokenizerWatch.Stop();
        Console.WriteLine($"SQuAD v1.1 train: {examples.Count} questions -> {features.Count} windows at {options.MaxSequenceLength}/{options.DocStride} " +
                          $"in {seconds:F1} s: {features.Count / seconds:F0} windows/s, {examples.Count / seconds:F0} questions/s (one thread, {Environment.ProcessorCount} cores); " +
                          $"EncodePairWindows alone {tokenizerWindows / tokenizerWatch.Elapsed.TotalSeconds:F0} windows/s");
        Console.WriteLine($"  questions with more than one window {multiWindow}; answers labelled in no window {unlabelled}; " +
                          $"labelled text != gold: {insideWord} where the gold starts/ends inside a token, {textMismatches} otherwise");
        Assert.AreEqual(0, unlabelled);
        Assert.AreEqual(0, textMismatches);
        Assert.AreEqual(tokenizerWindows, features.Count);
        Assert.IsGreaterThanOrEqualTo(examples.Count, features.Count);
    }

    private static (JsonElement Qa, string Question, string Context, int MaxLength, int Stride) LoadQa()
    {
        using var fixture = TokenizerTestData.LoadFixture("wordpiece.json");
        var qa = fixture.RootElement.GetProperty("qa_windows").Clone();
        return (qa, qa.GetProperty("question").GetString()!, qa.GetProperty("context").GetString()!,
            qa.GetProperty("max_length").GetInt32(), qa.GetProperty("stride").GetInt32());
    }
}
