using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Checkpoints;

[TestClass]
public sealed class SafeTensorsTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-st-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [TestMethod]
    [DataRow(ScalarType.Float32)]
    [DataRow(ScalarType.Float16)]
    [DataRow(ScalarType.BFloat16)]
    public void RoundTripIsBitIdentical(ScalarType type)
    {
        manual_seed(7);
        var tensors = new Dictionary<string, Tensor>
        {
            ["encoder.layer.0.weight"] = randn(5, 3).to_type(type),
            ["encoder.layer.0.bias"] = randn(3).to_type(type),
            ["scalar"] = tensor(1.5f).to_type(type),
            ["empty"] = zeros(0, 4).to_type(type),
        };
        var path = Path.Combine(_dir, "round.safetensors");
        SafeTensors.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var back = SafeTensors.Load(path);
        Assert.AreEqual(tensors.Count, back.Count);
        foreach (var (name, original) in tensors)
        {
            Assert.AreEqual(type, back[name].dtype, name);
            CollectionAssert.AreEqual(original.shape, back[name].shape, name);
            CollectionAssert.AreEqual(original.bytes.ToArray(), back[name].bytes.ToArray(), $"{name} bytes differ");
        }
        var (_, metadata, dataStart) = SafeTensors.ReadHeader(path);
        Assert.AreEqual("pt", metadata["format"]);
        Assert.AreEqual(0, dataStart % 8, "data must start 8-byte aligned");
        Console.WriteLine($"{type}: {tensors.Count} tensors round-tripped bit-identically ({new FileInfo(path).Length} bytes)");
    }

    [TestMethod]
    public void ReadsATransformersWrittenFileAndConvertsDtype()
    {
        var path = TestPaths.Fixture("hf-reference", "bert-tiny", "model.safetensors");
        var f32 = SafeTensors.Load(path);
        var bf16 = SafeTensors.Load(path, ScalarType.BFloat16);
        var word = f32["embeddings.word_embeddings.weight"];
        CollectionAssert.AreEqual(new long[] { 512, 32 }, word.shape);
        Assert.AreEqual(ScalarType.BFloat16, bf16["embeddings.word_embeddings.weight"].dtype);
        double error = (bf16["embeddings.word_embeddings.weight"].to_type(ScalarType.Float32) - word).abs().max().item<float>();
        Console.WriteLine($"{f32.Count} tensors; bf16 conversion max |error| {error:E2}");
        Assert.IsTrue(error < 0.01);
    }

    [TestMethod]
    public void ShardedFolderLoads()
    {
        var all = SafeTensors.Load(TestPaths.Fixture("hf-reference", "bert-tiny", "model.safetensors"));
        var names = all.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        var first = names.Take(names.Count / 2).ToHashSet();
        SafeTensors.Save(Path.Combine(_dir, "model-00001-of-00002.safetensors"), all.Where(p => first.Contains(p.Key)).ToDictionary());
        SafeTensors.Save(Path.Combine(_dir, "model-00002-of-00002.safetensors"), all.Where(p => !first.Contains(p.Key)).ToDictionary());
        var map = new JsonObject(names.Select(n => KeyValuePair.Create(n, (JsonNode?)(first.Contains(n) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"))));
        File.WriteAllText(Path.Combine(_dir, HfCheckpoint.IndexFile), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());

        var loaded = HfCheckpoint.Load(_dir);
        Assert.AreEqual(all.Count, loaded.Count);
        foreach (var (name, t) in all) Assert.IsTrue(t.eq(loaded[name]).all().item<bool>(), name);
        Assert.AreEqual(2, HfCheckpoint.WeightFiles(_dir).Count);

        File.Delete(Path.Combine(_dir, "model-00002-of-00002.safetensors"));
        var error = Assert.ThrowsExactly<FileNotFoundException>(() => HfCheckpoint.Load(_dir));
        StringAssert.Contains(error.Message, "model-00002-of-00002.safetensors");
    }

    [TestMethod]
    public void CorruptOrMissingFilesGiveNamedErrors()
    {
        var missing = Assert.ThrowsExactly<FileNotFoundException>(() => HfCheckpoint.Load(_dir));
        StringAssert.Contains(missing.Message, "model.safetensors");

        var path = Path.Combine(_dir, "bad.safetensors");
        File.WriteAllBytes(path, [200, 0, 0, 0, 0, 0, 0, 0, (byte)'{']);
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => SafeTensors.Load(path)).Message, path);

        var good = Path.Combine(_dir, "good.safetensors");
        SafeTensors.Save(good, new Dictionary<string, Tensor> { ["w"] = ones(4, 4) });
        var bytes = File.ReadAllBytes(good);
        File.WriteAllBytes(path, bytes[..^8]); // truncated data
        var truncated = Assert.ThrowsExactly<InvalidDataException>(() => SafeTensors.Load(path));
        StringAssert.Contains(truncated.Message, "'w'");
        Console.WriteLine(truncated.Message);
    }

    [TestMethod]
    public void AFailedSaveLeavesTheExistingFileIntact()
    {
        var path = Path.Combine(_dir, "keep.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = ones(2) });
        var before = File.ReadAllBytes(path);
        // A complex tensor cannot be stored: the save must fail before replacing anything.
        Assert.ThrowsExactly<NotSupportedException>(() => SafeTensors.Save(path, new Dictionary<string, Tensor> { ["c"] = zeros(2, dtype: ScalarType.ComplexFloat32) }));
        CollectionAssert.AreEqual(before, File.ReadAllBytes(path));
        Assert.AreEqual(1, Directory.GetFiles(_dir).Length, "no temporary file left behind");
    }
}
