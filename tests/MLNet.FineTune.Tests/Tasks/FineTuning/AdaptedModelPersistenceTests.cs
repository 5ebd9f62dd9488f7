using System.IO.Compression;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tasks.TextClassification;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// model.zip as AdaptedModel writes it: full fine-tuning in both storages, and the by-reference checks (a missing
/// trained tensor, a base folder that moved or changed, a self-contained model that cannot be saved by reference).
/// </summary>
[TestClass]
public sealed class AdaptedModelPersistenceTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-adapted-zip-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static List<Review> Reviews(int count, int seed) =>
        TinyModels.LabelledSentences(count, seed).Select(r => new Review { Text = r.Text, Label = r.Label }).ToList();

    private static TextClassificationOptions Options(string baseModel, BaseModelStorage storage) => new()
    {
        BaseModel = baseModel, MaxSequenceLength = 16, Epochs = 1, BatchSize = 8, LearningRate = 1e-3,
        Precision = TrainingPrecision.Float32, Seed = 3, BaseModelStorage = storage,
    };

    private static float[] Scores(MLContext ml, ITransformer model) =>
        model.Transform(ml.Data.LoadFromEnumerable(Reviews(12, 2))).GetColumn<float>("Score").ToArray();

    /// <summary>The exception of type <typeparamref name="T"/> in the chain ML.NET's loader wraps it in.</summary>
    private static T Find<T>(Exception e) where T : Exception
    {
        Console.WriteLine(string.Join(" <- ", Chain(e).Select(x => $"{x.GetType().Name}: {x.Message}")));
        return Chain(e).OfType<T>().FirstOrDefault() ?? throw new AssertFailedException($"no {typeof(T).Name} in {e}");
    }

    private static IEnumerable<Exception> Chain(Exception? e)
    {
        for (; e is not null; e = e.InnerException) yield return e;
    }

    private string CopyOfBertTiny()
    {
        var folder = Path.Combine(_dir, "bert-tiny-base");
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(TinyModels.BertTiny())) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        return folder;
    }

    [TestMethod]
    [DataRow(BaseModelStorage.SelfContained)]
    [DataRow(BaseModelStorage.ByReference)]
    public void AFullyFineTunedModelRoundTripsThroughModelZip(BaseModelStorage storage)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(32, 1));
        var model = ml.FineTune().FullFineTune(Options(TinyModels.BertTiny(), storage)).Fit(train);
        var counts = model.TrainableParameters;
        Assert.AreEqual(counts.Total, counts.Trainable, $"full fine-tuning trains every parameter: {counts}");
        var before = Scores(ml, model);

        var path = Path.Combine(_dir, "full.zip");
        ml.Model.Save(model, train.Schema, path);
        var ml2 = new MLContext(seed: 2);
        var loaded = ml2.Model.Load(path, out _);
        var after = Scores(ml2, loaded);
        double diff = before.Zip(after).Max(p => Math.Abs(p.First - p.Second));
        Console.WriteLine($"full fine-tuning, {storage}: zip {new FileInfo(path).Length / 1024} KiB, {counts}; max |score difference| after reload {diff:E2}");
        Assert.AreEqual(0.0, diff, "scores after reload must be identical");
        Assert.AreEqual(counts, ((TextClassificationTransformer)loaded).TrainableParameters);

        var resaved = Path.Combine(_dir, "resaved.zip");
        ml2.Model.Save(loaded, train.Schema, resaved);
        Assert.AreEqual(0.0, before.Zip(Scores(ml2, ml2.Model.Load(resaved, out _))).Max(p => Math.Abs(p.First - p.Second)), "a reloaded model saves again");

        var adapter = Assert.ThrowsExactly<NotSupportedException>(() => model.SaveAdapter(Path.Combine(_dir, "adapter")));
        Console.WriteLine(adapter.Message);
        StringAssert.Contains(adapter.Message, "mlContext.Model.Save");
        Assert.IsFalse(Directory.Exists(Path.Combine(_dir, "adapter")), "nothing written");
    }

    [TestMethod]
    public void AByReferenceZipLackingATrainedTensorIsRefusedNamingIt()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(16, 1));
        var model = ml.FineTune().Lora(Options(TinyModels.BertTiny(), BaseModelStorage.ByReference), new LoraOptions { Rank = 2, TargetModules = ["query", "value"] }).Fit(train);
        var path = Path.Combine(_dir, "by-reference.zip");
        ml.Model.Save(model, train.Schema, path);

        string removed = "";
        RewritePayload(path, "trained.safetensors", bytes =>
        {
            var file = Path.Combine(_dir, "trained.safetensors");
            File.WriteAllBytes(file, bytes);
            var tensors = SafeTensors.Load(file);
            removed = tensors.Keys.Where(k => k.EndsWith(".lora_B.weight", StringComparison.Ordinal)).Order(StringComparer.Ordinal).First();
            tensors.Remove(removed);
            SafeTensors.Save(file, tensors);
            return File.ReadAllBytes(file);
        });

        var e = NamedErrors.Expect<InvalidDataException>(() => new MLContext(seed: 2).Model.LoadWithClearErrors(path, out _));
        StringAssert.Contains(e.Message, $"'{removed}'");
        StringAssert.Contains(e.Message, "trained.safetensors");
        StringAssert.Contains(e.Message, "model.zip component");
    }

    [TestMethod]
    public void AByReferenceZipNamesItsBaseFolderWhenTheFolderMovedOrChanged()
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(16, 1));
        var baseFolder = CopyOfBertTiny();
        var model = ml.FineTune().Lora(Options(baseFolder, BaseModelStorage.ByReference), new LoraOptions { Rank = 2, TargetModules = ["query", "value"] }).Fit(train);
        var before = Scores(ml, model);

        // A byte of the base weights changes after training, before saving: the zip must still describe the weights
        // the model was trained on, so loading refuses the changed folder.
        var weights = Path.Combine(baseFolder, "model.safetensors");
        var original = File.ReadAllBytes(weights);
        var changed = (byte[])original.Clone();
        changed[^1] ^= 0x01;
        File.WriteAllBytes(weights, changed);
        var path = Path.Combine(_dir, "by-reference.zip");
        ml.Model.Save(model, train.Schema, path);
        var changedError = NamedErrors.Expect<InvalidDataException>(() => new MLContext(seed: 2).Model.LoadWithClearErrors(path, out _));
        StringAssert.Contains(changedError.Message, baseFolder);
        StringAssert.Contains(changedError.Message, "changed");

        File.WriteAllBytes(weights, original);
        var ml2 = new MLContext(seed: 2);
        Assert.AreEqual(0.0, before.Zip(Scores(ml2, ml2.Model.Load(path, out _))).Max(p => Math.Abs(p.First - p.Second)), "the restored folder loads");

        Directory.Move(baseFolder, baseFolder + "-moved");
        var movedError = NamedErrors.Expect<DirectoryNotFoundException>(() => new MLContext(seed: 3).Model.LoadWithClearErrors(path, out _));
        // ML.NET's own Load still wraps it (reflection); the error is inside.
        Find<DirectoryNotFoundException>(Assert.Throws<Exception>(() => new MLContext(seed: 3).Model.Load(path, out _)));
        StringAssert.Contains(movedError.Message, baseFolder);
        Directory.Move(baseFolder + "-moved", baseFolder);
    }

    [TestMethod]
    public void AModelLoadedFromASelfContainedZipRefusesByReferenceBeforeWriting()
    {
        var adapted = AdaptedModel.CreateForTraining(TinyModels.BertTiny(), config => ModelFactory.CreateSequenceClassification(config, 2),
            new LoraOptions { Alpha = 8, Dropout = 0, Rank = 2, TargetModules = ["query"], TaskType = PeftTaskType.SequenceClassification }, ScalarType.Float32, CPU, _ => { });
        adapted.CheckCanSave(BaseModelStorage.ByReference);   // trained from a folder: both storages work

        var loaded = SaveAndLoad(adapted, BaseModelStorage.SelfContained);
        Assert.IsNull(loaded.BaseFolder);
        loaded.CheckCanSave(BaseModelStorage.SelfContained);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => loaded.CheckCanSave(BaseModelStorage.ByReference));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "BaseModelStorage.SelfContained");
    }

    /// <summary>Writes <paramref name="adapted"/> into an in-memory model repository and reads it back.</summary>
    private static AdaptedModel SaveAndLoad(AdaptedModel adapted, BaseModelStorage storage)
    {
        const string component = "Component";
        var version = ModelZipStorage.CreateVersionInfo("MLFTADPT", "MLFTAdaptedModelTest", 0x00010001, 0x00010001, 0x00010001, typeof(AdaptedModelPersistenceTests));
        var ml = new MLContext(seed: 1);
        using var stream = new MemoryStream();
        using (var repository = RepositoryWriter.CreateNew(stream, ml))
        {
            var ctx = new ModelSaveContext(repository, component, ModelLoadContext.ModelStreamName);
            ModelZipStorage.Save(ctx, version, payloads => adapted.Save(payloads, storage));
            ctx.Done();
            repository.Commit();
        }
        stream.Position = 0;
        using var reader = RepositoryReader.Open(stream, ml);
        using var entry = reader.OpenEntry(component, ModelLoadContext.ModelStreamName);
        var loadContext = new ModelLoadContext(reader, entry, component);
        var loaded = AdaptedModel.Load(ModelZipStorage.Load(loadContext, version), config => ModelFactory.CreateSequenceClassification(config, 2), CPU, component);
        loadContext.Done();
        return loaded;
    }

    /// <summary>Replaces a payload's bytes inside a saved model.zip, and its length in the component's manifest
    /// (Model.key: the payload's name as BinaryWriter writes a string, then its int64 length).</summary>
    private static void RewritePayload(string zipPath, string payload, Func<byte[], byte[]> rewrite)
    {
        using var zip = ZipFile.Open(zipPath, ZipArchiveMode.Update);
        var entry = zip.Entries.Single(e => e.FullName.Replace('\\', '/').EndsWith("/" + payload, StringComparison.Ordinal));
        var directory = entry.FullName[..^payload.Length];
        long oldLength = entry.Length;
        var updated = rewrite(ReadEntry(entry));
        var name = entry.FullName;
        entry.Delete();
        using (var s = zip.CreateEntry(name).Open()) s.Write(updated);

        var keyEntry = zip.GetEntry(directory + "Model.key") ?? throw new AssertFailedException($"no Model.key in {directory}");
        var key = ReadEntry(keyEntry);
        using var pattern = new MemoryStream();
        using (var w = new BinaryWriter(pattern, Encoding.UTF8, leaveOpen: true)) { w.Write(payload); w.Write(oldLength); }
        int at = key.AsSpan().IndexOf(pattern.ToArray());
        Assert.IsGreaterThanOrEqualTo(0, at, $"manifest entry of {payload} not found");
        BitConverter.TryWriteBytes(key.AsSpan(at + (int)pattern.Length - sizeof(long)), (long)updated.Length);
        // Manifest layout 2: the payload's SHA-256 follows its length (a consistent forgery, not a damaged zip).
        System.Security.Cryptography.SHA256.HashData(updated).CopyTo(key.AsSpan(at + (int)pattern.Length));
        keyEntry.Delete();
        using (var s = zip.CreateEntry(directory + "Model.key").Open()) s.Write(key);
        Console.WriteLine($"rewrote {name}: {oldLength} -> {updated.Length} bytes, manifest patched at byte {at}");
    }

    private static byte[] ReadEntry(ZipArchiveEntry entry)
    {
        using var s = entry.Open();
        using var copy = new MemoryStream();
        s.CopyTo(copy);
        return copy.ToArray();
    }
}
