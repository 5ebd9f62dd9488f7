using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// A pretrained task model with a parameter-efficient method injected, its tokenizer and its device: what every task's
/// estimator trains and every task's transformer scores and saves. Tasks supply the model constructor, the loss and
/// the metric; this class owns loading, precision and the training bridge; model.zip is
/// <see cref="AdaptedModelZip"/>'s.
/// </summary>
internal sealed class AdaptedModel
{
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

    /// <summary>Tensors cast to float32 for scoring by <see cref="HoldFrozenWeightsInFloat32"/>, with the dtype they
    /// are saved in (state-dict names); empty until then.</summary>
    private readonly Dictionary<string, ScalarType> _savedDTypes = new(StringComparer.Ordinal);

    /// <summary>Casts the frozen floating-point weights and buffers held in another dtype (a bfloat16 base) to float32
    /// in place, so that scoring computes in float32 (<see cref="ScoringPrecision.Float32"/>); model.zip still stores
    /// them in their original dtype (exact: float32 holds every bfloat16 value). Idempotent. Only for a model that is
    /// done training: the optimizer's buffers are not touched, and the trainable tensors are already float32.</summary>
    public void HoldFrozenWeightsInFloat32()
    {
        foreach (var (name, tensor) in Model.state_dict())
            if (is_floating_point(tensor) && tensor.dtype != ScalarType.Float32) _savedDTypes[name] = tensor.dtype;
        // Module.to re-registers each converted tensor (fields included); float32 ones (adapters, head) are left as they are.
        if (_savedDTypes.Count > 0) Model.to(ScalarType.Float32);
    }

    /// <summary>The base folder this model came from (null when it was loaded from a self-contained model.zip).</summary>
    public string? BaseFolder { get; }

    // Hashing reads every base file (seconds for a large model), so it happens only when something needs the hash:
    // by-reference storage and checkpoints. Train takes it before the first step, so it describes the weights trained on.
    private readonly Lazy<string?> _baseSha256;

    /// <summary>SHA-256 of the base folder (null when loaded from a self-contained model.zip).</summary>
    private string? BaseSha256 => _baseSha256.Value;

    /// <summary>Loads a pretrained folder into a new task model, holds the base in <paramref name="baseDType"/> and
    /// injects the method, or, with <paramref name="initialAdapter"/>, loads a saved adapter to train on.</summary>
    public static AdaptedModel CreateForTraining<TModel>(string baseFolder, Func<HfConfig, TModel> createTaskModel, MethodOptions method,
        ScalarType baseDType, Device device, Action<string> log, string? initialAdapter = null) where TModel : nn.Module, IPretrainedModel
    {
        TorchRuntime.EnsureLoaded();
        if (!PeftMethods.For(method).InjectsAdapters && baseDType != ScalarType.Float32)
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
        PeftMethods.For(method).PrepareBase(model, method, log);
        var peft = initialAdapter is null ? PeftModel.Inject(model, method) : PeftModel.LoadAdapter(model, initialAdapter, trainable: true);
        model.to(device);
        log($"{peft.Config.PeftType}{(initialAdapter is null ? "" : " from " + initialAdapter)}: {peft.CountParameters()}");
        return new AdaptedModel(model, peft, tokenizer, AdaptedModelZip.ReadTokenizerFiles(baseFolder), config, device, baseDType, Path.GetFullPath(baseFolder),
            new Lazy<string?>(() => BaseFolderHash.Compute(baseFolder)));
    }

    /// <summary>An error unless the checkpoint supplied every weight of the pretrained encoder: only the new task head
    /// (e.g. classifier, qa_outputs) and a pooler the checkpoint lacks (transformers initialises both) may start from
    /// random values.</summary>
    private static InvalidDataException? MissingBaseWeights(WeightLoadReport report, IPretrainedModel model, string folder) =>
        report.MissingWeightsError($"BaseModel folder {folder}", $"pretrained {model.ModelType}",
            model.HeadModuleNames.Append($"{model.BaseModelPrefix}.pooler"),
            $"Is it incomplete, saved with other key names, or a checkpoint of another model family than config.json's model_type \"{model.ModelType}\"? Training would start those weights from random values.");

