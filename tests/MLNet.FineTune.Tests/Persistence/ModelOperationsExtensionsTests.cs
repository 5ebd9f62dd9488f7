using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tests.Persistence;

/// <summary><c>mlContext.Model.SaveAtomically</c>: a failing save leaves an existing model.zip as it was.</summary>
[TestClass]
public sealed class ModelOperationsExtensionsTests
{
    private static readonly float[] Weights = [0.5f, -1f, 2f, 0.25f, 3f];

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-save-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    /// <summary>A model whose save fails once ML.NET has started writing the zip (as a component's save error, or a
    /// full disk, would).</summary>
    private sealed class FailingSaveTransformer : ITransformer
    {
        public bool IsRowToRowMapper => true;
        public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => inputSchema;
        public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => throw new NotSupportedException();
        public IDataView Transform(IDataView input) => input;
        void ICanSaveModel.Save(ModelSaveContext ctx) => throw new IOException("simulated failure while saving the model");
    }

    private static float[] Scores(MLContext ml, ITransformer model) => model.Transform(ml.Data.LoadFromEnumerable(
        new[] { new PersistenceCanaryTests.Input { Text = "a", Features = [1f, 2f, 3f, 4f, 5f] } })).GetColumn<float>("Score").ToArray();

    [TestMethod]
    public void AFailingSaveLeavesTheExistingZipWhole()
    {
        var ml = new MLContext(seed: 1);
        var schema = ml.Data.LoadFromEnumerable(Array.Empty<PersistenceCanaryTests.Input>()).Schema;
        var path = Path.Combine(_dir, "model.zip");
        ml.Model.SaveAtomically(new CanaryTransformer(ml, "!", Weights), schema, path);
        var saved = File.ReadAllBytes(path);

        // ML.NET's own Save truncates the target before the model's save runs (ModelOperationsCatalog.Save: File.Create).
        var plain = Path.Combine(_dir, "plain.zip");
        File.Copy(path, plain);
        Assert.ThrowsExactly<IOException>(() => ml.Model.Save(new FailingSaveTransformer(), schema, plain));
        long plainLength = new FileInfo(plain).Length;

        var e = Assert.ThrowsExactly<IOException>(() => ml.Model.SaveAtomically(new FailingSaveTransformer(), schema, path));
        var entries = Directory.GetFiles(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        Console.WriteLine($"{e.Message}: ML.NET's Save left {plainLength} of {saved.Length} bytes; SaveAtomically left {new FileInfo(path).Length}; folder: {string.Join(", ", entries)}");
        Assert.AreNotEqual(saved.Length, plainLength, "ML.NET's Save no longer truncates first: revisit docs/persistence.md");
        Assert.IsTrue(File.ReadAllBytes(path).AsSpan().SequenceEqual(saved), "the existing zip must be unchanged");
        CollectionAssert.AreEqual(new[] { "model.zip", "plain.zip" }, entries, "no temporary file left");
        var ml2 = new MLContext(seed: 2);
        CollectionAssert.AreEqual(Scores(ml, new CanaryTransformer(ml, "!", Weights)), Scores(ml2, ml2.Model.Load(path, out _)), "the old model still loads");

        // A successful save replaces it.
        float[] other = [1f, 1f, 1f, 1f, 1f];
        ml.Model.SaveAtomically(new CanaryTransformer(ml, "?", other), schema, path);
        CollectionAssert.AreEqual(new[] { 15f }, Scores(ml2, ml2.Model.Load(path, out _)), "the new model replaced the old");
    }
}
