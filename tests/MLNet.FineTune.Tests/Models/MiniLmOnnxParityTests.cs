using MLNet.FineTune.Models;
using MLNet.FineTune.Tests.Checkpoints;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// The real all-MiniLM-L6-v2, end to end through the library: <c>DefaultModels.MiniLM()</c> folder -> our tokenizer ->
/// <c>ModelFactory.FromPretrainedBaseModel</c> -> BertModel, against ONNX Runtime running the original ONNX export on
/// the same padded batch (an implementation independent of ours and of the importer's weight mapping).
/// </summary>
[TestClass]
public sealed class MiniLmOnnxParityTests
{
    private const double Tolerance = 1e-4;

    /// <summary>The 16 inputs of <see cref="OnnxMiniLmReference.SixteenSentences"/>, tokenized by our HfTokenizer:
    /// the 15 texts of the WordPiece fixture and the first window of its question/context pair.</summary>
    private static (List<IReadOnlyList<long>> Ids, List<IReadOnlyList<long>> TokenTypeIds) TokenizeSixteen(HfTokenizer tokenizer)
    {
        var root = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(TestPaths.Fixture("hf-reference", "tokenizers", "wordpiece.json")))!;
        var encodings = root["texts"]!.AsArray().Select(t => tokenizer.Encode(t!["text"]!.GetValue<string>())).ToList();
        var qa = root["qa_windows"]!;
        encodings.Add(tokenizer.EncodePairWindows(qa["question"]!.GetValue<string>(), qa["context"]!.GetValue<string>(),
            qa["max_length"]!.GetValue<int>(), qa["stride"]!.GetValue<int>(), padToMaxLength: false)[0]);
        return (encodings.Select(e => (IReadOnlyList<long>)e.Ids.Select(i => (long)i).ToList()).ToList(),
                encodings.Select(e => (IReadOnlyList<long>)e.TokenTypeIds.Select(i => (long)i).ToList()).ToList());
    }

    [TestMethod]
    [DataRow(false, DisplayName = "right padding")]
    [DataRow(true, DisplayName = "left padding")]
    public void BertModelMatchesOnnxRuntimeOnSixteenPaddedSentences(bool padLeft)
    {
        var folder = DefaultModels.MiniLM();
        var tokenizer = HfTokenizer.FromFolder(folder);
        var (ids, types) = TokenizeSixteen(tokenizer);

        // Our tokenizer gives the ids Hugging Face's BertTokenizerFast gave (the fixture), so the batch is the real one.
        var (hfIds, hfTypes) = OnnxMiniLmReference.SixteenSentences();
        int idMismatches = ids.Zip(hfIds).Count(p => !p.First.SequenceEqual(p.Second));
        int typeMismatches = types.Zip(hfTypes).Count(p => !p.First.SequenceEqual(p.Second));
        Console.WriteLine($"HfTokenizer vs transformers: {idMismatches} of {ids.Count} sequences differ in ids, {typeMismatches} in token types");
        // A mismatch here means the folder's tokenizer settings are wrong (e.g. a cached folder written by an older importer).
        Assert.AreEqual(0, idMismatches + typeMismatches,
            $"{folder}: tokenizer_config.json = {File.ReadAllText(Path.Combine(folder, "tokenizer_config.json"))}");

        var reference = OnnxMiniLmReference.Run(ids, types, padLeft);
        var (model, report) = ModelFactory.FromPretrainedBaseModel(folder);
        using (model)
        {
            Console.WriteLine($"{folder}: {report}");
            Assert.AreEqual(0, report.Missing.Count, "every BertModel key is in the converted checkpoint");
            Assert.AreEqual(0, report.Unexpected.Count, "every converted key has a place in BertModel");
            Assert.IsInstanceOfType<BertModel>(model);

            var error = MiniLmOnnxParity.Measure(model, reference);
            Console.WriteLine($"{ids.Count} sequences ({ids.Min(s => s.Count)}..{ids.Max(s => s.Count)} tokens, {(padLeft ? "left" : "right")}-padded: " +
                              $"{error.RealPositions} real, {error.PaddingPositions} padding positions): max |BertModel - ONNX Runtime| " +
                              $"last_hidden_state {error.Hidden:E2}, pooler {error.Pooler:E2} (tolerance {Tolerance:E0})");
            Assert.IsTrue(error.PaddingPositions > 0, "the batch is padded");
            Assert.IsTrue(error.Hidden <= Tolerance, $"last_hidden_state error {error.Hidden:E3}");
            Assert.IsTrue(error.Pooler <= Tolerance, $"pooler error {error.Pooler:E3}");
        }
    }
}
