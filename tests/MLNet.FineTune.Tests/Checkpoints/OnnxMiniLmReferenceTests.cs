using System.Text.Json.Nodes;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>The ONNX Runtime reference harness itself: padding, masks, and that padding does not change real tokens.</summary>
[TestClass]
public sealed class OnnxMiniLmReferenceTests
{
    [TestMethod]
    public void PaddedBatchEqualsEachSequenceAlone()
    {
        var (ids, types) = OnnxMiniLmReference.SixteenSentences();
        var batch = OnnxMiniLmReference.Run(ids, types);
        int length = ids.Max(s => s.Count);
        Assert.AreEqual(16, batch.LastHidden.GetLength(0));
        Assert.AreEqual(length, batch.LastHidden.GetLength(1));
        Assert.AreEqual(384, batch.LastHidden.GetLength(2));
        Assert.AreEqual(384, batch.Pooler.GetLength(1));

        double worst = 0;
        int padded = 0;
        for (int b = 0; b < ids.Count; b++)
        {
            var alone = OnnxMiniLmReference.Run([ids[b]], [types[b]]);
            for (int t = 0; t < length; t++)
            {
                bool real = t < ids[b].Count;
                Assert.AreEqual(real ? 1L : 0L, batch.AttentionMask[b, t]);
                Assert.AreEqual(real ? ids[b][t] : 0L, batch.InputIds[b, t]);
                Assert.AreEqual(real ? types[b][t] : 0L, batch.TokenTypeIds[b, t]);
                if (!real) { padded++; continue; }
                for (int h = 0; h < 384; h++) worst = Math.Max(worst, Math.Abs(batch.LastHidden[b, t, h] - alone.LastHidden[0, t, h]));
            }
            for (int h = 0; h < 384; h++) worst = Math.Max(worst, Math.Abs(batch.Pooler[b, h] - alone.Pooler[0, h]));
        }
        Console.WriteLine($"16 sequences ({ids.Min(s => s.Count)}..{length} tokens, {padded} padding positions): max |batched - alone| {worst:E2}");
        Assert.IsTrue(worst <= 1e-5, $"padding changed real tokens by {worst}");
        Assert.IsTrue(types[15].Contains(1), "the question/context pair exercises token type 1");
    }

    [TestMethod]
    public void TextsGoThroughTheCallersTokenizer()
    {
        // Stand-in tokenizer: the fixture's Hugging Face ids per text (the lead swaps in the library's tokenizer).
        var root = JsonNode.Parse(File.ReadAllText(TestPaths.Fixture("hf-reference", "tokenizers", "wordpiece.json")))!;
        var byText = root["texts"]!.AsArray().ToDictionary(t => t!["text"]!.GetValue<string>(), t => (IReadOnlyList<long>)t!["ids"]!.AsArray().Select(i => i!.GetValue<long>()).ToList());
        var texts = byText.Keys.Take(3).ToList();
        var right = OnnxMiniLmReference.Run(texts, text => byText[text]);
        var left = OnnxMiniLmReference.Run(texts, text => byText[text], padLeft: true);
        int length = right.InputIds.GetLength(1), shortest = byText[texts.MinBy(t => byText[t].Count)!].Count;
        int row = texts.FindIndex(t => byText[t].Count == shortest);
        Assert.AreEqual(byText[texts[row]][0], left.InputIds[row, length - shortest], "left padding puts [CLS] after the padding");
        Assert.AreEqual(0L, left.AttentionMask[row, 0]);
        Console.WriteLine($"3 texts padded to {length}; right-padded [CLS] vector[0] {right.LastHidden[row, 0, 0]:F5}, left-padded {left.LastHidden[row, length - shortest, 0]:F5} (positions differ, as in transformers)");
    }
}
