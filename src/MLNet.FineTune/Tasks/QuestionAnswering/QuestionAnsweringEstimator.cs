using System.Diagnostics;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tasks.FineTuning;
using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// Fine-tunes a pretrained encoder (BERT, RoBERTa, DistilBERT families) for extractive question answering (SQuAD
/// v1.1 and v2.0) with a parameter-efficient method, as Hugging Face's run_qa.py does: every window of every training
/// question is a training example, labelled with the answer's first and last token, or with [CLS] when the window
/// does not hold the whole answer (and for unanswerable questions). <see cref="Fit"/> returns a
/// <see cref="QuestionAnsweringTransformer"/>.
/// </summary>
/// <remarks>
/// Input columns: see <see cref="QuestionAnsweringOptions"/> (Context, Question, AnswerText, AnswerStart, optionally
/// IsImpossible, Id, AllAnswers). Output columns: see <see cref="QuestionAnsweringTransformer"/>.
/// <para>Loss: (cross-entropy of the start logits + cross-entropy of the end logits) / 2, as BertForQuestionAnswering.
/// Validation metric (with <see cref="FineTuneOptions.ValidationSet"/>): SQuAD F1 of the post-processed answers, as
/// the official scripts compute it (higher is better); it decides early stopping and the best weights.</para>
/// </remarks>
public sealed class QuestionAnsweringEstimator : IEstimator<QuestionAnsweringTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly IHost _host;
    private readonly QuestionAnsweringOptions _options;
    private readonly MethodOptions _method;

    internal QuestionAnsweringEstimator(IHostEnvironment env, QuestionAnsweringOptions options, MethodOptions method)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _host = env.Register(nameof(QuestionAnsweringEstimator));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _method = method ?? throw new ArgumentNullException(nameof(method));
        CheckOptions(options);
    }

    /// <summary>The task options this estimator trains with.</summary>
    public QuestionAnsweringOptions Options => _options;

    /// <summary>The method options (LoRA, DoRA, adapters, IA3 or full fine-tuning).</summary>
    public MethodOptions Method => _method;

    /// <summary>The history of the last <see cref="Fit"/> (also on the returned transformer).</summary>
    public TrainingHistory? LastTrainingHistory { get; private set; }

    /// <inheritdoc/>
    public QuestionAnsweringTransformer Fit(IDataView input)
    {
        using var channel = _host.Start("Fine-tuning extractive question answering");
        void Log(string message) => channel.Info(message);

        QaRows.CheckTrainingColumns(input.Schema, _options, "training data");
        var train = QaRows.ReadTraining(input, _options, "training data");
        if (train.Count == 0)
            throw new InvalidOperationException($"The training data is empty: no questions to fine-tune on (columns '{_options.ContextColumnName}', '{_options.QuestionColumnName}').");
        List<QaRows.Row>? validation = null;
        if (_options.ValidationSet is { } validationSet)
        {
            QaRows.CheckTrainingColumns(validationSet.Schema, _options, "validation data");
            validation = QaRows.ReadTraining(validationSet, _options, "validation data");
            if (validation.Count == 0) throw new InvalidOperationException("The validation data is empty.");
        }
        bool versionTwo = QaPostProcessor.ResolveVersionTwo(_options.VersionTwoWithNegative, train.Select(r => r.Example));

        var baseFolder = _options.BaseModel ?? DefaultModels.MiniLM();
        var internals = _env as IHostEnvironmentInternal;
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? false);
        var baseDType = PrecisionChoice.BaseDType(_options.Precision, device);
        int seed = _options.Seed ?? internals?.Seed ?? 42;
        manual_seed(seed); // the new span head's initialisation and the adapters' start are reproducible

        var adapted = AdaptedModel.CreateForTraining(baseFolder, config => ModelFactory.CreateQuestionAnswering(WithDropout(config, _options.Dropout)),
            MethodConfigs.ToPeftConfig(_method, PeftTaskType.QuestionAnswering, baseFolder), baseDType, device, Log);
        var answerer = new QuestionAnswererModel(adapted, QaFeaturizer.FromOptions(adapted.Tokenizer, _options),
            QaPostProcessor.FromOptions(_options, versionTwo));

        // run_qa.py trains on every window: those holding the whole answer learn its span, the others learn [CLS].
        var clock = Stopwatch.StartNew();
        var windows = new List<QaFeature>();
        foreach (var (row, index) in train.Select((r, i) => (r, i)))
        {
            try { windows.AddRange(answerer.Featurizer.Featurize(row.Example, index)); }
            catch (ArgumentException e) { throw new InvalidDataException($"Training row {index}: {e.Message.Split(" (Parameter")[0]}", e); }
        }
        int answered = windows.Count(w => w.ContainsAnswer);
        Log($"{train.Count} training questions ({train.Count(r => !r.Example.HasAnswer)} without an answer; SQuAD {(versionTwo ? "v2.0" : "v1.1")} rules) -> " +
            $"{windows.Count} windows of at most {_options.MaxSequenceLength} tokens, stride {_options.DocStride} ({answered} hold their answer, " +
            $"{windows.Count - answered} are labelled [CLS]; mean length {windows.Average(w => w.Length):F0}), featurized in {clock.Elapsed.TotalSeconds:F1} s; " +
            $"base {baseFolder}; device {device}; base dtype {baseDType}");

        Tensor Loss(IReadOnlyList<int> batch) => answerer.Loss(batch.Select(i => windows[i]).ToList());
        Func<EvaluationResult>? evaluate = validation is null ? null : () => Evaluate(answerer, validation, _options.ScoringBatchSize);

        var result = adapted.Train(_options, _method, seed, windows.Count, windows.Select(w => w.Length).ToList(), Loss, evaluate, Log);
        LastTrainingHistory = result.History;
        Log($"Training ended: {result.StopReason} after {result.StepsCompleted} of {result.TotalSteps} steps" +
            (result.BestEvaluation is { } best ? $"; best {best.MetricName} {best.Value:F2} at step {result.BestStep}" : ""));

        return new QuestionAnsweringTransformer(answerer, QuestionAnsweringTransformer.Settings.From(_options, versionTwo), result.History);
    }

    /// <summary>SQuAD F1 (and exact match) of the post-processed answers on the validation rows.</summary>
    internal static EvaluationResult Evaluate(QuestionAnswererModel answerer, IReadOnlyList<QaRows.Row> validation, int batchSize)
    {
        var predictions = answerer.Predict(validation.Select(r => r.Example).ToList(), batchSize);
        var answers = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < validation.Count; i++) answers[validation[i].Example.Id] = predictions[i].Answer;
        var metrics = SquadEvaluator.Evaluate(validation.Select(r => r.Gold).ToList(), answers);
        var others = new Dictionary<string, double> { ["exact_match"] = metrics.ExactMatch };
        if (metrics.HasAnsF1 is { } hasF1) others["has_ans_f1"] = hasF1;
        if (metrics.NoAnsF1 is { } noF1) others["no_ans_f1"] = noF1;
        return new EvaluationResult("f1", metrics.F1, HigherIsBetter: true) { OtherMetrics = others };
    }

    /// <summary>Dropout keys of the encoder families' configs (BERT and RoBERTa; DistilBERT).</summary>
    private static readonly string[] DropoutKeys = ["hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "qa_dropout"];

    /// <summary>The config with every dropout probability it names set to <paramref name="dropout"/> (unchanged when null).
    /// Only the training model is built from it; model.zip keeps the checkpoint's config.</summary>
    private static HfConfig WithDropout(HfConfig config, double? dropout)
    {
        if (dropout is not { } p) return config;
        var json = JsonNode.Parse(config.ToString())!.AsObject();
        foreach (var key in DropoutKeys)
            if (json.ContainsKey(key)) json[key] = p;
        return HfConfig.Parse(json.ToJsonString(), config.Path);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var (name, role) in new[] { (_options.ContextColumnName, "context"), (_options.QuestionColumnName, "question") })
        {
            if (!columns.TryGetValue(name, out var column))
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Could not find {role} column '{name}'.");
            if (column.ItemType is not TextDataViewType || column.Kind != SchemaShape.Column.VectorKind.Scalar)
                throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Schema mismatch for {role} column '{name}': expected String (text), got {column.ItemType}.");
        }
        SchemaShape.Column Scalar(string name, PrimitiveDataViewType type) => new(name, SchemaShape.Column.VectorKind.Scalar, type, false);
        columns[_options.PredictedAnswerColumnName] = Scalar(_options.PredictedAnswerColumnName, TextDataViewType.Instance);
        columns[_options.PredictedAnswerStartColumnName] = Scalar(_options.PredictedAnswerStartColumnName, NumberDataViewType.Int32);
        columns[_options.ScoreColumnName] = Scalar(_options.ScoreColumnName, NumberDataViewType.Single);
        // Whether the model is v2.0 depends on the training rows when VersionTwoWithNegative is null; the schema
        // promises NoAnswerScore only when the options say so.
        if (_options.VersionTwoWithNegative == true)
            columns[_options.NoAnswerScoreColumnName] = Scalar(_options.NoAnswerScoreColumnName, NumberDataViewType.Single);
        return new SchemaShape(columns.Values);
    }

    private static void CheckOptions(QuestionAnsweringOptions o)
    {
        static void Positive(int value, string name) { if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"{name} must be at least 1."); }
        Positive(o.Epochs, nameof(o.Epochs));
        Positive(o.BatchSize, nameof(o.BatchSize));
        Positive(o.GradientAccumulationSteps, nameof(o.GradientAccumulationSteps));
        Positive(o.ScoringBatchSize, nameof(o.ScoringBatchSize));
        Positive(o.NBest, nameof(o.NBest));
        Positive(o.MaxAnswerLength, nameof(o.MaxAnswerLength));
        if (o.MaxSequenceLength < 16) throw new ArgumentOutOfRangeException(nameof(o.MaxSequenceLength), o.MaxSequenceLength, "MaxSequenceLength must be at least 16 (question, context and special tokens share it).");
        if (o.DocStride < 0 || o.DocStride >= o.MaxSequenceLength)
            throw new ArgumentOutOfRangeException(nameof(o.DocStride), o.DocStride, $"DocStride must be in [0, MaxSequenceLength = {o.MaxSequenceLength}); run_qa.py uses 128 with 384.");
        if (o.LearningRate is <= 0) throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, "LearningRate must be positive.");
        if (o.WarmupRatio is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(o.WarmupRatio), o.WarmupRatio, "WarmupRatio must be in [0, 1].");
        if (o.Dropout is { } dropout && !(dropout >= 0 && dropout < 1)) throw new ArgumentOutOfRangeException(nameof(o.Dropout), o.Dropout, "Dropout must be in [0, 1), or null to keep the base model's.");
        if (double.IsNaN(o.NullScoreDifferenceThreshold)) throw new ArgumentOutOfRangeException(nameof(o.NullScoreDifferenceThreshold), "NullScoreDifferenceThreshold must be a number.");
        foreach (var (name, value) in new[] { (nameof(o.ContextColumnName), o.ContextColumnName), (nameof(o.QuestionColumnName), o.QuestionColumnName),
            (nameof(o.PredictedAnswerColumnName), o.PredictedAnswerColumnName), (nameof(o.PredictedAnswerStartColumnName), o.PredictedAnswerStartColumnName),
            (nameof(o.ScoreColumnName), o.ScoreColumnName), (nameof(o.NoAnswerScoreColumnName), o.NoAnswerScoreColumnName) })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} must name a column.", name);
        if (o.BaseModel is { } folder && !Directory.Exists(folder))
            throw new DirectoryNotFoundException($"BaseModel folder not found: {folder}. Give a Hugging Face model folder (config.json, model.safetensors, tokenizer files), or null for the default MiniLM.");
    }
}
