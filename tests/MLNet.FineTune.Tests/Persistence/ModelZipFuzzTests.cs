using System.Diagnostics;
using System.Text;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Tests.Checkpoints;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// Fuzzes the model.zip manifest reader (what <see cref="ModelZipStorage.Load"/> reads after ML.NET's header) with
/// seeded random, mutated and hand-made hostile manifests: each must read or fail with an
/// <see cref="InvalidDataException"/> naming the component, never another exception, and never allocate more than a
/// small budget (a count of 2^31 - 1 or a 2 GB name must not be preallocated). The [Timeout] catches a hang.
/// </summary>
[TestClass]
public sealed class ModelZipFuzzTests
{
    private const string Where = "model.zip component 'Fuzz' (MLFTFuzz)";
    private const int RandomInputs = 2000, MutatedInputs = 3000;
    private const long AllocationBudget = 1 << 20;

    /// <summary>A manifest as <see cref="ModelZipStorage.Save"/> writes it, followed by bytes ML.NET writes after it.</summary>
    private static byte[] ValidManifest(int layout)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(layout);
            string[] names = ["text_classification.json", "base/config.json", "base/tokenizer/vocab.txt", "model.safetensors"];
            writer.Write(names.Length);
            foreach (var name in names)
            {
                writer.Write(name);
                writer.Write((long)name.Length * 1000);
                if (layout >= 2) writer.Write(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(name)));
            }
            writer.Write(new byte[24]);   // stands for ML.NET's string table and tail
        }
        return stream.ToArray();
    }

    [TestMethod]
    [Timeout(120_000)]
    public void RandomAndMutatedManifests_FailOnlyWithInvalidDataException()
    {
        var rng = new Random(14);
        var outcomes = new Dictionary<string, int>();
        var stopwatch = Stopwatch.StartNew();
        for (int i = 0; i < RandomInputs; i++)
        {
            var bytes = new byte[rng.Next(0, 128)];
            rng.NextBytes(bytes);
            if (bytes.Length >= 4 && rng.Next(2) == 0) BitConverter.TryWriteBytes(bytes, rng.Next(1, 3));   // a readable layout
            Check(bytes, $"random #{i}", outcomes);
        }
        var valid = new[] { ValidManifest(1), ValidManifest(2) };
        for (int i = 0; i < MutatedInputs; i++)
        {
            var source = valid[i % 2];
            Check(SafeTensorsFuzzTests.Mutate(source, source.Length, rng), $"mutated #{i}", outcomes);
        }
        Console.WriteLine($"{RandomInputs + MutatedInputs} manifests in {stopwatch.Elapsed.TotalSeconds:F1} s: {string.Join(", ", outcomes.Select(p => $"{p.Key} {p.Value}"))}");
        Assert.IsGreaterThan(0, outcomes.GetValueOrDefault("read"), "some mutations keep a valid manifest (e.g. a changed length)");
    }

    private static readonly Dictionary<string, byte[]> HostileManifestsInputs = new[]
    {
        ("layout 0", Bytes(w => { w.Write(0); w.Write(0); })),
        ("layout 3 (a newer build's)", Bytes(w => { w.Write(3); w.Write(0); })),
        ("negative count", Bytes(w => { w.Write(2); w.Write(-5); })),
        ("count 2^31 - 1, then nothing", Bytes(w => { w.Write(2); w.Write(int.MaxValue); })),
        ("name claiming 2^31 - 1 bytes", Bytes(w => { w.Write(2); w.Write(1); w.Write7BitEncodedInt(int.MaxValue); w.Write((byte)'a'); })),
        ("name with a bad 7-bit length", Bytes(w => { w.Write(2); w.Write(1); w.Write(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01 }); })),
        ("negative payload length", Bytes(w => { w.Write(2); w.Write(1); w.Write("a.json"); w.Write(-1L); w.Write(new byte[32]); })),
        ("hash cut short", Bytes(w => { w.Write(2); w.Write(1); w.Write("a.json"); w.Write(1L); w.Write(new byte[10]); })),
        ("name escaping the folder", Bytes(w => { w.Write(2); w.Write(1); w.Write("../../etc/passwd"); w.Write(1L); w.Write(new byte[32]); })),
        ("rooted name", Bytes(w => { w.Write(1); w.Write(1); w.Write("/tmp/x"); w.Write(1L); })),
        ("Model.key as a payload", Bytes(w => { w.Write(1); w.Write(1); w.Write("model.KEY"); w.Write(1L); })),
        ("name with control characters", Bytes(w => { w.Write(1); w.Write(1); w.Write("a\0b\n"); w.Write(1L); })),
        ("duplicate name", Bytes(w => { w.Write(1); w.Write(2); w.Write("a.json"); w.Write(1L); w.Write("a.json"); w.Write(2L); })),
        ("empty stream", Array.Empty<byte>()),
    }.ToDictionary(p => p.Item1, p => p.Item2);

    public static IEnumerable<object[]> HostileManifests() => HostileManifestsInputs.Keys.Select(k => new object[] { k });

    [TestMethod]
    [DynamicData(nameof(HostileManifests))]
    public void HostileManifests_AreRefusedNamingTheComponent(string what)
    {
        var bytes = HostileManifestsInputs[what];
        using var reader = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
        long before = GC.GetAllocatedBytesForCurrentThread();
        NamedErrors.Expect<InvalidDataException>(() => ModelZipStorage.ReadManifest(reader, Where), Where, "manifest");
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Console.WriteLine($"{what}: {allocated} bytes allocated");
        Assert.IsLessThan(AllocationBudget, allocated, $"{what}: refusing a {bytes.Length}-byte manifest allocated {allocated} bytes");
    }

    private static void Check(byte[] bytes, string what, Dictionary<string, int> outcomes)
    {
        using var reader = new BinaryReader(new MemoryStream(bytes), Encoding.UTF8);
        string outcome = FuzzCase.Run(what, bytes, () => ModelZipStorage.ReadManifest(reader, Where), Where, "component", "read", AllocationBudget);
        outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
    }

    private static byte[] Bytes(Action<BinaryWriter> write)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true)) write(writer);
        return stream.ToArray();
    }
}
