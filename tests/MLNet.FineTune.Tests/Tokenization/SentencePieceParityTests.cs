using System.Text.Json;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>
/// SentencePiece (tokenizer.model) against sentencepiece / transformers on the real stories260K model folder
/// (../shared/models/stories260K, read at run time; skipped when absent).
/// </summary>
[TestClass]
public sealed class SentencePieceParityTests
{
    [TestMethod]
    public void Stories260K_IdsWithBosEqualReference()
    {
        var folder = TestPaths.SharedOrSkip("models", "stories260K");
        var tokenizer = HfTokenizer.FromFolder(folder);
        var sentencePiece = tokenizer as HfSentencePieceTokenizer;
        Assert.IsNotNull(sentencePiece, $"expected HfSentencePieceTokenizer, got {tokenizer.GetType().Name}");
        Assert.IsTrue(sentencePiece.AddBos);
        Assert.IsFalse(sentencePiece.AddEos);
        Assert.AreEqual(512, tokenizer.VocabularySize);
        Assert.AreEqual(1, tokenizer.BosTokenId);
        Assert.AreEqual(2, tokenizer.EosTokenId);
        Assert.AreEqual(0, tokenizer.UnkTokenId);

        using var expected = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "fixture", "expected.json")));
        int texts = 0, idMismatches = 0, decodeMismatches = 0, offsetProblems = 0;
        foreach (var entry in expected.RootElement.GetProperty("tokenization_with_bos").EnumerateObject())
        {
            texts++;
            var ids = TokenizerTestData.Ints(entry.Value);
            var encoding = tokenizer.Encode(entry.Name);
            if (!encoding.Ids.SequenceEqual(ids))
            {
                idMismatches++;
                Console.WriteLine($"'{entry.Name}': ours [{string.Join(" ", encoding.Ids)}] reference [{string.Join(" ", ids)}]");
            }
            if (tokenizer.Decode(encoding.Ids) != entry.Name) decodeMismatches++;
            // Offsets stay inside the text and never go backwards.
            for (int i = 1; i < encoding.Length; i++)
            {
                var (s, e) = encoding.Offsets[i];
                if (s < 0 || e > entry.Name.Length || s > e || s < encoding.Offsets[i - 1].Start) offsetProblems++;
            }
        }
        Console.WriteLine($"stories260K SentencePiece: {texts} texts, id mismatches {idMismatches}, decode mismatches {decodeMismatches}, offset problems {offsetProblems}");
        Assert.AreEqual(5, texts);
        Assert.AreEqual(0, idMismatches);
        Assert.AreEqual(0, decodeMismatches);
        Assert.AreEqual(0, offsetProblems);
    }

    [TestMethod]
    public void Stories260K_OffsetsPointAtTheWords()
    {
        var tokenizer = HfTokenizer.FromFolder(TestPaths.SharedOrSkip("models", "stories260K"));
        var text = "Once upon a time";
        var encoding = tokenizer.Encode(text);
        Assert.AreEqual(1, encoding.Ids[0]);
        Assert.AreEqual((0, 0), encoding.Offsets[0]);
        Assert.IsNull(encoding.SequenceIds[0]);
        // "▁Once" covers "Once"; "▁upon" covers " upon" (the space is part of the piece).
        Assert.AreEqual("Once", text[encoding.Offsets[1].Start..encoding.Offsets[1].End]);
        Assert.AreEqual(" upon", text[encoding.Offsets[2].Start..encoding.Offsets[2].End]);
    }
}
