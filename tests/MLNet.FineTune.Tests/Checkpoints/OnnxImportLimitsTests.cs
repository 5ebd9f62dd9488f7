using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>
/// What docs/onnx-import.md says the importer refuses or lets the caller decide: external data, sparse initializers,
/// quantized and optimizer-fused graphs, the lower-casing override, and the cleanup of folders left by killed conversions.
/// </summary>
[TestClass]
public sealed class OnnxImportLimitsTests
{
    private static readonly string BertTiny = TestPaths.Fixture("hf-reference", "bert-tiny");
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-onnx-limits-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static byte[] TinyExport(BertOnnxBuilder builder)
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        try { return builder.Build(state, heads: HfConfig.Load(BertTiny).GetInt("num_attention_heads")); }
        finally { foreach (var tensor in state.Values) tensor.Dispose(); }
    }

    [TestMethod]
    public void ExternalDataAndSparseInitializersAreRefusedByName()
    {
        // TensorProto: dims [2], FLOAT, name, data_location EXTERNAL (14 = 1); the bytes live in another file.
        var external = new ProtoWriter().Varint(1, 7).Message(7, g => g
            .Message(5, t => t.Varint(1, 2).Varint(2, 1).String(8, "encoder.layer.0.output.dense.bias").Varint(14, 1))).ToArray();
        var externalError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModel.Parse(external, "external.onnx"));
        Console.WriteLine(externalError.Message);
        StringAssert.Contains(externalError.Message, "external.onnx");
        StringAssert.Contains(externalError.Message, "'encoder.layer.0.output.dense.bias'");
        StringAssert.Contains(externalError.Message, "external file");

        // GraphProto field 15: sparse_initializer.
        var sparse = new ProtoWriter().Varint(1, 7).Message(7, g => g.Message(15, s => s.Varint(3, 4))).ToArray();
        var sparseError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModel.Parse(sparse, "sparse.onnx"));
        Console.WriteLine(sparseError.Message);
        StringAssert.Contains(sparseError.Message, "sparse.onnx");
        StringAssert.Contains(sparseError.Message, "sparse initializers");
    }

    [TestMethod]
    public void QuantizedAndFusedGraphsFailNamingTheWeight()
    {
        // Dynamic quantization: an int8 weight behind MatMulInteger carries no float weight to recover.
        var quantized = OnnxModel.Parse(TinyExport(new BertOnnxBuilder { QuantizeLinearOf = "encoder.layer.1.intermediate.dense" }), "quantized.onnx");
        var quantizedError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(quantized));
        Console.WriteLine($"quantized: {quantizedError.Message}");
        StringAssert.Contains(quantizedError.Message, "quantized.onnx");
        StringAssert.Contains(quantizedError.Message, "encoder.layer.1.intermediate.dense");

        // ONNX Runtime's optimizer: query, key and value packed into one weight of an Attention node.
        var fused = OnnxModel.Parse(TinyExport(new BertOnnxBuilder { FuseFirstAttention = true }), "fused.onnx");
        var packed = fused.Graph.Initializers.Single(t => t.Name.StartsWith("onnx::Attention_", StringComparison.Ordinal));
        var fusedError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(fused));
        Console.WriteLine($"fused: {fusedError.Message}");
        StringAssert.Contains(fusedError.Message, "fused.onnx");
        StringAssert.Contains(fusedError.Message, $"'{packed.Name}'");
    }

    [TestMethod]
    public void LowerCasingFollowsTheVocabularyUnlessTheCallerDecides()
    {
        var onnx = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(onnx, TinyExport(new BertOnnxBuilder()));
        var uncasedVocab = Path.Combine(_dir, "uncased.txt");
        File.WriteAllLines(uncasedVocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]);
        bool LowerCase(string folder) => JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!["do_lower_case"]!.GetValue<bool>();

        var detected = OnnxBertImporter.Convert(onnx, uncasedVocab, Path.Combine(_dir, "detected")).Folder;
        var forced = OnnxBertImporter.Convert(onnx, uncasedVocab, Path.Combine(_dir, "forced"), new OnnxBertImportOptions { DoLowerCase = false }).Folder;
        Console.WriteLine($"vocabulary without upper case: do_lower_case detected {LowerCase(detected)}, with DoLowerCase = false {LowerCase(forced)}");
        Assert.IsTrue(LowerCase(detected), "a vocabulary without upper-case tokens is uncased");
        Assert.IsFalse(LowerCase(forced), "the caller's DoLowerCase wins over the detection");
    }

    [TestMethod]
    public void FoldersLeftByKilledConversionsAreRemovedAfterAnHour()
    {
        var folder = Path.Combine(_dir, "model");
        var stale = Directory.CreateDirectory(folder + ".dead0001.tmp").FullName;
        var recent = Directory.CreateDirectory(folder + ".busy0002.tmp").FullName;
        Directory.SetLastWriteTimeUtc(stale, DateTime.UtcNow.AddHours(-2));
        var onnx = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(onnx, TinyExport(new BertOnnxBuilder()));
        var vocab = Path.Combine(_dir, "vocab.txt");
        File.WriteAllLines(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);

        var result = DefaultModels.Cached(folder, target => OnnxBertImporter.Convert(onnx, vocab, target));
        var left = Directory.GetDirectories(_dir).Select(Path.GetFileName).Order().ToArray();
        Console.WriteLine($"after the conversion: {string.Join(", ", left)}");
        Assert.AreEqual(folder, result);
        Assert.IsFalse(Directory.Exists(stale), "a two-hour-old temporary folder belongs to no running conversion and is removed");
        Assert.IsTrue(Directory.Exists(recent), "a recent temporary folder may be another process's conversion in progress and is kept");
    }
}
