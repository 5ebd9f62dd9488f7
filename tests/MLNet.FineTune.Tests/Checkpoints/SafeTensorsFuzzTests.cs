using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using MLNet.FineTune.Checkpoints;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>
/// Fuzzes the safetensors reader (header parser and tensor loader) with seeded random, mutated and hand-made hostile
/// files: each must load or fail with the library's <see cref="InvalidDataException"/> naming the file; nothing else
/// may escape, and no input may allocate much more than its own size (a header claiming 2^60 bytes is refused before
/// allocating). The [Timeout] catches a hang.
/// </summary>
[TestClass]
public sealed class SafeTensorsFuzzTests
{
    private const int RandomInputs = 300, MutatedInputs = 600;
    /// <summary>What parsing one of these small files may allocate: the tensors it holds and JSON parsing overhead.</summary>
    private const long AllocationBudget = 4 << 20;

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-safetensors-fuzz-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private byte[] ValidFile()
    {
        var path = Path.Combine(_dir, "valid.safetensors");
        using var a = arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        using var b = tensor(new long[] { 7, -1 });
        using var c = zeros(0, 5, dtype: ScalarType.BFloat16);
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a.weight"] = a, ["b"] = b, ["c.empty"] = c }, new Dictionary<string, string> { ["format"] = "pt" });
        return File.ReadAllBytes(path);
    }

    [TestMethod]
    [Timeout(120_000)]
    public void RandomAndMutatedFiles_FailOnlyWithInvalidDataException()
    {
        var rng = new Random(14);
        var valid = ValidFile();
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(valid);
        var outcomes = new Dictionary<string, int>();
        var stopwatch = Stopwatch.StartNew();

        for (int i = 0; i < RandomInputs; i++)
        {
            var bytes = new byte[rng.Next(0, 256)];
            rng.NextBytes(bytes);
            if (bytes.Length >= 8 && rng.Next(2) == 0)   // a plausible length prefix, random JSON-ish body
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)rng.Next(0, bytes.Length));
            Check(bytes, $"random #{i}", outcomes);
        }
        for (int i = 0; i < MutatedInputs; i++)
            Check(Mutate(valid, headerLength, rng), $"mutated #{i}", outcomes);

        Console.WriteLine($"{RandomInputs + MutatedInputs} inputs in {stopwatch.Elapsed.TotalSeconds:F1} s: {string.Join(", ", outcomes.Select(p => $"{p.Key} {p.Value}"))}");
    }

    private static readonly Dictionary<string, byte[]> HostileHeadersInputs = new[]
    {
        ("2^60-byte header length", Prefix(1UL << 60, "{}")),
        ("header length = ulong.MaxValue", Prefix(ulong.MaxValue, "{}")),
        ("header length past the end", Prefix(1000, "{}")),
        ("header not an object", Prefix("[1,2,3]")),
        ("JSON null header", Prefix("null")),
        ("metadata not an object", Prefix("{\"__metadata__\":[1]}")),
        ("metadata value not a string", Prefix("{\"__metadata__\":{\"k\":{\"x\":1}}}")),
        ("entry not an object", Prefix("{\"t\":5}")),
        ("dtype not a string", Prefix("{\"t\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4)),
        ("negative dimension", Prefix("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[8,4]}}", 8)),
        ("overflowing shape", Prefix("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}")),
        ("fractional offset", Prefix("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4]}}", 4)),
        ("offset beyond long", Prefix("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 4)),
        ("three offsets", Prefix("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 4)),
        ("duplicate tensor name", Prefix("{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1)),
        ("deeply nested JSON", Prefix(new string('[', 5000) + new string(']', 5000))),
        ("invalid UTF-8", (byte[])[.. Prefix(4, ""), 0x7B, 0xFF, 0xFE, 0x7D]),
    }.ToDictionary(p => p.Item1, p => p.Item2);

    public static IEnumerable<object[]> HostileHeaders() => HostileHeadersInputs.Keys.Select(k => new object[] { k });

    [TestMethod]
    [DynamicData(nameof(HostileHeaders))]
    public void HostileHeaders_AreRefusedNamingTheFile(string what)
    {
        var bytes = HostileHeadersInputs[what];
        var path = Path.Combine(_dir, "hostile.safetensors");
        File.WriteAllBytes(path, bytes);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = NamedErrors.Expect<InvalidDataException>(() => SafeTensors.Load(path), path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Console.WriteLine($"{what}: {allocated} bytes allocated");
        Assert.IsLessThan(AllocationBudget, allocated, $"{what}: refusing a {bytes.Length}-byte file allocated {allocated} bytes");
    }

    private void Check(byte[] bytes, string what, Dictionary<string, int> outcomes)
    {
        var path = Path.Combine(_dir, "fuzz.safetensors");
        File.WriteAllBytes(path, bytes);
        string outcome = FuzzCase.Run(what, bytes, () =>
        {
            var tensors = SafeTensors.Load(path);
            foreach (var t in tensors.Values) t.Dispose();
        }, path, "file", "loaded", AllocationBudget);
        outcomes[outcome] = outcomes.GetValueOrDefault(outcome) + 1;
    }

    /// <summary>One to four edits of a valid file, biased towards the JSON header where the parser lives.</summary>
    internal static byte[] Mutate(byte[] valid, int headerLength, Random rng)
    {
        var bytes = new List<byte>(valid);
        int edits = rng.Next(1, 5);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            int at = rng.Next(3) == 0 ? rng.Next(bytes.Count) : rng.Next(Math.Min(bytes.Count, 8 + headerLength));
            switch (rng.Next(6))
            {
                case 0: bytes[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: bytes[at] = (byte)rng.Next(256); break;
                case 2: bytes[at] = (byte)"{}[]\",:-0123456789e."[rng.Next(20)]; break;
                case 3: bytes.RemoveRange(at, Math.Min(bytes.Count - at, rng.Next(1, 16))); break;
                case 4: bytes.InsertRange(at, Encoding.ASCII.GetBytes(new[] { "-1", "1e30", "null", "\"F64\"", "[]", "{}", "9223372036854775807", "," }[rng.Next(8)])); break;
                default: int keep = rng.Next(bytes.Count); bytes.RemoveRange(keep, bytes.Count - keep); break;
            }
        }
        return [.. bytes];
    }

    private static byte[] Prefix(string header, int dataBytes = 0) => Prefix((ulong)Encoding.UTF8.GetByteCount(header), header, dataBytes);

    private static byte[] Prefix(ulong claimedLength, string header, int dataBytes = 0)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, claimedLength);
        json.CopyTo(bytes, 8);
        return bytes;
    }
}
