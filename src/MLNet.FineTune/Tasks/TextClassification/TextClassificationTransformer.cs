using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tasks.FineTuning;
using MLNet.FineTune.Tasks.Scoring;
using MLNet.FineTune.Tasks.TextClassification;
using MLNet.FineTune.Training;

[assembly: LoadableClass(typeof(TextClassificationTransformer), null, typeof(SignatureLoadModel),
    "Fine-tuned text classifier", TextClassificationTransformer.LoaderSignature)]

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>
/// A fine-tuned text classifier: scores text (or text-pair) columns in batches and adds ML.NET's classification
/// columns, so <c>BinaryClassification.Evaluate</c>, <c>MulticlassClassification.Evaluate</c> and
/// <c>MapKeyToValue</c> work unchanged.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type and meaning</description></listheader>
/// <item><term>input: text (and text pair)</term><description>String.</description></item>
/// <item><term>binary (bool labels): Score</term><description>Single: log-odds of true.</description></item>
/// <item><term>binary: Probability</term><description>Single: probability of true.</description></item>
/// <item><term>binary: PredictedLabel</term><description>Boolean.</description></item>
/// <item><term>multiclass: Score</term><description>Vector of Single: class probabilities (slot names = labels).</description></item>
/// <item><term>multiclass: PredictedLabel</term><description>Key: the predicted class (key values = labels).</description></item>
/// </list>
/// <para>Thread safety: <see cref="Transform"/> and prediction engines may be used from several threads only one
/// at a time per transformer (they share one TorchSharp model); create one PredictionEngine per thread, or use
/// ML.NET's PredictionEnginePool, and serialise scoring across threads.</para>
/// </remarks>
public sealed class TextClassificationTransformer : ITransformer, ICanSaveModel
{
    internal const string LoaderSignature = "MLFTTextClassifier";
    private const string SettingsPayload = "text_classification.json";
    private const string HistoryPayload = "training_history.json";

    private readonly IHost _host;
    private readonly TextClassifierModel _model;
    private readonly Settings _settings;

    /// <summary>What the transformer needs besides the model, as saved in model.zip.</summary>
    internal sealed record Settings(string TextColumn, string? PairColumn, string ScoreColumn, string PredictedLabelColumn,
        LabelKind LabelKind, string[] Labels, int MaxSequenceLength, int ScoringBatchSize, BaseModelStorage Storage);

    internal TextClassificationTransformer(IHostEnvironment env, TextClassifierModel model, Settings settings, TrainingHistory? history)
    {
        _host = env.Register(nameof(TextClassificationTransformer));
        _model = model;
        _settings = settings;
        TrainingHistory = history;
    }

    /// <summary>The training history (epoch, step, loss, learning rate, validation metric, throughput), or null for a
    /// model loaded from a file saved without one.</summary>
    public TrainingHistory? TrainingHistory { get; }

    /// <summary>The class names in the order of the Score vector.</summary>
    public IReadOnlyList<string> Labels => _model.Labels.Names;

    /// <summary>Trainable and total parameter counts of the adapted model (its ToString is PEFT's
    /// print_trainable_parameters line).</summary>
    public TrainableParameterCount TrainableParameters => _model.Adapted.Peft.CountParameters();

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => ScoringDataView.BuildOutputSchema(inputSchema, CheckedScorer(inputSchema));

    /// <inheritdoc/>
    public IDataView Transform(IDataView input) => new ScoringDataView(input, CheckedScorer(input.Schema));

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new ScoringRowMapper(inputSchema, CheckedScorer(inputSchema));

    /// <summary>Writes the adapter in Hugging Face PEFT's format (adapter_config.json, adapter_model.safetensors).</summary>
    public void SaveAdapter(string folder) => _model.Adapted.SaveAdapter(folder);

    /// <summary>Writes a PNG of the training curves.</summary>
    public void SaveTrainingPlot(string path) =>
        (TrainingHistory ?? throw new InvalidOperationException("This model has no training history.")).SavePlot(path);

    private TextClassificationScorer CheckedScorer(DataViewSchema schema)
    {
        var scorer = new TextClassificationScorer(_model, _settings.TextColumn, _settings.PairColumn,
            _settings.ScoreColumn, _settings.PredictedLabelColumn, _settings.ScoringBatchSize);
        scorer.CheckInputSchema(schema);
        return scorer;
    }

    private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
        modelSignature: "MLFTTXCL", loaderSignature: LoaderSignature,
        currentVersion: 0x00010001, readableByVersion: 0x00010001, readsBackToVersion: 0x00010001,
        loaderType: typeof(TextClassificationTransformer));

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelZipStorage.Save(ctx, GetVersionInfo(), payloads =>
    {
        payloads.AddJson(SettingsPayload, _settings, ModelZipStorage.JsonOptions);
        if (TrainingHistory is not null) payloads.AddJson(HistoryPayload, TrainingHistoryJson.From(TrainingHistory), ModelZipStorage.JsonOptions);
        _model.Adapted.Save(payloads, _settings.Storage);
    });

    // Found by ML.NET through the LoadableClass attribute above.
    private static TextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var payloads = ModelZipStorage.Load(ctx, GetVersionInfo());
        var settings = payloads.ReadJson<Settings>(SettingsPayload, ModelZipStorage.JsonOptions);
        var history = payloads.Contains(HistoryPayload) ? payloads.ReadJson<TrainingHistoryJson>(HistoryPayload, ModelZipStorage.JsonOptions).ToHistory() : null;
        var labels = new ClassLabels(settings.LabelKind, settings.Labels);
        var internals = env as IHostEnvironmentInternal;
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? true);
        var adapted = AdaptedModel.Load(payloads, config => Models.ModelFactory.CreateSequenceClassification(config, labels.Count),
            device, ModelZipStorage.Where(ctx, LoaderSignature));
        return new TextClassificationTransformer(env, new TextClassifierModel(adapted, labels, settings.MaxSequenceLength), settings, history);
    }
}
