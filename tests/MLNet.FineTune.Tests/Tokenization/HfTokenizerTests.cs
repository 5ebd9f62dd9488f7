using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>Folder selection, errors, pairs, truncation and special tokens of <see cref="HfTokenizer"/>.</summary>
[TestClass]
public sealed class HfTokenizerTests
{
    private static readonly Lazy<HfTokenizer> Bert = new(() => HfTokenizer.FromFolder(TokenizerTestData.MiniLmVocabFolder()));

    [TestMethod]
    public void FolderWithoutTokenizerFiles_ErrorNamesFolderAndFilesLookedFor()
    {
        var dir = TokenizerTestData.NewTempFolder("empty");
        TokenizerTestData.WriteFile(Path.Combine(dir, "config.json"), """{ "model_type": "bert" }""");
        var ex = Assert.ThrowsExactly<FileNotFoundException>(() => HfTokenizer.FromFolder(dir));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, dir);
        foreach (var file in new[] { "tokenizer.json", "vocab.txt", "tokenizer.model" })
            StringAssert.Contains(ex.Message, file);
    }

    [TestMethod]
    public void MissingFolder_ErrorNamesIt()
    {
        var dir = Path.Combine(Path.GetTempPath(), "mlnet-finetune-tests", "no-such-folder-" + Guid.NewGuid().ToString("N"));
        var ex = Assert.ThrowsExactly<DirectoryNotFoundException>(() => HfTokenizer.FromFolder(dir));
        StringAssert.Contains(ex.Message, dir);
    }

    [TestMethod]
    public void UnsupportedTokenizerJsonModel_ErrorNamesFileAndModel()
    {
        var dir = TokenizerTestData.NewTempFolder("unigram");
        TokenizerTestData.WriteFile(Path.Combine(dir, "tokenizer.json"), """{ "model": { "type": "Unigram", "vocab": [["<unk>", 0.0]] } }""");
        var ex = Assert.ThrowsExactly<NotSupportedException>(() => HfTokenizer.FromFolder(dir));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, Path.Combine(dir, "tokenizer.json"));
        StringAssert.Contains(ex.Message, "Unigram");
    }

    [TestMethod]
    public void BrokenTokenizerJson_ErrorNamesFile()
    {
        var dir = TokenizerTestData.NewTempFolder("broken");
        TokenizerTestData.WriteFile(Path.Combine(dir, "tokenizer.json"), "{ \"model\": ");
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => HfTokenizer.FromFolder(dir));
        StringAssert.Contains(ex.Message, Path.Combine(dir, "tokenizer.json"));
    }

    [TestMethod]
    public void CasedFolder_KeepsCaseAndAccents()
    {
        // No do_lower_case: a folder named like a cased checkpoint is read as cased.
        var dir = Path.Combine(TokenizerTestData.NewTempFolder("named"), "bert-base-cased");
        Directory.CreateDirectory(dir);
        TokenizerTestData.WriteFile(Path.Combine(dir, "vocab.txt"), TokenizerTestData.MiniLmVocab());
        var cased = (HfWordPieceTokenizer)HfTokenizer.FromFolder(dir);
        Assert.IsFalse(cased.LowerCase);
        Assert.IsFalse(cased.StripAccents);
        // The uncased vocabulary has no "Hello": cased tokenization must not find the lower-case word.
        CollectionAssert.AreNotEqual(Bert.Value.Encode("Hello").Ids.ToArray(), cased.Encode("Hello").Ids.ToArray());

        // An explicit setting wins over the name.
        TokenizerTestData.WriteFile(Path.Combine(dir, "tokenizer_config.json"), """{ "do_lower_case": true, "strip_accents": false }""");
        var configured = (HfWordPieceTokenizer)HfTokenizer.FromFolder(dir);
        Assert.IsTrue(configured.LowerCase);
        Assert.IsFalse(configured.StripAccents);
    }

    [TestMethod]
    public void EncodePair_BertLayoutTypeIdsSequenceIdsAndOffsetsIntoEachText()
    {
        var tokenizer = Bert.Value;
        var encoding = tokenizer.EncodePair("Who built it?", "Gustave Eiffel's company.");
        Assert.AreEqual(101, encoding.Ids[0]);
        Assert.AreEqual(102, encoding.Ids[^1]);
        int firstSep = encoding.Ids.ToList().IndexOf(102);
        Assert.AreEqual("who built it ?", string.Join(" ", encoding.Tokens.Skip(1).Take(firstSep - 1)));
        for (int i = 0; i < encoding.Length; i++)
        {
            int? expectedSequence = i == 0 || i == firstSep || i == encoding.Length - 1 ? null : i < firstSep ? 0 : 1;
            Assert.AreEqual(expectedSequence, encoding.SequenceIds[i], $"sequence id at {i}");
            Assert.AreEqual(i > firstSep ? 1 : 0, encoding.TokenTypeIds[i], $"token type at {i}");
        }
        // Offsets of the second text index the second text.
        int gustave = firstSep + 1;
        Assert.AreEqual("Gustave", "Gustave Eiffel's company."[encoding.Offsets[gustave].Start..encoding.Offsets[gustave].End]);
    }

    [TestMethod]
    public void Truncation_SingleKeepsSpecialTokensAndPairCutsTheLongerFirst()
    {
        var tokenizer = Bert.Value;
        var single = tokenizer.Encode("a b c d e f g h i j", maxLength: 6);
        CollectionAssert.AreEqual(new[] { "[CLS]", "a", "b", "c", "d", "[SEP]" }, single.Tokens.ToArray());

        // longest_first with 10 + 3 tokens in 10 - 3 specials = 7: the short text keeps 3, the long one gets 4.
        var pair = tokenizer.EncodePair("a b c d e f g h i j", "x y z", maxLength: 10);
        CollectionAssert.AreEqual(new[] { "[CLS]", "a", "b", "c", "d", "[SEP]", "x", "y", "z", "[SEP]" }, pair.Tokens.ToArray());
        // Both long: each gets half.
        var both = tokenizer.EncodePair("a b c d e f g h i j", "q r s t u v w x y z", maxLength: 9);
        CollectionAssert.AreEqual(new[] { "[CLS]", "a", "b", "c", "[SEP]", "q", "r", "s", "[SEP]" }, both.Tokens.ToArray());

        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => tokenizer.Encode("a b", maxLength: 2));
    }

    [TestMethod]
    public void SpecialTokenInText_IsOneTokenAndDecodeSkipsIt()
    {
        var tokenizer = Bert.Value;
        var encoding = tokenizer.Encode("hello [SEP] world", addSpecialTokens: false);
        CollectionAssert.AreEqual(new[] { "hello", "[SEP]", "world" }, encoding.Tokens.ToArray());
        Assert.AreEqual((6, 11), encoding.Offsets[1]);
        Assert.AreEqual("hello world", tokenizer.Decode(encoding.Ids));
        Assert.AreEqual("hello [SEP] world", tokenizer.Decode(encoding.Ids, skipSpecialTokens: false));
        Assert.AreEqual("hello, world!", tokenizer.Decode(tokenizer.Encode("Hello, world!").Ids));
    }

    [TestMethod]
    public void PairWindows_RejectBadArgumentsWithReasons()
    {
        var tokenizer = Bert.Value;
        var longContext = string.Join(" ", Enumerable.Repeat("tower", 100));
        var tooMuchStride = Assert.ThrowsExactly<ArgumentException>(() => tokenizer.EncodePairWindows("when?", longContext, 16, 12));
        StringAssert.Contains(tooMuchStride.Message, "stride");
        var longQuestion = string.Join(" ", Enumerable.Repeat("when", 20));
        var noRoom = Assert.ThrowsExactly<ArgumentException>(() => tokenizer.EncodePairWindows(longQuestion, longContext, 16, 2));
        StringAssert.Contains(noRoom.Message, "no room");
        // A short context gives one window, padded.
        var one = tokenizer.EncodePairWindows("when?", "in 1889.", 16, 4);
        Assert.HasCount(1, one);
        Assert.AreEqual(16, one[0].Length);
        Assert.AreEqual(0, one[0].AttentionMask[^1]);
    }

    [TestMethod]
    public void PaddingWithoutPadToken_IsAClearError()
    {
        var gpt2 = HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());
        var ex = Assert.ThrowsExactly<InvalidOperationException>(() => gpt2.EncodePairWindows("Q", "context", 16, 4));
        StringAssert.Contains(ex.Message, "pad_token");
        // GPT-2 adds no special tokens: the unpadded window is just the two texts' tokens.
        var unpadded = gpt2.EncodePairWindows("Q", " in context", 16, 4, padToMaxLength: false)[0];
        CollectionAssert.AreEqual(new[] { "Q", "Ġin", "Ġcontext" }, unpadded.Tokens.ToArray());
        CollectionAssert.AreEqual(new int?[] { 0, 1, 1 }, unpadded.SequenceIds.ToArray());
    }
}
