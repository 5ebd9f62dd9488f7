using System.Text.Json.Serialization;
using Microsoft.ML;
using MLNet.FineTune.Persistence;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// The payload helper on its own: each test writes one component into an in-memory model repository with ML.NET's
/// own writer, then reads it back with ML.NET's reader (which also checks the manifest was consumed exactly).
/// </summary>
[TestClass]
public sealed class ModelZipStorageTests
{
    private const string Directory = "Component";

    private static VersionInfo Version(uint current = 0x00010001, uint readableBy = 0x00010001, uint readsBackTo = 0x00010001) =>
        ModelZipStorage.CreateVersionInfo("MLFTTEST", "MLFTStorageTest", current, readableBy, readsBackTo, typeof(ModelZipStorageTests));

    public enum Head { Linear, Mlp }

    public sealed record Options(string BaseModel, int Rank, double Alpha, Head Head, string[] TargetModules);

    [TestMethod]
    public void Payloads_RoundTrip_Exactly()
    {
        var options = new Options("models/all-MiniLM-L6-v2", 8, 16.0, Head.Mlp, ["query", "value"]);
        var large = new byte[3_000_001];   // bigger than any internal buffer, odd length
        new Random(7).NextBytes(large);
        double[] doubles = [Math.E, -0.0, double.Epsilon, 1e300];
        string tokenizerDir = CreateTempDirectory();
        File.WriteAllText(Path.Combine(tokenizerDir, "vocab.txt"), "[PAD]\n[UNK]\nhello\n");
        File.WriteAllBytes(Path.Combine(tokenizerDir, "tokenizer.json"), [0x7B, 0x7D]);
        string extractDir = CreateTempDirectory();
        try
        {
            using var zip = Save(Version(), payloads =>
            {
                payloads.AddJson("options.json", options);
                payloads.Add("weights/adapter.safetensors", stream => stream.Write(large));
                payloads.AddArray<double>("doubles.f64", doubles);
                payloads.AddFiles("tokenizer", System.IO.Directory.GetFiles(tokenizerDir));
                payloads.Add("empty.bin", ReadOnlySpan<byte>.Empty);
            });

            Load(zip, Version(), payloads =>
            {
                CollectionAssert.AreEquivalent(
                    new[] { "options.json", "weights/adapter.safetensors", "doubles.f64", "tokenizer/tokenizer.json", "tokenizer/vocab.txt", "empty.bin" },
                    payloads.Names.ToArray());
                var readOptions = payloads.ReadJson<Options>("options.json");
                Assert.AreEqual(options with { TargetModules = readOptions.TargetModules }, readOptions);
                CollectionAssert.AreEqual(options.TargetModules, readOptions.TargetModules);
                Assert.Contains("\"Mlp\"", payloads.ReadText("options.json"), "enums are stored by name");

                var readLarge = payloads.ReadBytes("weights/adapter.safetensors");
                int differing = large.Where((b, i) => readLarge[i] != b).Count();
                Console.WriteLine($"large payload: {readLarge.Length} bytes, {differing} differing");
                Assert.HasCount(large.Length, readLarge);
                Assert.AreEqual(0, differing);

                CollectionAssert.AreEqual(doubles.Select(BitConverter.DoubleToInt64Bits).ToArray(),
                    payloads.ReadArray<double>("doubles.f64").Select(BitConverter.DoubleToInt64Bits).ToArray());
                Assert.IsEmpty(payloads.ReadBytes("empty.bin"));

                var files = payloads.ExtractFiles("tokenizer", extractDir);
                Assert.HasCount(2, files);
                Assert.AreEqual("[PAD]\n[UNK]\nhello\n", File.ReadAllText(Path.Combine(extractDir, "vocab.txt")));
                CollectionAssert.AreEqual(new byte[] { 0x7B, 0x7D }, File.ReadAllBytes(Path.Combine(extractDir, "tokenizer.json")));
                Assert.IsEmpty(System.IO.Directory.GetFiles(extractDir, "*.tmp"), "no temp files left behind");
                return 0;
            });
        }
        finally
        {
            System.IO.Directory.Delete(tokenizerDir, recursive: true);
            System.IO.Directory.Delete(extractDir, recursive: true);
        }
    }