    /// <summary>Trains the method's parameters with the shared loop; <paramref name="progress"/> receives every step
    /// (the estimator's channel, which forwards to <see cref="TrainingOptions.Progress"/>). <paramref name="options"/>
    /// are the loop's options as the user set them, <paramref name="resolved"/> the values the Fit decided.
    /// <paramref name="taskSettings"/> (JSON: labels, lengths) joins the base model's hash and the method's config in
    /// the run fingerprint every checkpoint records, so that resuming from another run's checkpoint fails naming what
    /// differs.</summary>
    public TrainingResult Train(FineTuneOptions options, MethodOptions method, ResolvedTraining resolved, IReadOnlyList<int> exampleLengths,
        Func<IReadOnlyList<int>, Tensor> computeLoss, Func<EvaluationResult>? evaluate, string taskSettings, Action<string> log, IProgress<TrainingProgress> progress,
        Func<IReadOnlyList<int>, long>? countLossItems = null)
    {
        // The base is hashed now, before it is trained on, when model.zip (by reference) or a checkpoint will record it.
        bool checkpoints = options.CheckpointDirectory is not null || options.ResumeFromCheckpoint is not null;
        if (options.BaseModelStorage == BaseModelStorage.ByReference) _ = BaseSha256;
        var parameters = ParameterGroups.FromGroups(Model, PeftMethods.For(method).ParameterGroups(Peft, method));
        Model.train();
        try
        {
            var result = FineTuneTrainer.Train(new TrainingSetup
            {
                Model = Model,
                Parameters = parameters,
                ExampleCount = exampleLengths.Count,
                ExampleLengths = exampleLengths,
                ComputeLoss = computeLoss,
                CountLossItems = countLossItems,
                Evaluate = evaluate is null ? null : () => { Model.eval(); try { return evaluate(); } finally { Model.train(); } },
                RunFingerprint = checkpoints ? RunFingerprint(taskSettings) : null,
                Options = options,
                Resolved = resolved,
                // The estimator's channel reports progress (to the MLContext and to options.Progress).
                Progress = progress,
                Log = log,
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

    /// <summary>Writes the model into model.zip payloads (<see cref="AdaptedModelZip.Write"/>).</summary>
    public void Save(ModelPayloadWriter payloads, BaseModelStorage storage)
    {
        CheckCanSave(storage);
        AdaptedModelZip.Write(payloads, storage, new AdaptedModelZip.Parts(Model, Peft, Tokenizer, _tokenizerFiles, Config, BaseDType,
            BaseFolder, storage == BaseModelStorage.ByReference ? BaseSha256 : null, _savedDTypes));
    }

    /// <summary>Throws when this model cannot be saved with <paramref name="storage"/>; for callers that choose the
    /// storage (a transformer's constructor), so the error comes before ML.NET truncates the target file.</summary>
    /// <exception cref="InvalidOperationException">ByReference for a model loaded from a self-contained model.zip.</exception>
    public void CheckCanSave(BaseModelStorage storage)
    {
        if (storage == BaseModelStorage.ByReference && (BaseFolder is null || BaseSha256 is null))
            throw new InvalidOperationException($"This model was loaded from a self-contained model.zip and has no base folder on disk to reference: {nameof(BaseModelStorage)}.{nameof(BaseModelStorage.ByReference)} cannot save it; use {nameof(BaseModelStorage)}.{nameof(BaseModelStorage.SelfContained)}.");
    }

    /// <summary>Rebuilds a model saved by <see cref="Save"/> (<see cref="AdaptedModelZip.Read"/>).</summary>
    public static AdaptedModel Load<TModel>(ModelPayloadReader payloads, Func<HfConfig, TModel> createTaskModel, Device device, string where)
        where TModel : nn.Module, IPretrainedModel
    {
        var p = AdaptedModelZip.Read(payloads, createTaskModel, device, where);
        return new AdaptedModel(p.Model, p.Peft, p.Tokenizer, p.TokenizerFiles, p.Config, device, p.BaseDType, p.BaseFolder, new Lazy<string?>(p.BaseSha256));
    }

    /// <summary>Writes the adapter in Hugging Face PEFT's format (bottleneck adapters: this library's format), with the
    /// task's <paramref name="taskFiles"/> (name to text) beside it in the same atomic set.</summary>
    public void SaveAdapter(string folder, IReadOnlyDictionary<string, string>? taskFiles = null)
    {
        if (!PeftMethods.For(Peft.Config).InjectsAdapters)
            throw new NotSupportedException("A fully fine-tuned model has no adapter to save: every weight was trained. Save the whole model with mlContext.Model.Save(model, schema, path) (BaseModelStorage.SelfContained puts every weight in the zip).");
        Peft.SaveAdapter(folder, taskFiles);
    }
}
