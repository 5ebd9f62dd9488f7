using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
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
public sealed class QuestionAnsweringEstimator : FineTuningEstimator<QuestionAnsweringOptions, QuestionAnsweringTransformer>
{
    internal QuestionAnsweringEstimator(IHostEnvironment env, QuestionAnsweringOptions options, MethodOptions method)
        : base(env, nameof(QuestionAnsweringEstimator), "Fine-tuning extractive question answering", options, method)
    {
        CheckTaskOptions(options);
    }

    /// <inheritdoc/>
    public override QuestionAnsweringTransformer Fit(IDataView input)
    {
        using var channel = StartChannel();

        QaRows.CheckTrainingColumns(input.Schema, Options, "training data");
        var train = QaRows.ReadTraining(input, Options, "training data");
        if (train.Count == 0)
            throw new InvalidOperationException($"The training data is empty: no questions to fine-tune on (columns '{Options.ContextColumnName}', '{Options.QuestionColumnName}').");
        List<QaRows.Row>? validation = null;
        if (Options.ValidationSet is { } validationSet)
        {
            QaRows.CheckTrainingColumns(validationSet.Schema, Options, "validation data");
            validation = QaRows.ReadTraining(validationSet, Options, "validation data");
            if (validation.Count == 0) throw new InvalidOperationException("The validation data is empty.");
        }
        bool versionTwo = QaPostProcessor.ResolveVersionTwo(Options.VersionTwoWithNegative, train.Select(r => r.Example));
        if (!versionTwo && train.FindIndex(r => !r.Example.HasAnswer) is var first and >= 0)
            throw new InvalidDataException(
                $"VersionTwoWithNegative is false (SQuAD v1.1: every question has an answer), but {train.Count(r => !r.Example.HasAnswer)} of the " +
                $"{train.Count} training questions have none (first: row {first}, question '{train[first].Example.Id}'). Set VersionTwoWithNegative " +
                "to true (or null to decide from the data) to train SQuAD v2.0's no-answer prediction, or remove those rows.");

        var run = StartRun(channel);
        var adapted = CreateModel(run, ModelFactory.CreateQuestionAnswering, PeftTaskType.QuestionAnswering);
        var answerer = new QuestionAnswererModel(adapted, QaFeaturizer.FromOptions(adapted.Tokenizer, Options),
            QaPostProcessor.FromOptions(Options, versionTwo));

        // run_qa.py trains on every window: those holding the whole answer learn its span, the others learn [CLS].
        var clock = Stopwatch.StartNew();
        var windows = new List<QaFeature>();
        foreach (var (row, index) in train.Select((r, i) => (r, i)))
        {
            try { windows.AddRange(answerer.Featurizer.Featurize(row.Example, index)); }
            catch (ArgumentException e) { throw new InvalidDataException($"Training row {index}: {e.Message.Split(" (Parameter")[0]}", e); }
        }
        int answered = windows.Count(w => w.ContainsAnswer);
        run.Log($"{train.Count} training questions ({train.Count(r => !r.Example.HasAnswer)} without an answer; SQuAD {(versionTwo ? "v2.0" : "v1.1")} rules) -> " +
            $"{windows.Count} windows of at most {Options.MaxSequenceLength} tokens, stride {Options.DocStride} ({answered} hold their answer, " +
            $"{windows.Count - answered} are labelled [CLS]; mean length {windows.Average(w => w.Length):F0}), featurized in {clock.Elapsed.TotalSeconds:F1} s; " +
            $"base {run.BaseFolder}; device {run.Device}; base dtype {run.BaseDType}");

        Tensor Loss(IReadOnlyList<int> batch) => answerer.Loss(batch.Select(i => windows[i]).ToList());
        Func<EvaluationResult>? evaluate = validation is null ? null : () => Evaluate(answerer, validation, Options.ScoringBatchSize);

        var taskSettings = JsonSerializer.Serialize(new
        {
            max_sequence_length = Options.MaxSequenceLength, doc_stride = Options.DocStride,
            context_windowing = Options.ContextWindowing.ToString(), squad_v2 = versionTwo,
        });
        // Examples are windows; train[i] is row i of the training data (every row is read, in order).
        var result = Train(run, adapted, windows.Select(w => w.Length).ToList(), Loss, evaluate, taskSettings,
            batch => DescribeTrainingRows(batch.Select(i => windows[i].ExampleIndex), row => $"question '{train[row].Example.Id}'"));
        return new QuestionAnsweringTransformer(answerer, QuestionAnsweringTransformer.Settings.From(Options, versionTwo), result.History);
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

    /// <summary>
    /// The input columns plus Answer, AnswerStart and Score (named by the options), and NoAnswerScore exactly when
    /// <see cref="QuestionAnsweringOptions.VersionTwoWithNegative"/> is true.
    /// </summary>
    /// <remarks>
    /// With <see cref="QuestionAnsweringOptions.VersionTwoWithNegative"/> null (the default), whether the model is a
    /// SQuAD v2.0 model is decided by the training rows (v2.0 when any question has no answer), which a schema shape
    /// cannot show: this schema then leaves NoAnswerScore out, and the fitted transformer adds it when the training
    /// data had an unanswerable question. Set the option to true (or false) for a schema that states it either way.
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The context or question column is missing or not text.</exception>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        ColumnChecks.RequireTextShape(columns, Options.ContextColumnName, "context");
        ColumnChecks.RequireTextShape(columns, Options.QuestionColumnName, "question");
        SchemaShape.Column Scalar(string name, PrimitiveDataViewType type) => new(name, SchemaShape.Column.VectorKind.Scalar, type, false);
        columns[Options.PredictedAnswerColumnName] = Scalar(Options.PredictedAnswerColumnName, TextDataViewType.Instance);
        columns[Options.PredictedAnswerStartColumnName] = Scalar(Options.PredictedAnswerStartColumnName, NumberDataViewType.Int32);
        columns[Options.ScoreColumnName] = Scalar(Options.ScoreColumnName, NumberDataViewType.Single);
        // Whether the model is v2.0 depends on the training rows when VersionTwoWithNegative is null; the schema
        // promises NoAnswerScore only when the options say so.
        if (Options.VersionTwoWithNegative == true)
            columns[Options.NoAnswerScoreColumnName] = Scalar(Options.NoAnswerScoreColumnName, NumberDataViewType.Single);
        return new SchemaShape(columns.Values);
    }

    /// <summary>The question-answering settings (the shared ones are checked by the base class).</summary>
    private static void CheckTaskOptions(QuestionAnsweringOptions o)
    {
        RequirePositive(o.NBest, nameof(o.NBest));
        RequirePositive(o.MaxAnswerLength, nameof(o.MaxAnswerLength));
        if (o.MaxSequenceLength < 16) throw new ArgumentOutOfRangeException(nameof(o.MaxSequenceLength), o.MaxSequenceLength, "MaxSequenceLength must be at least 16 (question, context and special tokens share it).");
        if (o.DocStride < 0 || o.DocStride >= o.MaxSequenceLength)
            throw new ArgumentOutOfRangeException(nameof(o.DocStride), o.DocStride, $"DocStride must be in [0, MaxSequenceLength = {o.MaxSequenceLength}); run_qa.py uses 128 with 384.");
        if (double.IsNaN(o.NullScoreDifferenceThreshold)) throw new ArgumentOutOfRangeException(nameof(o.NullScoreDifferenceThreshold), "NullScoreDifferenceThreshold must be a number.");
        foreach (var (name, value) in new[] { (nameof(o.ContextColumnName), o.ContextColumnName), (nameof(o.QuestionColumnName), o.QuestionColumnName),
            (nameof(o.PredictedAnswerColumnName), o.PredictedAnswerColumnName), (nameof(o.PredictedAnswerStartColumnName), o.PredictedAnswerStartColumnName),
            (nameof(o.ScoreColumnName), o.ScoreColumnName), (nameof(o.NoAnswerScoreColumnName), o.NoAnswerScoreColumnName) })
            if (string.IsNullOrWhiteSpace(value)) throw new ArgumentException($"{name} must name a column.", name);
    }
}