    [TestMethod]
    public void MissingPayload_ErrorNamesItAndTheSavedOnes()
    {
        using var zip = Save(Version(), payloads => payloads.AddText("suffix.txt", "x"));
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => Load(zip, Version(), payloads => payloads.ReadBytes("weights.f32")));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, "'weights.f32'");
        StringAssert.Contains(ex.Message, "suffix.txt");
        StringAssert.Contains(ex.Message, "MLFTStorageTest");
    }

    [TestMethod]
    public void ArrayOfWrongElementSize_IsRejected()
    {
        using var zip = Save(Version(), payloads => payloads.Add("odd.bin", new byte[6]));
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => Load(zip, Version(), payloads => payloads.ReadArray<float>("odd.bin")));
        StringAssert.Contains(ex.Message, "6 bytes");
    }

    [TestMethod]
    [DataRow("")]
    [DataRow("../escape.bin")]
    [DataRow("a//b")]
    [DataRow("dir\\file")]
    [DataRow("/rooted")]
    [DataRow("Model.key")]
    [DataRow("space name.txt")]
    public void InvalidPayloadNames_AreRejected(string name)
    {
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Save(Version(), payloads => payloads.Add(name, new byte[1])).Dispose());
        StringAssert.Contains(ex.Message, $"'{name}'");
    }

    [TestMethod]
    public void DuplicateNameIgnoringCase_IsRejected()
    {
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Save(Version(), payloads =>
        {
            payloads.Add("Vocab.txt", new byte[1]);
            payloads.Add("vocab.txt", new byte[1]);
        }).Dispose());
        StringAssert.Contains(ex.Message, "twice");
    }

    [TestMethod]
    public void NewerFormat_ErrorNamesComponentAndVersions()
    {
        using var zip = Save(Version(current: 0x00010002, readableBy: 0x00010002), payloads => payloads.AddText("a.txt", "a"));
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => Load(zip, Version(), payloads => 0));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, "newer MLNet.FineTune");
        StringAssert.Contains(ex.Message, "0x00010002");
        StringAssert.Contains(ex.Message, "MLFTStorageTest");
    }

    [TestMethod]
    public void OlderFormatThanSupported_ErrorSaysSo()
    {
        using var zip = Save(Version(), payloads => payloads.AddText("a.txt", "a"));
        var ex = Assert.ThrowsExactly<InvalidDataException>(() =>
            Load(zip, Version(current: 0x00010003, readableBy: 0x00010003, readsBackTo: 0x00010002), payloads => 0));
        StringAssert.Contains(ex.Message, "older MLNet.FineTune");
    }

    [TestMethod]
    public void NewerButStillReadableFormat_Loads()
    {
        // A newer writer that declared itself readable by 0x00010001 code (an added optional payload, say).
        using var zip = Save(Version(current: 0x00010002, readableBy: 0x00010001), payloads => payloads.AddText("a.txt", "a"));
        Assert.AreEqual("a", Load(zip, Version(), payloads => payloads.ReadText("a.txt")));
    }

    [TestMethod]
    [DataRow("MLFTSHORT1", "MLFTLoader")]
    [DataRow("MLFT", "MLFTLoader")]
    [DataRow("ABCDEFGH", "MLFTLoader")]
    [DataRow("MLFTTEST", "NotOurPrefix")]
    [DataRow("MLFTTEST", "MLFTThisLoaderSignatureIsTooLong")]
    public void VersionInfoConventions_AreEnforced(string modelSignature, string loaderSignature)
    {
        Assert.ThrowsExactly<ArgumentException>(() =>
            ModelZipStorage.CreateVersionInfo(modelSignature, loaderSignature, 0x00010001, 0x00010001, 0x00010001, typeof(ModelZipStorageTests)));
    }

    // ML.NET's own repository writer and save context, exactly as mlContext.Model.Save drives them.
    private static MemoryStream Save(VersionInfo version, Action<ModelPayloadWriter> write)
    {
        var ml = new MLContext(seed: 1);
        var stream = new MemoryStream();
        using (var repository = RepositoryWriter.CreateNew(stream, ml))
        {
            var ctx = new ModelSaveContext(repository, Directory, ModelLoadContext.ModelStreamName);
            ModelZipStorage.Save(ctx, version, write);
            ctx.Done();
            repository.Commit();
        }
        stream.Position = 0;
        return stream;
    }

    private static T Load<T>(MemoryStream zip, VersionInfo version, Func<ModelPayloadReader, T> read)
    {
        zip.Position = 0;
        var ml = new MLContext(seed: 2);
        using var repository = RepositoryReader.Open(zip, ml);
        using var entry = repository.OpenEntry(Directory, ModelLoadContext.ModelStreamName);
        var ctx = new ModelLoadContext(repository, entry, Directory);
        var result = read(ModelZipStorage.Load(ctx, version));
        ctx.Done();   // ML.NET checks the main stream was read to its end: the manifest was consumed exactly
        return result;
    }

    private static string CreateTempDirectory()
    {
        string path = Path.Combine(Path.GetTempPath(), $"mlnet-finetune-storage-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(path);
        return path;
    }
}
