using System.IO.Compression;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tasks.TextClassification;

namespace MLNet.FineTune.Tests.Peft.QLora;

/// <summary>QLoRA through the catalog on bert-tiny: it trains, model.zip reloads it with identical scores in both
/// storages (self-contained zips carry the 4-bit weights), and SaveAdapter writes a plain LoRA adapter.</summary>
[TestClass]
public sealed class QLoraTextClassificationTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }

    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-qlora-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static List<Review> Reviews(int count, int seed) =>
        TinyModels.LabelledSentences(count, seed).Select(r => new Review { Text = r.Text, Label = r.Label }).ToList();

    private static float[] Scores(MLContext ml, ITransformer model) =>
        model.Transform(ml.Data.LoadFromEnumerable(Reviews(12, 2))).GetColumn<float>("Score").ToArray();

    [TestMethod]
    [DataRow(BaseModelStorage.SelfContained)]
    [DataRow(BaseModelStorage.ByReference)]
    public void QLoraTrainsSavesAndReloadsThroughModelZip(BaseModelStorage storage)
    {
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Reviews(32, 1));
        var options = new TextClassificationOptions
        {
            BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 2, BatchSize = 8, LearningRate = 1e-2,
            Precision = TrainingPrecision.BFloat16, Seed = 3, BaseModelStorage = storage,
        };
        var model = ml.FineTune().QLora(options, new QLoraOptions { Rank = 4, TargetModules = ["query", "value"] }).Fit(train);
        var history = model.TrainingHistory!.Steps;
        Console.WriteLine($"QLoRA on bert-tiny: loss {history[0].Loss:F4} -> {history[^1].Loss:F4}; {model.TrainableParameters}");
        var before = Scores(ml, model);

        var path = Path.Combine(_dir, "qlora.zip");
        ml.Model.Save(model, train.Schema, path);
        var ml2 = new MLContext(seed: 2);
        var loaded = ml2.Model.Load(path, out _);
        double diff = before.Zip(Scores(ml2, loaded)).Max(p => Math.Abs(p.First - p.Second));
        Console.WriteLine($"{storage}: zip {new FileInfo(path).Length / 1024} KiB, max |score difference| after reload {diff:E2}");
        Assert.AreEqual(0.0, diff, "the reloaded QLoRA model scores identically");

        if (storage == BaseModelStorage.SelfContained)
        {
            using var zip = ZipFile.OpenRead(path);
            var entry = zip.Entries.Single(e => e.FullName.EndsWith("model.safetensors", StringComparison.Ordinal));
            var file = Path.Combine(_dir, "state.safetensors");
            entry.ExtractToFile(file);
            var keys = SafeTensors.Load(file).Keys.ToList();
            Assert.IsTrue(keys.Any(k => k.EndsWith("attention.self.query.weight.absmax", StringComparison.Ordinal)), "the zip holds the 4-bit state");
        }

        var adapter = Path.Combine(_dir, "adapter");
        model.SaveAdapter(adapter);
        var config = PeftConfigJson.Read(adapter);
        Assert.AreEqual("LORA", config.PeftType);
        Assert.IsInstanceOfType<LoraOptions>(config);
        Assert.IsNotInstanceOfType<QLoraOptions>(config, "an adapter file is plain LoRA");
        StringAssert.DoesNotMatch(File.ReadAllText(Path.Combine(adapter, "adapter_config.json")), new System.Text.RegularExpressions.Regex("quantization"));
    }
}
