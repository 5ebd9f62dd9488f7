using System.IO.Compression;
using Microsoft.ML;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// A model.zip whose payload bytes changed after saving (a bad disk, a truncated copy, a bit flipped in transit) must
/// be refused at load with an error naming the component and the payload, never load and predict NaN or other numbers.
/// </summary>
[TestClass]
public sealed class ModelZipCorruptionTests
{
    private const int Flips = 40;

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-corrupt-zip-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    /// <summary>The committed text classifier, re-saved by this build (so in the current format).</summary>
    private string SaveCurrentFormat(MLContext ml)
    {
        var model = ml.Model.Load(TestPaths.Fixture("saved-models", "text-classification-v00010001.zip"), out var schema);
        var path = Path.Combine(_dir, "model.zip");
        ml.Model.SaveAtomically(model, schema, path);
        return path;
    }

    [TestMethod]
    public void RandomSingleBitFlipsInPayloads_AreRefusedNamingThePayload()
    {
        var ml = new MLContext(seed: 1);
        var original = SaveCurrentFormat(ml);
        var entries = ReadEntries(original);
        // Payload entries: the component's files other than ML.NET's main stream (Model.key).
        var payloads = entries.Keys.Where(n => n.StartsWith("TransformerChain/", StringComparison.Ordinal) && !n.EndsWith("/Model.key", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        long total = payloads.Sum(n => (long)entries[n].Length);
        Console.WriteLine($"{payloads.Count} payload entries, {total} bytes: {string.Join(", ", payloads)}");

        var rng = new Random(2026);
        var loaded = new List<string>();
        var unnamed = new List<string>();
        for (int trial = 0; trial < Flips; trial++)
        {
            // A bit chosen uniformly over all payload bytes (so mostly in the weights).
            long at = rng.NextInt64(total);
            string entry = payloads.First(n => (at -= entries[n].Length) < 0);
            var bytes = (byte[])entries[entry].Clone();
            int offset = (int)(at + bytes.Length), bit = rng.Next(8);
            bytes[offset] ^= (byte)(1 << bit);
            var flipped = Path.Combine(_dir, $"flip-{trial}.zip");
            WriteEntries(flipped, entries, entry, bytes);

            try
            {
                var model = new MLContext(seed: 1).Model.LoadWithClearErrors(flipped, out _);
                loaded.Add($"{entry} byte {offset} bit {bit}");
            }
            catch (Exception e)
            {
                if (trial < 3) Console.WriteLine(e.Message);
                if (e is not InvalidDataException || !e.Message.Contains($"'{Payload(entry)}'") || !e.Message.Contains("MLFTTextClassifier"))
                    unnamed.Add($"{entry} byte {offset} bit {bit}: {e.GetType().Name}: {e.Message}");
            }
            File.Delete(flipped);
        }
        Console.WriteLine($"{Flips} bit flips: {loaded.Count} loaded, {unnamed.Count} refused without naming the payload");
        Assert.IsEmpty(loaded, $"{loaded.Count} of {Flips} bit flips loaded: " + string.Join("; ", loaded));
        Assert.IsEmpty(unnamed, $"{unnamed.Count} of {Flips} bit flips were refused by an error that does not name the payload: " + string.Join("; ", unnamed));
    }

    [TestMethod]
    public void MlNetsOwnLoad_KeepsTheNamedErrorAsInnerException()
    {
        var ml = new MLContext(seed: 1);
        var entries = ReadEntries(SaveCurrentFormat(ml));
        var bytes = (byte[])entries["TransformerChain/model.safetensors"].Clone();
        bytes[^1] ^= 0x10;
        var path = Path.Combine(_dir, "flipped.zip");
        WriteEntries(path, entries, "TransformerChain/model.safetensors", bytes);

        var wrapped = Assert.ThrowsExactly<System.Reflection.TargetInvocationException>(() => new MLContext(seed: 1).Model.Load(path, out _));
        Assert.IsInstanceOfType<InvalidDataException>(wrapped.InnerException);
        NamedErrors.Expect<InvalidDataException>(() => new MLContext(seed: 1).Model.LoadWithClearErrors(path, out _),
            "'model.safetensors'", "SHA-256", "model.zip component 'TransformerChain'");
    }

    [TestMethod]
    public void AnUnchangedZip_StillLoads()
    {
        var ml = new MLContext(seed: 1);
        var path = SaveCurrentFormat(ml);
        var copy = Path.Combine(_dir, "copy.zip");
        WriteEntries(copy, ReadEntries(path), null, null);
        Assert.IsNotNull(new MLContext(seed: 1).Model.Load(copy, out _));
    }

    /// <summary>The payload name of a zip entry (the part after the component's directory, '/'-separated).</summary>
    private static string Payload(string entry) => entry.Replace('\\', '/')["TransformerChain/".Length..];

    private static Dictionary<string, byte[]> ReadEntries(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        return zip.Entries.ToDictionary(e => e.FullName.Replace('\\', '/'), e =>
        {
            using var stream = e.Open();
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        });
    }

    private static void WriteEntries(string path, Dictionary<string, byte[]> entries, string? replaced, byte[]? bytes)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (name, content) in entries)
        {
            using var stream = zip.CreateEntry(name).Open();
            stream.Write(name == replaced ? bytes! : content);
        }
    }
}
