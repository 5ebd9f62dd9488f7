using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>
/// Fine-tunes a pretrained encoder (BERT, RoBERTa, DistilBERT families) for text classification with a
/// parameter-efficient method. <see cref="Fit"/> returns a <see cref="TextClassificationTransformer"/>.
/// </summary>
/// <remarks>
/// Input columns: the text column (String), optionally a text-pair column (String), the label column (Boolean for
/// binary; String or key for multiclass). Output columns: see <see cref="TextClassificationTransformer"/>.
/// </remarks>
public sealed class TextClassificationEstimator : FineTuningEstimator<TextClassificationOptions, TextClassificationTransformer>
{
    internal TextClassificationEstimator(IHostEnvironment env, TextClassificationOptions options, MethodOptions method)
        : base(env, nameof(TextClassificationEstimator), "Fine-tuning a text classifier", options, method)
    {
        if (options.MaxSequenceLength < 8) throw new ArgumentOutOfRangeException(nameof(options.MaxSequenceLength), options.MaxSequenceLength, "MaxSequenceLength must be at least 8.");
    }

    /// <inheritdoc/>
    public override TextClassificationTransformer Fit(IDataView input)
    {
        using var channel = StartChannel();

        CheckInputColumns(input.Schema);
        var labels = ClassLabels.FromTrainingData(input, Options.LabelColumnName);
        var train = ReadExamples(input, labels, "training data");
        if (train.Count == 0)
            throw new InvalidOperationException($"The training data is empty: no rows to fine-tune on (columns '{Options.TextColumnName}', '{Options.LabelColumnName}').");
        labels.RequireTwoClassesSeen(train.Select(e => e.Label), Options.LabelColumnName);
        List<(TextInput Input, int Label)>? validation = null;
        if (Options.ValidationSet is { } validationSet)
        {
            CheckInputColumns(validationSet.Schema, "validation data");
            validation = ReadExamples(validationSet, labels, "validation data");
            if (validation.Count == 0) throw new InvalidOperationException("The validation data is empty.");
        }

        var run = StartRun(channel);
        run.Log($"{train.Count} training rows, {labels.Count} classes ({string.Join(", ", labels.Names.Take(10))}); base {run.BaseFolder}; device {run.Device}; base dtype {run.BaseDType}");
        if (Options.InitialAdapter is { } initialAdapter) AdapterLabels.CheckSameLabels(initialAdapter, labels, Options.LabelColumnName);
        var adapted = CreateModel(run, config =>
        {
            var model = ModelFactory.CreateSequenceClassification(config, labels.Count);
            // Before the adapter loads: its head's shape is the only record of the classes of an adapter saved by PEFT.
            if (Options.InitialAdapter is { } adapter) AdapterLabels.CheckClassCount(model, adapter, labels, Options.LabelColumnName);
            return model;
        }, PeftTaskType.SequenceClassification);
        var classifier = new TextClassifierModel(adapted, labels, Options.MaxSequenceLength);

        var encoded = train.Select(e => classifier.Encode(e.Input)).ToList();
        var targets = train.Select(e => (long)e.Label).ToArray();
        Tensor Loss(IReadOnlyList<int> batch)
        {
            var logits = classifier.Logits(batch.Select(i => encoded[i]).ToList()); // (B, C) float32
            using var target = tensor(batch.Select(i => targets[i]).ToArray(), device: run.Device);
            return nn.functional.cross_entropy(logits, target);
        }
        Func<EvaluationResult>? evaluate = validation is null ? null : () =>
        {
            var probabilities = classifier.Predict(validation.Select(v => v.Input).ToList(), Options.ScoringBatchSize);
            int correct = probabilities.Select((p, i) => Array.IndexOf(p, p.Max()) == validation[i].Label ? 1 : 0).Sum();
            return new EvaluationResult("accuracy", (double)correct / validation.Count, HigherIsBetter: true);
        };

        var taskSettings = JsonSerializer.Serialize(new { labels = labels.Names, max_sequence_length = Options.MaxSequenceLength, text_pair = Options.TextPairColumnName is not null });
        // Example i is row i of the training data: every row becomes one example, in order.
        var result = Train(run, adapted, encoded.Select(e => e.Ids.Length).ToList(), Loss, evaluate, taskSettings, batch => DescribeTrainingRows(batch));
        var settings = new TextClassificationTransformer.Settings(Options.TextColumnName, Options.TextPairColumnName,
            Options.ScoreColumnName, Options.PredictedLabelColumnName, labels.Kind, labels.Names.ToArray(),
            Options.MaxSequenceLength, Options.ScoringBatchSize, Options.BaseModelStorage);
        return new TextClassificationTransformer(classifier, settings, result.History);
    }

    /// <inheritdoc/>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        ColumnChecks.RequireTextShape(columns, Options.TextColumnName, "text");
        if (Options.TextPairColumnName is { } pair) ColumnChecks.RequireTextShape(columns, pair, "text pair");
        if (!columns.TryGetValue(Options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Could not find label column '{Options.LabelColumnName}'.");
        if (label.ItemType is BooleanDataViewType)
        {
            columns[Options.ScoreColumnName] = new SchemaShape.Column(Options.ScoreColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
            columns["Probability"] = new SchemaShape.Column("Probability", SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
            columns[Options.PredictedLabelColumnName] = new SchemaShape.Column(Options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar, BooleanDataViewType.Instance, false);
        }
        else
        {
            // Slot names on Score and key values on PredictedLabel: the labels, so MapKeyToValue can follow.
            SchemaShape TextAnnotation(string kind) => new([new SchemaShape.Column(kind, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false)]);
            columns[Options.ScoreColumnName] = new SchemaShape.Column(Options.ScoreColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, false, TextAnnotation("SlotNames"));
            columns[Options.PredictedLabelColumnName] = new SchemaShape.Column(Options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, true, TextAnnotation("KeyValues"));
        }
        return new SchemaShape(columns.Values);
    }

    private void CheckInputColumns(DataViewSchema schema, string what = "training data")
    {
        try
        {
            ColumnChecks.RequireText(schema, Options.TextColumnName, "text");
            if (Options.TextPairColumnName is { } pair) ColumnChecks.RequireText(schema, pair, "text pair");
            ColumnChecks.Require(schema, Options.LabelColumnName, "label");
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"In the {what}: {e.Message.Split(" (Parameter")[0]}");
        }
    }

    private List<(TextInput Input, int Label)> ReadExamples(IDataView data, ClassLabels labels, string what)
    {
        var schema = data.Schema;
        var columns = new List<DataViewSchema.Column> { schema[Options.TextColumnName], schema[Options.LabelColumnName] };
        if (Options.TextPairColumnName is { } pairName) columns.Add(schema[pairName]);
        var rows = new List<(TextInput, int)>();
        using var cursor = data.GetRowCursor(columns);
        var text = ColumnChecks.NonEmptyTextReader(cursor, schema[Options.TextColumnName], what);
        var pair = Options.TextPairColumnName is { } p ? ColumnChecks.NonEmptyTextReader(cursor, schema[p], what) : null;
        var label = labels.CreateReader(cursor, schema[Options.LabelColumnName], what);
        while (cursor.MoveNext()) rows.Add((new TextInput(text(), pair?.Invoke()), label()));
        return rows;
    }
}
