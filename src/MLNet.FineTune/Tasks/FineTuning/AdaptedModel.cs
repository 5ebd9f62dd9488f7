using System.Security.Cryptography;
using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.FineTuning;

/// <summary>How model.zip describes the base model and the dtype it was held in.</summary>
internal sealed record StoredBaseModel(BaseModelStorage Storage, string? Folder, string? Sha256, string BaseDType);

/// <summary>
/// A pretrained task model with a parameter-efficient method injected, its tokenizer and its device: what every task's
/// estimator trains and every task's transformer scores and saves. Tasks supply the model constructor, the loss and
/// the metric; this class owns loading, precision, the training bridge and persistence.
/// </summary>
internal sealed class AdaptedModel
{
    private const string ConfigPayload = "base/config.json";
    private const string TokenizerPrefix = "base/tokenizer/";
    private const string AdapterConfigPayload = "adapter_config.json";
    private const string StoredBasePayload = "base_model.json";
    private const string FullStatePayload = "model.safetensors";
    private const string TrainedStatePayload = "trained.safetensors";

    /// <summary>Tokenizer files carried into model.zip (whichever the base folder has).</summary>
    private static readonly string[] TokenizerFileNames =
        ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "special_tokens_map.json", "vocab.json", "merges.txt", "added_tokens.json",
         ChatTemplate.ChatTemplateFile];

    private readonly IReadOnlyDictionary<string, byte[]> _tokenizerFiles;

    private AdaptedModel(nn.Module model, PeftModel peft, HfTokenizer tokenizer, IReadOnlyDictionary<string, byte[]> tokenizerFiles,
        HfConfig config, Device device, ScalarType baseDType, string? baseFolder, Lazy<string?> baseSha256)
    {
        Model = model;
        Peft = peft;
        Tokenizer = tokenizer;
        _tokenizerFiles = tokenizerFiles;
        Config = config;
        Device = device;
        BaseDType = baseDType;
        BaseFolder = baseFolder;
        _baseSha256 = baseSha256;
    }

    /// <summary>The task model (its linear layers wrapped by the method).</summary>
    public nn.Module Model { get; }

    /// <summary>The injected method: adapter layers, saved modules, PEFT file format.</summary>
    public PeftModel Peft { get; }

    public HfTokenizer Tokenizer { get; }

    /// <summary>The base model's chat template (from its tokenizer files), or null when it has none.</summary>
    public ChatTemplate? ChatTemplate => (_chatTemplate ??= new Lazy<ChatTemplate?>(() => Tokenization.ChatTemplate.TryFromFiles(
        name => _tokenizerFiles.TryGetValue(name, out var bytes) ? System.Text.Encoding.UTF8.GetString(bytes) : null,
        BaseFolder ?? "the base model's tokenizer files"))).Value;
    private Lazy<ChatTemplate?>? _chatTemplate;

    public HfConfig Config { get; }
    public Device Device { get; }

    /// <summary>The dtype the frozen base is held in (adapters and the head stay float32).</summary>
    public ScalarType BaseDType { get; }

    /// <summary>The base folder this model came from (null when it was loaded from a self-contained model.zip).</summary>
    public string? BaseFolder { get; }

    // Hashing reads every base file (seconds for a large model), so it happens only when something needs the hash:
    // by-reference storage and checkpoints. Train takes it before the first step, so it describes the weights trained on.
    private readonly Lazy<string?> _baseSha256;

    /// <summary>SHA-256 of the base folder (null when loaded from a self-contained model.zip).</summary>
    private string? BaseSha256 => _baseSha256.Value;

    /// <summary>Loads a pretrained folder into a new task model, holds the base in <paramref name="baseDType"/> and
    /// injects the method, or, with <paramref name="initialAdapter"/>, loads a saved adapter to train on.</summary>
    public static AdaptedModel CreateForTraining<TModel>(string baseFolder, Func<HfConfig, TModel> createTaskModel, PeftConfig method,
        ScalarType baseDType, Device device, Action<string> log, string? initialAdapter = null) where TModel : nn.Module, IPretrainedModel
    {
        TorchRuntime.EnsureLoaded();
        if (method is FullFineTuneConfig && baseDType != ScalarType.Float32)
        {
            // bf16 is for the frozen base; full fine-tuning freezes nothing, and AdamW's updates vanish in bf16 weights.
            log($"Full fine-tuning trains every weight: holding the model in Float32, not {baseDType}.");
            baseDType = ScalarType.Float32;
        }
        var config = HfConfig.Load(baseFolder);
        var tokenizer = HfTokenizer.FromFolder(baseFolder);
        var model = createTaskModel(config);
        var report = ModelFactory.LoadPretrained(model, baseFolder, baseDType);
        log($"Loaded {baseFolder}: {report}");
        if (MissingBaseWeights(report, model, baseFolder) is { } missingWeights)
        {
            model.Dispose();
            throw missingWeights;
        }
        var peft = initialAdapter is null ? PeftModel.Inject(model, method) : PeftModel.LoadAdapter(model, initialAdapter, trainable: true);
        model.to(device);
        log($"{peft.Config.PeftType}{(initialAdapter is null ? "" : " from " + initialAdapter)}: {peft.CountParameters()}");
        return new AdaptedModel(model, peft, tokenizer, ReadTokenizerFiles(baseFolder), config, device, baseDType, Path.GetFullPath(baseFolder),
            new Lazy<string?>(() => HashBaseFolder(baseFolder)));
    }

    /// <summary>An error unless the checkpoint supplied every weight of the pretrained encoder: only the new task head
    /// (e.g. classifier, qa_outputs) and a pooler the checkpoint lacks (transformers initialises both) may start from
    /// random values.</summary>
    private static InvalidDataException? MissingBaseWeights(WeightLoadReport report, IPretrainedModel model, string folder) =>
        report.MissingWeightsError($"BaseModel folder {folder}", $"pretrained {model.ModelType}",
            model.HeadModuleNames.Append($"{model.BaseModelPrefix}.pooler"),
            $"Is it incomplete, saved with other key names, or a checkpoint of another model family than config.json's model_type \"{model.ModelType}\"? Training would start those weights from random values.");

    /// <summary>Trains the method's parameters with the shared loop; <paramref name="progress"/> receives every step
    /// (the estimator's channel, which forwards to <see cref="FineTuneOptions.Progress"/>). <paramref name="taskSettings"/>
    /// (JSON: labels, lengths) joins the base model's hash and the method's config in the run fingerprint every
    /// checkpoint records, so that resuming from another run's checkpoint fails naming what differs.</summary>
    public TrainingResult Train(FineTuneOptions options, MethodOptions method, int seed, int exampleCount, IReadOnlyList<int> exampleLengths,
        Func<IReadOnlyList<int>, Tensor> computeLoss, Func<EvaluationResult>? evaluate, string taskSettings, Action<string> log, IProgress<TrainingProgress> progress,
        Func<IReadOnlyList<int>, long>? countLossItems = null)
    {
        // The base is hashed now, before it is trained on, when model.zip (by reference) or a checkpoint will record it.
        bool checkpoints = options.CheckpointDirectory is not null || options.ResumeFromCheckpoint is not null;
        if (options.BaseModelStorage == BaseModelStorage.ByReference) _ = BaseSha256;
        var parameters = ParameterGroups.FromGroups(Model, Peft.ParameterGroups(MethodConfigs.LoraPlusRatio(method)));
        var trainer = new TrainerOptions
        {
            Epochs = options.Epochs,
            BatchSize = options.BatchSize,
            GradientAccumulationSteps = options.GradientAccumulationSteps,
            LearningRate = options.LearningRate ?? MethodConfigs.DefaultLearningRate(method),
            WeightDecay = options.WeightDecay,
            WarmupRatio = options.WarmupRatio,
            Schedule = options.Schedule,
            MaxGradNorm = options.MaxGradientNorm > 0 ? options.MaxGradientNorm : null,
            Seed = seed,
            LengthBucketing = options.LengthBucketing,
            EvaluationStrategy = evaluate is null ? EvaluationStrategy.None : options.EvaluateEverySteps is null ? EvaluationStrategy.Epoch : EvaluationStrategy.Steps,
            EvalSteps = options.EvaluateEverySteps ?? 500,
            EarlyStoppingPatience = options.EarlyStoppingPatience,
            EarlyStoppingThreshold = options.EarlyStoppingThreshold,
            CheckpointEverySteps = options.CheckpointEverySteps,
            CheckpointDirectory = options.CheckpointDirectory,
            ResumeFromCheckpoint = options.ResumeFromCheckpoint,
            Progress = progress,
            Log = log,
            CancellationToken = options.CancellationToken,
        };
        Model.train();
        try
        {
            var result = FineTuneTrainer.Train(new TrainingSetup
            {
                Model = Model,
                Parameters = parameters,
                ExampleCount = exampleCount,
                ExampleLengths = exampleLengths,
                ComputeLoss = computeLoss,
                CountLossItems = countLossItems,
                Evaluate = evaluate is null ? null : () => { Model.eval(); try { return evaluate(); } finally { Model.train(); } },
                RunFingerprint = checkpoints ? RunFingerprint(taskSettings) : null,
                Options = trainer,
            });
            if (options.TrainingPlotPath is { } plot) SavePlotOrWarn(result.History, plot, log);
            return result;
        }
        finally
        {
            Model.eval();
        }
    }

    /// <summary>What identifies a training run of this model: the base weights (the folder's hash, which does not
    /// depend on where the folder lies), the method's config (rank, alpha, targets; not the folder's path) and the
    /// task's settings.</summary>
    private Dictionary<string, string> RunFingerprint(string taskSettings) => new(StringComparer.Ordinal)
    {
        ["base model SHA-256"] = BaseSha256 ?? throw new InvalidOperationException("A model loaded from a self-contained model.zip has no base folder to train on."),
        ["method"] = PeftConfigJson.WriteModelMethod(Peft.Config with { BaseModelNameOrPath = null, InferenceMode = false }),
        ["task"] = taskSettings,
    };

    /// <summary>Writes the plot of <see cref="FineTuneOptions.TrainingPlotPath"/>; a failure is logged, not thrown: the
    /// trained model matters more than its picture, and the fitted transformer can still write it.</summary>
    private static void SavePlotOrWarn(TrainingHistory history, string path, Action<string> log)
    {
        try
        {
            history.SavePlot(path);
            log($"Training plot written: {path}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException or InvalidOperationException)
        {
            log($"Warning: could not write the training plot to TrainingPlotPath '{path}': {e.Message} The trained model is returned; " +
                "write the plot later with its SaveTrainingPlot(path).");
        }
    }

    /// <summary>Writes the model into model.zip payloads: base config, tokenizer files, the method's config, and
    /// either every weight (self-contained) or the trained ones plus the base folder's path and hash.</summary>
    /// <remarks>Full fine-tuning trains every weight, so its <see cref="BaseModelStorage.ByReference"/> zip holds all
    /// of them (as large as a self-contained one, and still tied to the base folder).</remarks>
    public void Save(ModelPayloadWriter payloads, BaseModelStorage storage)
    {
        CheckCanSave(storage);
        payloads.AddText(ConfigPayload, Config.ToString());
        foreach (var (name, bytes) in _tokenizerFiles) payloads.Add(TokenizerPrefix + name, bytes);
        payloads.AddText(AdapterConfigPayload, PeftConfigJson.WriteModelMethod(Peft.Config));
        if (storage == BaseModelStorage.ByReference)
        {
            payloads.AddJson(StoredBasePayload, new StoredBaseModel(storage, BaseFolder, BaseSha256, BaseDType.ToString()), ModelZipStorage.JsonOptions);
            payloads.Add(TrainedStatePayload, s => SafeTensors.Write(s, TrainedState(Model, Peft)));
        }
        else
        {
            payloads.AddJson(StoredBasePayload, new StoredBaseModel(storage, null, null, BaseDType.ToString()), ModelZipStorage.JsonOptions);
            payloads.Add(FullStatePayload, s => SafeTensors.Write(s, Model.state_dict()));
        }
    }

    /// <summary>Throws when this model cannot be saved with <paramref name="storage"/>; for callers that choose the
    /// storage (a transformer's constructor), so the error comes before ML.NET truncates the target file.</summary>
    /// <exception cref="InvalidOperationException">ByReference for a model loaded from a self-contained model.zip.</exception>
    public void CheckCanSave(BaseModelStorage storage)
    {
        if (storage == BaseModelStorage.ByReference && (BaseFolder is null || BaseSha256 is null))
            throw new InvalidOperationException($"This model was loaded from a self-contained model.zip and has no base folder on disk to reference: {nameof(BaseModelStorage)}.{nameof(BaseModelStorage.ByReference)} cannot save it; use {nameof(BaseModelStorage)}.{nameof(BaseModelStorage.SelfContained)}.");
    }

    /// <summary>Rebuilds a model saved by <see cref="Save"/>.</summary>
    public static AdaptedModel Load<TModel>(ModelPayloadReader payloads, Func<HfConfig, TModel> createTaskModel, Device device, string where)
        where TModel : nn.Module, IPretrainedModel
    {
        TorchRuntime.EnsureLoaded();
        var config = HfConfig.Parse(payloads.ReadText(ConfigPayload), $"{where} {ConfigPayload}");
        var tokenizerFiles = payloads.Names.Where(n => n.StartsWith(TokenizerPrefix, StringComparison.Ordinal))
            .ToDictionary(n => n[TokenizerPrefix.Length..], payloads.ReadBytes);
        var tokenizer = TokenizerFromFiles(tokenizerFiles, config);
        var stored = payloads.ReadJson<StoredBaseModel>(StoredBasePayload, ModelZipStorage.JsonOptions);
        var method = PeftConfigJson.ParseModelMethod(JsonNode.Parse(payloads.ReadText(AdapterConfigPayload))!.AsObject(), $"{where} {AdapterConfigPayload}") with { InferenceMode = false };
        var baseDType = Enum.Parse<ScalarType>(stored.BaseDType);

        var model = createTaskModel(config);
        string? baseFolder = null;
        if (stored.Storage == BaseModelStorage.ByReference)
        {
            baseFolder = stored.Folder!;
            if (!Directory.Exists(baseFolder))
                throw new DirectoryNotFoundException($"{where} references the base model folder {baseFolder}, which does not exist on this machine. Copy the base model there, or save the model with BaseModelStorage.SelfContained.");
            var actual = HashBaseFolder(baseFolder);
            if (!string.Equals(actual, stored.Sha256, StringComparison.OrdinalIgnoreCase))
                throw new InvalidDataException($"{where} was trained on the base model in {baseFolder} with SHA-256 {stored.Sha256}, but the folder now hashes to {actual}: the base model changed. Restore the original files or retrain.");
            ModelFactory.LoadPretrained(model, baseFolder, baseDType);
        }
        else
        {
            model.to(baseDType);
        }
        var peft = PeftModel.Inject(model, method);
        var statePayload = stored.Storage == BaseModelStorage.ByReference ? TrainedStatePayload : FullStatePayload;
        var state = LoadStateFromPayload(payloads, statePayload);
        try
        {
            var report = WeightLoader.Load(model, state, basePrefix: null, sourceName: where);
            if (report.Unexpected.Count > 0 || (stored.Storage == BaseModelStorage.SelfContained && report.Missing.Count > 0))
                throw new InvalidDataException($"{where}: the saved weights do not fit the model built from its config: {report}.");
            // By reference the base folder supplies the frozen weights, but nothing can stand in for a trained one.
            var missingTrained = TrainedState(model, peft).Keys.Intersect(report.Missing).Order(StringComparer.Ordinal).ToList();
            if (missingTrained.Count > 0)
                throw new InvalidDataException($"{where}: {statePayload} lacks the trained tensor '{missingTrained[0]}'{(missingTrained.Count > 1 ? $" and {missingTrained.Count - 1} more" : "")}; the file is incomplete or belongs to another model.");
        }
        finally
        {
            foreach (var t in state.Values) t.Dispose();
        }
        model.to(device);
        model.eval();
        return new AdaptedModel(model, peft, tokenizer, tokenizerFiles, config, device, baseDType, baseFolder, new Lazy<string?>(stored.Sha256));
    }

    /// <summary>Writes the adapter in Hugging Face PEFT's format (bottleneck adapters: this library's format), with the
    /// task's <paramref name="taskFiles"/> (name to text) beside it in the same atomic set.</summary>
    public void SaveAdapter(string folder, IReadOnlyDictionary<string, string>? taskFiles = null)
    {
        if (Peft.Config is FullFineTuneConfig)
            throw new NotSupportedException("A fully fine-tuned model has no adapter to save: every weight was trained. Save the whole model with mlContext.Model.Save(model, schema, path) (BaseModelStorage.SelfContained puts every weight in the zip).");
        Peft.SaveAdapter(folder, taskFiles);
    }

    /// <summary>The tensors that differ from the base checkpoint: trained parameters, and for PiSSA the residual
    /// base weights its initialisation wrote.</summary>
    private static Dictionary<string, Tensor> TrainedState(nn.Module model, PeftModel peft)
    {
        var state = model.named_parameters().Where(p => p.parameter.requires_grad).ToDictionary(p => p.name, p => (Tensor)p.parameter);
        if (peft.Config is LoraConfig { Init: LoraInit.PiSSA })
        {
            var all = model.state_dict();
            foreach (var path in peft.Layers.Keys) state[path + ".weight"] = all[path + ".weight"];
        }
        return state;
    }

    private static Dictionary<string, Tensor> LoadStateFromPayload(ModelPayloadReader payloads, string name)
    {
        var temp = Path.Combine(Path.GetTempPath(), "mlnet-finetune-" + Guid.NewGuid().ToString("N") + ".safetensors");
        try
        {
            payloads.ExtractFile(name, temp);
            return SafeTensors.Load(temp);
        }
        finally
        {
            File.Delete(temp);
        }
    }

    private static Dictionary<string, byte[]> ReadTokenizerFiles(string folder) =>
        TokenizerFileNames.Where(f => File.Exists(Path.Combine(folder, f))).ToDictionary(f => f, f => File.ReadAllBytes(Path.Combine(folder, f)));

    private static HfTokenizer TokenizerFromFiles(IReadOnlyDictionary<string, byte[]> files, HfConfig config)
    {
        // The tokenizer reads a folder (config.json informs casing): lay the files out in a scratch folder.
        var folder = Directory.CreateTempSubdirectory("mlnet-finetune-tokenizer-").FullName;
        try
        {
            foreach (var (name, bytes) in files) File.WriteAllBytes(Path.Combine(folder, name), bytes);
            File.WriteAllText(Path.Combine(folder, "config.json"), config.ToString());
            return HfTokenizer.FromFolder(folder);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>SHA-256 over config.json and the weight files, in a fixed order.</summary>
    internal static string HashBaseFolder(string folder)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var file in new[] { Path.Combine(folder, "config.json") }.Concat(HfCheckpoint.WeightFiles(folder).Order(StringComparer.Ordinal)))
        {
            using var stream = File.OpenRead(file);
            var buffer = new byte[1 << 20];
            int read;
            while ((read = stream.Read(buffer)) > 0) sha.AppendData(buffer, 0, read);
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }
}
