using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.FineTuning.Scoring;
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
/// <para>Thread safety: <see cref="FineTunedTransformer.Transform"/> and prediction engines may be used from several threads only one
/// at a time per transformer (they share one TorchSharp model); create one PredictionEngine per thread, or use
/// ML.NET's PredictionEnginePool, and serialise scoring across threads.</para>
/// </remarks>
public sealed class TextClassificationTransformer : FineTunedTransformer
{
    internal const string LoaderSignature = "MLFTTextClassifier";
    private const string SettingsPayload = "text_classification.json";

    private readonly TextClassifierModel _model;

    internal TextClassifierModel Classifier => _model;
    private readonly Settings _settings;

    /// <summary>What the transformer needs besides the model, as saved in model.zip.</summary>
    internal sealed record Settings(string TextColumn, string? PairColumn, string ScoreColumn, string PredictedLabelColumn,
        LabelKind LabelKind, string[] Labels, int MaxSequenceLength, int ScoringBatchSize, BaseModelStorage Storage,
        ScoringPrecision ScoringPrecision = ScoringPrecision.AsTrained);

    internal TextClassificationTransformer(TextClassifierModel model, Settings settings, TrainingHistory? history)
        : base(model.Adapted, settings.Storage, history, settings.ScoringPrecision)
    {
        _model = model;
        _settings = settings;
    }

    /// <summary>The class names in the order of the Score vector.</summary>
    public IReadOnlyList<string> Labels => _model.Labels.Names;

    internal override IBatchScorer CreateScorer() => new TextClassificationScorer(_model, _settings.TextColumn, _settings.PairColumn,
        _settings.ScoreColumn, _settings.PredictedLabelColumn, _settings.ScoringBatchSize);

    /// <summary>The classes beside the adapter (<see cref="AdapterLabels"/>), so continuing from it checks them.</summary>
    private protected override IReadOnlyDictionary<string, string> AdapterTaskFiles() =>
        new Dictionary<string, string> { [AdapterLabels.FileName] = AdapterLabels.ToJson(_model.Labels.Names) };

    internal override void SaveSettings(ModelPayloadWriter payloads) => payloads.AddJson(SettingsPayload, _settings, ModelZipStorage.JsonOptions);

    // Version 0x00010001: settings JSON, optional training history, the adapted model's payloads (FineTunedTransformer).
    // Version 0x00010002: the manifest carries each payload's SHA-256 (ModelZipStorage layout 2), checked at load;
    // 0x00010001 builds cannot read it (they know only layout 1), this build still reads 0x00010001 zips.
    internal override VersionInfo SavedVersion => GetVersionInfo();

    private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
        modelSignature: "MLFTTXCL", loaderSignature: LoaderSignature,
        currentVersion: 0x00010002, readableByVersion: 0x00010002, readsBackToVersion: 0x00010001,
        loaderType: typeof(TextClassificationTransformer));

    // Found by ML.NET through the LoadableClass attribute above.
    private static TextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (settings, history, adapted) = LoadSaved<Settings, SequenceClassificationModel>(env, ctx, GetVersionInfo(), SettingsPayload,
            saved => config => ModelFactory.CreateSequenceClassification(config, saved.Labels.Length));
        var labels = new ClassLabels(settings.LabelKind, settings.Labels);
        return new TextClassificationTransformer(new TextClassifierModel(adapted, labels, settings.MaxSequenceLength), settings, history);
    }
}
