using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>
/// WordPiece against Hugging Face's BertTokenizerFast (fixture hf-reference/tokenizers/wordpiece.json, all-MiniLM-L6-v2
/// vocab, uncased): ids and offsets of 15 texts, and the question-answering overflow windows.
/// </summary>
[TestClass]
public sealed class WordPieceParityTests
{
    private static HfTokenizer FromVocabTxt() => HfTokenizer.FromFolder(TokenizerTestData.MiniLmVocabFolder());

    [TestMethod]
    public void VocabTxtFolder_LoadsUncasedWordPieceWithBertSpecialTokens()
    {
        var tokenizer = FromVocabTxt();
        var wordPiece = tokenizer as HfWordPieceTokenizer;
        Assert.IsNotNull(wordPiece, $"expected HfWordPieceTokenizer, got {tokenizer.GetType().Name}");
        Assert.IsTrue(wordPiece.LowerCase);
        Assert.IsTrue(wordPiece.StripAccents);
        Assert.AreEqual(30522, tokenizer.VocabularySize);
        Assert.AreEqual(101, tokenizer.ClsTokenId);
        Assert.AreEqual(102, tokenizer.SepTokenId);
        Assert.AreEqual(0, tokenizer.PadTokenId);
        Assert.AreEqual(100, tokenizer.UnkTokenId);
        Assert.AreEqual(103, tokenizer.MaskTokenId);
        Assert.IsNull(tokenizer.BosTokenId);
        Assert.IsNull(tokenizer.EosTokenId);
    }

    [TestMethod]
    public void Texts_VocabTxt_IdsAndOffsetsEqualHuggingFace() => AssertTextsMatch(FromVocabTxt(), "vocab.txt");

    [TestMethod]
    public void Texts_TokenizerJson_IdsAndOffsetsEqualHuggingFace()
    {
        var tokenizer = HfTokenizer.FromFolder(TokenizerTestData.MiniLmTokenizerJsonFolder());
        Assert.IsInstanceOfType<HfWordPieceTokenizer>(tokenizer);
        AssertTextsMatch(tokenizer, "tokenizer.json");
    }

    private static void AssertTextsMatch(HfTokenizer tokenizer, string source)
    {
        using var fixture = TokenizerTestData.LoadFixture("wordpiece.json");
        var texts = TokenizerTestData.ReadTexts(fixture);
        int idMismatches = 0, offsetMismatches = 0;
        var report = new List<string>();
        foreach (var reference in texts)
        {
            var encoding = tokenizer.Encode(reference.Text);
            var expectedOffsets = reference.Offsets.Select(o => TokenizerTestData.ToUtf16(reference.Text, o)).ToArray();
            bool idsEqual = encoding.Ids.SequenceEqual(reference.Ids);
            bool offsetsEqual = encoding.Offsets.SequenceEqual(expectedOffsets);
            if (!idsEqual) idMismatches++;
            if (!offsetsEqual) offsetMismatches++;
            if (!idsEqual || !offsetsEqual)
                report.Add($"'{reference.Text}':\n  ours [{string.Join(" ", encoding.Ids)}] {string.Join(" ", encoding.Offsets)}\n  HF   [{string.Join(" ", reference.Ids)}] {string.Join(" ", expectedOffsets)}");
        }
        Console.WriteLine($"WordPiece ({source}) vs Hugging Face: {texts.Count} texts, {texts.Count - idMismatches}/{texts.Count} ids equal, " +
                          $"{texts.Count - offsetMismatches}/{texts.Count} offsets equal; id mismatches {idMismatches}, offset mismatches {offsetMismatches}");
        foreach (var line in report) Console.WriteLine(line);
        Assert.AreEqual(15, texts.Count);
        Assert.AreEqual(0, idMismatches, "texts whose ids differ from Hugging Face");
        Assert.AreEqual(0, offsetMismatches, "texts whose offsets differ from Hugging Face");
    }

    /// <summary>
    /// The fixture comes from transformers 5.17 with tokenizers 0.23.x, whose truncation early exit stops tokenizing the
    /// context once it holds max_length tokens (huggingface/tokenizers#2091): 2 windows, the second cut short.
    /// ContextWindowing.Tokenizers023 reproduces that output field for field.
    /// </summary>
    [TestMethod]
    public void QaWindows_Tokenizers023_EqualHuggingFaceOverflowingTokens()
    {
        var (tokenizer, qa, context) = LoadQa();
        var windows = tokenizer.EncodePairWindows(qa.GetProperty("question").GetString()!, context,
            qa.GetProperty("max_length").GetInt32(), qa.GetProperty("stride").GetInt32(), windowing: ContextWindowing.Tokenizers023);

        int expectedCount = qa.GetProperty("input_ids").GetArrayLength();
        int mismatches = 0;
        for (int w = 0; w < Math.Min(windows.Count, expectedCount); w++)
            mismatches += CompareWindow(windows[w], qa, w);
        Console.WriteLine($"QA windows (tokenizers 0.23 early exit, max_length 48, stride 16): {windows.Count} windows (HF {expectedCount}), {mismatches} mismatching fields");
        Assert.HasCount(expectedCount, windows);
        Assert.AreEqual(0, mismatches);
    }

