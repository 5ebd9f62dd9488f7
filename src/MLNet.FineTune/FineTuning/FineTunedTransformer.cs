using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.FineTuning.Scoring;
using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// What every fine-tuned task transformer shares: scoring with the task's batch scorer (<see cref="Transform"/> in
/// batches, PredictionEngine one row at a time), the training history, the adapter in PEFT's format, and model.zip
/// persistence (the task's settings payload, the training history, the adapted model). Each task supplies its scorer,
/// its settings payload and its loader (the type named in its <c>[assembly: LoadableClass]</c>).
/// </summary>
public abstract class FineTunedTransformer : ITransformer, ICanSaveModel
{
    /// <summary>model.zip payload of the training history; absent when the model has none.</summary>
    private const string HistoryPayload = "training_history.json";

    private readonly BaseModelStorage _storage;

    internal FineTunedTransformer(AdaptedModel adapted, BaseModelStorage storage, TrainingHistory? history, ScoringPrecision scoringPrecision)
    {
        adapted.CheckCanSave(storage); // here, not in Save: ML.NET has already truncated the target file by then
        if (scoringPrecision == ScoringPrecision.Float32) adapted.HoldFrozenWeightsInFloat32();
        ScoringPrecision = scoringPrecision;
        Adapted = adapted;
        _storage = storage;
        TrainingHistory = history;
    }

    /// <summary>The precision this transformer scores in (<see cref="FineTuneOptions.ScoringPrecision"/>).</summary>
    public ScoringPrecision ScoringPrecision { get; }

    /// <summary>The adapted model this transformer scores with and saves.</summary>
    internal AdaptedModel Adapted { get; }

    /// <summary>The training history (epoch, step, loss, learning rate, validation metric, throughput), or null for a
    /// model loaded from a file saved without one.</summary>
    public TrainingHistory? TrainingHistory { get; }

    /// <summary>Trainable and total parameter counts of the adapted model (its ToString is PEFT's
    /// print_trainable_parameters line).</summary>
    public TrainableParameterCount TrainableParameters => Adapted.Peft.CountParameters();

    /// <summary>Bytes of the model's weights by storage kind, measured from its tensors: the frozen base (bfloat16,
    /// float32, 4-bit codes and their quantization state with QLoRA) and the adapter. Print it for a table.</summary>
    public WeightMemory WeightMemory => WeightMemory.Measure(Adapted.Model);

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => ScoringDataView.BuildOutputSchema(inputSchema, CheckedScorer(inputSchema));

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(input, CheckedScorer(input.Schema));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(inputSchema, CheckedScorer(inputSchema));

    /// <summary>Writes the adapter in Hugging Face PEFT's format (adapter_config.json, adapter_model.safetensors); a task
    /// head trained from scratch (classifier, qa_outputs) is saved with it, as PEFT's modules_to_save.</summary>
    /// <exception cref="NotSupportedException">The model was fully fine-tuned: it has no adapter.</exception>
    public void SaveAdapter(string folder) => Adapted.SaveAdapter(folder, AdapterTaskFiles());

    /// <summary>Files the task saves beside its adapter (a classifier's labels), by name; PEFT ignores them.</summary>
    private protected virtual IReadOnlyDictionary<string, string>? AdapterTaskFiles() => null;

    /// <summary>Writes a PNG of the training curves.</summary>
    /// <exception cref="InvalidOperationException">The model has no training history.</exception>
    public void SaveTrainingPlot(string path) =>
        (TrainingHistory ?? throw new InvalidOperationException("This model has no training history.")).SavePlot(path);

    /// <summary>The task's scorer: its input columns, batched forward pass and output columns.</summary>
    internal abstract IBatchScorer CreateScorer();

    /// <summary>The version info the task's model.zip component is written with (and read back by its loader).</summary>
    internal abstract VersionInfo SavedVersion { get; }

    /// <summary>Adds the task's settings payload (columns, lengths, labels: what scoring needs besides the model).</summary>
    internal abstract void SaveSettings(ModelPayloadWriter payloads);

    private IBatchScorer CheckedScorer(DataViewSchema schema)
    {
        var scorer = CreateScorer();
        scorer.CheckInputSchema(schema);
        return scorer;
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelZipStorage.Save(ctx, SavedVersion, payloads =>
    {
        SaveSettings(payloads);
        if (TrainingHistory is not null) payloads.AddJson(HistoryPayload, TrainingHistoryJson.From(TrainingHistory), ModelZipStorage.JsonOptions);
        Adapted.Save(payloads, _storage);
    });

    /// <summary>
    /// Reads what <see cref="ICanSaveModel.Save"/> wrote: the task's settings, the training history and the adapted
    /// model, built by <paramref name="createTaskModel"/> from the settings (e.g. the number of classes). For the
    /// task's static <c>Create(IHostEnvironment, ModelLoadContext)</c>, which ML.NET calls.
    /// </summary>
    private protected static (TSettings Settings, TrainingHistory? History, AdaptedModel Adapted) LoadSaved<TSettings, TModel>(
        IHostEnvironment env, ModelLoadContext ctx, VersionInfo version, string settingsPayload, Func<TSettings, Func<HfConfig, TModel>> createTaskModel)
        where TModel : nn.Module, IPretrainedModel
    {
        var payloads = ModelZipStorage.Load(ctx, version);
        var settings = payloads.ReadJson<TSettings>(settingsPayload, ModelZipStorage.JsonOptions);
        var history = payloads.Contains(HistoryPayload) ? payloads.ReadJson<TrainingHistoryJson>(HistoryPayload, ModelZipStorage.JsonOptions).ToHistory() : null;
        var internals = env as IHostEnvironmentInternal;
        // A model trained on a GPU still loads on a machine without one.
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? true);
        var adapted = AdaptedModel.Load(payloads, createTaskModel(settings), device, ModelZipStorage.Where(ctx, version));
        return (settings, history, adapted);
    }
}
