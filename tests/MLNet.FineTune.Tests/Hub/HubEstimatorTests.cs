using Microsoft.ML;
using MLNet.FineTune.Hub;
using MLNet.FineTune.Tests.Tasks.FineTuning;

namespace MLNet.FineTune.Tests.Hub;

/// <summary>
/// <see cref="FineTuneOptions.BaseModel"/> and <see cref="FineTuneOptions.InitialAdapter"/> given as hub ids resolve
/// through the cache when Fit starts (against <see cref="FakeHubServer"/> on loopback), and train exactly as the same
/// model and adapter given as folders.
/// </summary>
[TestClass]
public sealed class HubEstimatorTests
{
    private static TextClassificationOptions Options(string baseModel, HubOptions hub) => new()
    {
        BaseModel = baseModel, Hub = hub, TextColumnName = "Text", LabelColumnName = "Label",
        MaxSequenceLength = 16, Epochs = 1, BatchSize = 8, LearningRate = 1e-2, Precision = TrainingPrecision.Float32, Seed = 3,
    };

    private static LoraOptions Lora() => new() { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = ["query", "value"] };

    [TestMethod]
    public void BaseModelAndInitialAdapterByIdTrainAsTheirFolders()
    {
        var cache = Directory.CreateTempSubdirectory("mlft-hub-fit-").FullName;
        try
        {
            using var server = new FakeHubServer();
            var local = TinyModels.BertTiny();
            server.AddRepo("tiny-org/bert-tiny").Commit(Directory.GetFiles(local).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes));
            var hub = new HubOptions { Endpoint = server.Endpoint, CacheDirectory = cache, Token = "", Offline = false };
            var ml = new MLContext(seed: 1);
            var log = new List<string>();
            ml.Log += (_, e) => { lock (log) log.Add(e.Message); };
            var train = BothTasks.Data(ml, BothTasks.TextClassification, 1);

            var byId = ml.FineTune().Lora(Options("tiny-org/bert-tiny", hub), Lora()).Fit(train);
            var byFolder = ml.FineTune().Lora(Options(local, hub), Lora()).Fit(train);
            double baseDifference = BothTasks.MaxDifference(BothTasks.Scores(byId, train), BothTasks.Scores(byFolder, train));
            Console.WriteLine($"BaseModel by id vs by folder: max score difference {baseDifference}");
            Assert.AreEqual(0.0, baseDifference);
            Assert.IsTrue(log.Any(m => m.Contains("Downloading model.safetensors of tiny-org/bert-tiny")), "downloads are logged on the MLContext channel");
            Assert.IsTrue(log.Any(m => m.Contains("tiny-org/bert-tiny/model.safetensors:") && m.Contains("(100%)")), "download progress reaches the channel");

            // The saved adapter (with the labels SaveAdapter records) published as an adapter repository.
            var adapterFolder = BothTasks.NewFolder("hub-adapter");
            byFolder.SaveAdapter(adapterFolder);
            server.AddRepo("tiny-org/bert-tiny-lora").Commit(Directory.GetFiles(adapterFolder).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes));
            var continuedById = Options("tiny-org/bert-tiny", hub);
            continuedById.InitialAdapter = "tiny-org/bert-tiny-lora";
            var continuedByFolder = Options(local, hub);
            continuedByFolder.InitialAdapter = adapterFolder;
            var fromId = ml.FineTune().Lora(continuedById, Lora()).Fit(train);
            var fromFolder = ml.FineTune().Lora(continuedByFolder, Lora()).Fit(train);
            double adapterDifference = BothTasks.MaxDifference(BothTasks.Scores(fromId, train), BothTasks.Scores(fromFolder, train));
            Console.WriteLine($"InitialAdapter by id vs by folder: max score difference {adapterDifference}");
            Assert.AreEqual(0.0, adapterDifference);
            Assert.IsTrue(server.Requests.Any(r => r.Path.EndsWith("/task_labels.json")), "the classifier's labels file came with the adapter");

            // Offline, the ids resolve from the cache the first Fit filled.
            var offline = Options("tiny-org/bert-tiny", new HubOptions { CacheDirectory = cache, Offline = true });
            offline.InitialAdapter = "tiny-org/bert-tiny-lora";
            var fromCache = ml.FineTune().Lora(offline, Lora()).Fit(train);
            Assert.AreEqual(0.0, BothTasks.MaxDifference(BothTasks.Scores(fromCache, train), BothTasks.Scores(fromId, train)));
        }
        finally
        {
            Directory.Delete(cache, recursive: true);
        }
    }

    [TestMethod]
    public void AnIdIsAcceptedByTheOptionChecksAndAMissingFolderStillRefused()
    {
        var ml = new MLContext(seed: 1);
        _ = ml.FineTune().Lora(new TextClassificationOptions { BaseModel = "org/name@v1", InitialAdapter = "org/adapter" });
        var error = Assert.ThrowsExactly<DirectoryNotFoundException>(() => ml.FineTune().Lora(new TextClassificationOptions { BaseModel = "/no/such/model" }));
        StringAssert.Contains(error.Message, "/no/such/model");
        StringAssert.Contains(error.Message, "'org/name'");
    }
}