    /// <summary>
    /// Default windowing covers the whole context (tokenizers up to 0.22.2): the first window equals Hugging Face's, and
    /// every later window is the next slice of the context's tokens, starting stride tokens before the previous end.
    /// </summary>
    [TestMethod]
    public void QaWindows_WholeContext_FirstWindowEqualsHuggingFaceAndWindowsCoverTheContext()
    {
        var (tokenizer, qa, context) = LoadQa();
        var question = qa.GetProperty("question").GetString()!;
        int maxLength = qa.GetProperty("max_length").GetInt32(), stride = qa.GetProperty("stride").GetInt32();
        var windows = tokenizer.EncodePairWindows(question, context, maxLength, stride);

        int firstWindowMismatches = CompareWindow(windows[0], qa, 0);
        var contextIds = tokenizer.Encode(context, addSpecialTokens: false).Ids;
        int questionTokens = tokenizer.Encode(question, addSpecialTokens: false).Length;
        int perWindow = maxLength - questionTokens - 3; // [CLS] q [SEP] c [SEP]
        int sliceMismatches = 0, covered = 0;
        for (int w = 0; w < windows.Count; w++)
        {
            var window = windows[w];
            var ids = Enumerable.Range(0, window.Length).Where(i => window.SequenceIds[i] == 1).Select(i => window.Ids[i]).ToArray();
            int start = w * (perWindow - stride);
            var expected = contextIds.Skip(start).Take(perWindow).ToArray();
            if (!ids.SequenceEqual(expected)) sliceMismatches++;
            covered = start + ids.Length;
            Assert.AreEqual(maxLength, window.Length);
        }
        Console.WriteLine($"QA windows (whole context): {windows.Count} windows over {contextIds.Count} context tokens ({perWindow} per window, stride {stride}); " +
                          $"first-window field mismatches vs HF {firstWindowMismatches}, slice mismatches {sliceMismatches}, tokens covered {covered}/{contextIds.Count}");
        Assert.AreEqual(0, firstWindowMismatches);
        Assert.AreEqual(0, sliceMismatches);
        Assert.AreEqual(contextIds.Count, covered);
        Assert.HasCount(3, windows); // 69 context tokens, 39 per window, step 23: [0,39) [23,62) [46,69)
    }

    private static (HfTokenizer Tokenizer, System.Text.Json.JsonElement Qa, string Context) LoadQa()
    {
        var fixture = TokenizerTestData.LoadFixture("wordpiece.json");
        var qa = fixture.RootElement.GetProperty("qa_windows").Clone();
        return (FromVocabTxt(), qa, qa.GetProperty("context").GetString()!);
    }

    /// <summary>Number of fields of window <paramref name="w"/> that differ from the fixture (printed by name).</summary>
    private static int CompareWindow(HfEncoding window, System.Text.Json.JsonElement qa, int w)
    {
        // The context is ASCII, so the fixture's code-point offsets are UTF-16 offsets.
        var checks = new (string Name, bool Equal)[]
        {
            ("input_ids", window.Ids.SequenceEqual(TokenizerTestData.Ints(qa.GetProperty("input_ids")[w]))),
            ("token_type_ids", window.TokenTypeIds.SequenceEqual(TokenizerTestData.Ints(qa.GetProperty("token_type_ids")[w]))),
            ("attention_mask", window.AttentionMask.SequenceEqual(TokenizerTestData.Ints(qa.GetProperty("attention_mask")[w]))),
            ("offset_mapping", window.Offsets.SequenceEqual(TokenizerTestData.Offsets(qa.GetProperty("offset_mapping")[w]))),
            ("sequence_ids", window.SequenceIds.SequenceEqual(qa.GetProperty("sequence_ids")[w].EnumerateArray()
                .Select(e => e.ValueKind == System.Text.Json.JsonValueKind.Null ? (int?)null : e.GetInt32()))),
        };
        foreach (var (name, _) in checks.Where(c => !c.Equal))
            Console.WriteLine($"window {w}: {name} differs");
        return checks.Count(c => !c.Equal);
    }
}
