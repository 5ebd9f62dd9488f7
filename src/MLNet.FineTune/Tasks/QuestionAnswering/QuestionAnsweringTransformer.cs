using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.FineTuning.Scoring;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;

[assembly: LoadableClass(typeof(QuestionAnsweringTransformer), null, typeof(SignatureLoadModel),
    "Fine-tuned extractive question answering", QuestionAnsweringTransformer.LoaderSignature)]

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// A fine-tuned extractive question answerer: for each row, finds the answer to the question column in the context
/// column (all windows of a long context are scored, as run_qa.py does) and adds the answer columns.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type and meaning</description></listheader>
/// <item><term>input: Context, Question</term><description>String (names from <see cref="QuestionAnsweringOptions"/>).</description></item>
/// <item><term>Answer</term><description>String: a span of the context; "" for no answer.</description></item>
/// <item><term>AnswerStart</term><description>Int32: the answer's UTF-16 index in the context; -1 for no answer.</description></item>
/// <item><term>Score</term><description>Single: start logit + end logit of the answer (of [CLS] when the answer is "").</description></item>
/// <item><term>NoAnswerScore</term><description>Single, SQuAD v2.0 models only: no-answer score minus the best span's score; the answer is "" when it exceeds <see cref="NullScoreDifferenceThreshold"/>.</description></item>
/// </list>
/// <para><c>mlContext.FineTune().EvaluateQuestionAnswering(scored)</c> scores the output as the official SQuAD scripts do.</para>
/// <para>Thread safety: <see cref="FineTunedTransformer.Transform"/> and prediction engines share one TorchSharp model and are serialised
/// per transformer; create one PredictionEngine per thread.</para>
/// </remarks>
public sealed class QuestionAnsweringTransformer : FineTunedTransformer
{
    internal const string LoaderSignature = "MLFTQuestionAnswering";
    private const string SettingsPayload = "question_answering.json";

    private readonly QuestionAnswererModel _model;
    private readonly Settings _settings;

    /// <summary>What the transformer needs besides the model, as saved in model.zip.</summary>
    internal sealed record Settings(string ContextColumn, string QuestionColumn, string AnswerColumn, string AnswerStartColumn,
        string ScoreColumn, string NoAnswerScoreColumn, int MaxSequenceLength, int DocStride, ContextWindowing Windowing,
        int NBest, int MaxAnswerLength, bool VersionTwoWithNegative, double NullScoreDifferenceThreshold, int ScoringBatchSize,
        BaseModelStorage Storage, ScoringPrecision ScoringPrecision = ScoringPrecision.AsTrained)
    {
        public static Settings From(QuestionAnsweringOptions o, bool versionTwo) => new(o.ContextColumnName, o.QuestionColumnName,
            o.PredictedAnswerColumnName, o.PredictedAnswerStartColumnName, o.ScoreColumnName, o.NoAnswerScoreColumnName,
            o.MaxSequenceLength, o.DocStride, o.ContextWindowing, o.NBest, o.MaxAnswerLength, versionTwo, o.NullScoreDifferenceThreshold,
            o.ScoringBatchSize, o.BaseModelStorage, o.ScoringPrecision);

        public QaFeaturizer Featurizer(HfTokenizer tokenizer) => new(tokenizer, MaxSequenceLength, DocStride, padToMaxLength: false, Windowing);
        public QaPostProcessor PostProcessor() => new(NBest, MaxAnswerLength, VersionTwoWithNegative, NullScoreDifferenceThreshold);
    }

    internal QuestionAnsweringTransformer(QuestionAnswererModel model, Settings settings, TrainingHistory? history)
        : base(model.Adapted, settings.Storage, history, settings.ScoringPrecision)
    {
        _model = model;
        _settings = settings;
    }

    /// <summary>True when the model may answer "" (SQuAD v2.0: it was trained with unanswerable questions).</summary>
    public bool VersionTwoWithNegative => _settings.VersionTwoWithNegative;

    /// <summary>SQuAD v2.0: the answer is "" when NoAnswerScore exceeds this.</summary>
    public double NullScoreDifferenceThreshold => _settings.NullScoreDifferenceThreshold;

    /// <summary>
    /// The same model with another no-answer threshold (SQuAD v2.0), sharing its weights: e.g. the
    /// <see cref="QuestionAnsweringMetrics.BestF1Threshold"/> found on validation data, as BERT's authors advise.
    /// </summary>
    /// <exception cref="InvalidOperationException">The model is a SQuAD v1.1 model (it never answers "").</exception>
    public QuestionAnsweringTransformer WithNullScoreDifferenceThreshold(double threshold)
    {
        if (!_settings.VersionTwoWithNegative)
            throw new InvalidOperationException("This model was trained without unanswerable questions (SQuAD v1.1 rules) and never answers \"\"; a no-answer threshold does not apply. Train with VersionTwoWithNegative = true.");
        if (double.IsNaN(threshold)) throw new ArgumentOutOfRangeException(nameof(threshold), "The threshold must be a number.");
        var settings = _settings with { NullScoreDifferenceThreshold = threshold };
        return new QuestionAnsweringTransformer(_model.WithPostProcessor(settings.PostProcessor()), settings, TrainingHistory);
    }

    internal override IBatchScorer CreateScorer() => new QuestionAnsweringScorer(_model, _settings);

    internal override void SaveSettings(ModelPayloadWriter payloads) => payloads.AddJson(SettingsPayload, _settings, ModelZipStorage.JsonOptions);

    // Version 0x00010001: settings JSON, optional training history, the adapted model's payloads (FineTunedTransformer).
    // Version 0x00010002: the manifest carries each payload's SHA-256 (ModelZipStorage layout 2), checked at load;
    // 0x00010001 builds cannot read it (they know only layout 1), this build still reads 0x00010001 zips.
    internal override VersionInfo SavedVersion => GetVersionInfo();

    private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
        modelSignature: "MLFTQANS", loaderSignature: LoaderSignature,
        currentVersion: 0x00010002, readableByVersion: 0x00010002, readsBackToVersion: 0x00010001,
        loaderType: typeof(QuestionAnsweringTransformer));

    // Found by ML.NET through the LoadableClass attribute above.
    private static QuestionAnsweringTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (settings, history, adapted) = LoadSaved<Settings, QuestionAnsweringModel>(env, ctx, GetVersionInfo(), SettingsPayload,
            _ => ModelFactory.CreateQuestionAnswering);
        var model = new QuestionAnswererModel(adapted, settings.Featurizer(adapted.Tokenizer), settings.PostProcessor());
        return new QuestionAnsweringTransformer(model, settings, history);
    }
}
