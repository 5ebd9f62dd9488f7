using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// The canary for the persistence mechanism (docs/persistence.md): a transformer defined outside ML.NET saves into
/// model.zip and loads back in a fresh MLContext. If an ML.NET upgrade changes the internals we compile against,
/// these tests fail (or the build does) instead of users' saved models.
/// </summary>
[TestClass]
public sealed class PersistenceCanaryTests
{
    private const string Suffix = " · fine-tuné ✓";   // non-ASCII: the text payload is UTF-8
    // Values whose float bits are all significant: the round trip must be bit-exact.
    private static readonly float[] Weights = [0.1f, MathF.PI, -2.5e-3f, 123.456f, 1e-30f];

    public sealed class Input
    {
        public string Text { get; set; } = "";

        [VectorType(5)]
        public float[] Features { get; set; } = [];
    }

    public sealed class Output
    {
        public string Tagged { get; set; } = "";
        public float Score { get; set; }
    }

    private static Input[] Rows() =>
    [
        new() { Text = "hello", Features = [1f, 2f, 3f, 4f, 5f] },
        new() { Text = "", Features = [0.3f, -0.7f, 1e10f, 1e-3f, 7f] },
        new() { Text = "ünïcode", Features = [-1f, 0f, 0.5f, 0.25f, -8f] },
    ];

    private static Output Expected(Input row) => new() { Tagged = row.Text + Suffix, Score = CanaryTransformer.Dot(row.Features, Weights) };

    [TestMethod]
    public void SaveLoad_InFreshContext_TransformAndPredictionEngineMatchOriginal()
    {
        var rows = Rows();
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(rows);
        var original = new CanaryTransformer(ml, Suffix, Weights);
        var originalOutput = ml.Data.CreateEnumerable<Output>(original.Transform(data), reuseRowObject: false).ToArray();
        AssertSame(rows.Select(Expected).ToArray(), originalOutput, "original vs expected");

        string path = Path.Combine(Path.GetTempPath(), $"mlnet-finetune-canary-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(original, data.Schema, path);

            // A fresh context: nothing cached from the save, the loader is found through LoadableClass.
            var ml2 = new MLContext(seed: 2);
            var loaded = ml2.Model.Load(path, out var inputSchema);
            Assert.IsInstanceOfType<CanaryTransformer>(loaded, "ML.NET should hand back our transformer type.");
            Assert.IsNotNull(inputSchema.GetColumnOrNull("Features"));
            var canary = (CanaryTransformer)loaded;
            Assert.AreEqual(Suffix, canary.Suffix);
            CollectionAssert.AreEqual(Weights.Select(BitConverter.SingleToInt32Bits).ToArray(), canary.Weights.Select(BitConverter.SingleToInt32Bits).ToArray(), "weights bits");

            var loadedOutput = ml2.Data.CreateEnumerable<Output>(loaded.Transform(ml2.Data.LoadFromEnumerable(rows)), reuseRowObject: false).ToArray();
            AssertSame(originalOutput, loadedOutput, "Transform after load");

            var engine = ml2.Model.CreatePredictionEngine<Input, Output>(loaded);
            AssertSame(originalOutput, rows.Select(engine.Predict).ToArray(), "PredictionEngine after load");

            // The documented layout: one raw entry per payload beside ML.NET's Model.key.
            using var zip = ZipFile.OpenRead(path);
            var entries = zip.Entries.ToDictionary(e => e.FullName.Replace('\\', '/'));
            Console.WriteLine($"model.zip entries: {string.Join(", ", entries.Keys.Order())}");
            Assert.IsTrue(entries.ContainsKey("TransformerChain/Model.key"));
            CollectionAssert.AreEqual(System.Text.Encoding.UTF8.GetBytes(Suffix), ReadEntry(entries["TransformerChain/suffix.txt"]), "suffix.txt is the UTF-8 text, no framing");
            CollectionAssert.AreEqual(Weights.SelectMany(BitConverter.GetBytes).ToArray(), ReadEntry(entries["TransformerChain/weights.f32"]), "weights.f32 is the little-endian floats, no framing");
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>
    /// The second registration (SignatureLoadRowMapper): ML.NET saves a transformed data view as a
    /// RowToRowMapperTransform and reloads our mapper through it.
    /// </summary>
    [TestMethod]
    public void SaveLoad_DataViewTransform_ReloadsRowMapper()
    {
        var rows = Rows();
        var ml = new MLContext(seed: 1);
        var transformed = (IDataTransform)new CanaryTransformer(ml, Suffix, Weights).Transform(ml.Data.LoadFromEnumerable(rows));

        using var stream = new MemoryStream();
        using (var writer = RepositoryWriter.CreateNew(stream, ml))
        {
            ModelSaveContext.SaveModel(writer, transformed, "Transform");
            writer.Commit();
        }

        stream.Position = 0;
        var ml2 = new MLContext(seed: 2);
        using var reader = RepositoryReader.Open(stream, ml2);
        ModelLoadContext.LoadModel<IDataTransform, SignatureLoadDataTransform>(ml2, out var reloaded, reader, "Transform", ml2.Data.LoadFromEnumerable(rows));

        var output = ml2.Data.CreateEnumerable<Output>(reloaded, reuseRowObject: false).ToArray();
        AssertSame(rows.Select(Expected).ToArray(), output, "reloaded data-view transform");
    }

    /// <summary>build/Publicize.targets generates the attributes the runtime needs; without them the calls above fail at JIT time.</summary>
    [TestMethod]
    public void LibraryAndTests_IgnoreAccessChecksToThePublicizedAssemblies()
    {
        foreach (var assembly in new[] { typeof(MLNet.FineTune.Persistence.ModelZipStorage).Assembly, typeof(PersistenceCanaryTests).Assembly })
        {
            var names = assembly.GetCustomAttributesData()
                .Where(a => a.AttributeType.FullName == "System.Runtime.CompilerServices.IgnoresAccessChecksToAttribute")
                .Select(a => (string)a.ConstructorArguments[0].Value!)
                .Order().ToArray();
            Console.WriteLine($"{assembly.GetName().Name}: IgnoresAccessChecksTo {string.Join(", ", names)}");
            CollectionAssert.AreEqual(new[] { "Microsoft.ML.Core", "Microsoft.ML.Data" }, names, assembly.GetName().Name);
        }
    }

    private static byte[] ReadEntry(ZipArchiveEntry entry)
    {
        using var source = entry.Open();
        using var buffer = new MemoryStream();
        source.CopyTo(buffer);
        return buffer.ToArray();
    }

    // Bit-exact: a reloaded model must compute the same floats, not merely close ones.
    private static void AssertSame(Output[] expected, Output[] actual, string what)
    {
        Assert.HasCount(expected.Length, actual, what);
        int mismatches = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            bool same = expected[i].Tagged == actual[i].Tagged
                && BitConverter.SingleToInt32Bits(expected[i].Score) == BitConverter.SingleToInt32Bits(actual[i].Score);
            if (!same)
            {
                mismatches++;
                Console.WriteLine($"{what}: row {i}: expected ('{expected[i].Tagged}', {expected[i].Score:R}), got ('{actual[i].Tagged}', {actual[i].Score:R})");
            }
        }
        Console.WriteLine($"{what}: {expected.Length} rows, {mismatches} mismatches");
        Assert.AreEqual(0, mismatches, what);
    }
}
