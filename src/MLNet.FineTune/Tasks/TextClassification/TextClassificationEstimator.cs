using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tasks.FineTuning;
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
public sealed class TextClassificationEstimator : IEstimator<TextClassificationTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly IHost _host;
    private readonly TextClassificationOptions _options;
    private readonly MethodOptions _method;

    internal TextClassificationEstimator(IHostEnvironment env, TextClassificationOptions options, MethodOptions method)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _host = env.Register(nameof(TextClassificationEstimator));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _method = method ?? throw new ArgumentNullException(nameof(method));
        CheckOptions(options);
    }

    /// <summary>The task options this estimator trains with.</summary>
    public TextClassificationOptions Options => _options;

    /// <summary>The method options (LoRA, DoRA, adapters, IA3 or full fine-tuning).</summary>
    public MethodOptions Method => _method;

    /// <summary>The history of the last <see cref="Fit"/> (also on the returned transformer).</summary>
    public TrainingHistory? LastTrainingHistory { get; private set; }

    /// <inheritdoc/>
    public TextClassificationTransformer Fit(IDataView input)
    {
        using var channel = _host.Start("Fine-tuning a text classifier");
        void Log(string message) => channel.Info(message);

        CheckInputColumns(input.Schema);
        var labels = ClassLabels.FromTrainingData(input, _options.LabelColumnName);
        var train = ReadExamples(input, labels, "training");
        if (train.Count == 0)
            throw new InvalidOperationException($"The training data is empty: no rows to fine-tune on (columns '{_options.TextColumnName}', '{_options.LabelColumnName}').");
        List<(TextInput Input, int Label)>? validation = null;
        if (_options.ValidationSet is { } validationSet)
        {
            CheckInputColumns(validationSet.Schema, "validation data");
            validation = ReadExamples(validationSet, labels, "validation");
            if (validation.Count == 0) throw new InvalidOperationException("The validation data is empty.");
        }

        var baseFolder = _options.BaseModel ?? DefaultModels.MiniLM();
        var internals = _env as IHostEnvironmentInternal;
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? false);
        var baseDType = PrecisionChoice.BaseDType(_options.Precision, device);
        int seed = _options.Seed ?? internals?.Seed ?? 42;
        manual_seed(seed); // the new head's initialisation and the adapters' start are reproducible
        Log($"{train.Count} training rows, {labels.Count} classes ({string.Join(", ", labels.Names.Take(10))}); base {baseFolder}; device {device}; base dtype {baseDType}");

        var adapted = AdaptedModel.CreateForTraining(baseFolder, config => ModelFactory.CreateSequenceClassification(config, labels.Count),
            MethodConfigs.ToPeftConfig(_method, PeftTaskType.SequenceClassification, baseFolder), baseDType, device, Log, _options.InitialAdapter);
        var classifier = new TextClassifierModel(adapted, labels, _options.MaxSequenceLength);

        var encoded = train.Select(e => classifier.Encode(e.Input)).ToList();
        var targets = train.Select(e => (long)e.Label).ToArray();
        Tensor Loss(IReadOnlyList<int> batch)
        {
            var logits = classifier.Logits(batch.Select(i => encoded[i]).ToList()); // (B, C) float32
            using var target = tensor(batch.Select(i => targets[i]).ToArray(), device: device);
            return nn.functional.cross_entropy(logits, target);
        }
        Func<EvaluationResult>? evaluate = validation is null ? null : () =>
        {
            var probabilities = classifier.Predict(validation.Select(v => v.Input).ToList(), _options.ScoringBatchSize);
            int correct = probabilities.Select((p, i) => Array.IndexOf(p, p.Max()) == validation[i].Label ? 1 : 0).Sum();
            return new EvaluationResult("accuracy", (double)correct / validation.Count, HigherIsBetter: true);
        };

        using var progress = new TrainingProgressChannel(_host, "Fine-tuning a text classifier", _options.Progress);
        var result = adapted.Train(_options, _method, seed, train.Count, encoded.Select(e => e.Ids.Length).ToList(), Loss, evaluate, Log, progress);
        LastTrainingHistory = result.History;
        Log($"Training ended: {result.StopReason} after {result.StepsCompleted} of {result.TotalSteps} steps" +
            (result.BestEvaluation is { } best ? $"; best {best.MetricName} {best.Value:F4} at step {result.BestStep}" : ""));

        var settings = new TextClassificationTransformer.Settings(_options.TextColumnName, _options.TextPairColumnName,
            _options.ScoreColumnName, _options.PredictedLabelColumnName, labels.Kind, labels.Names.ToArray(),
            _options.MaxSequenceLength, _options.ScoringBatchSize, _options.BaseModelStorage);
        return new TextClassificationTransformer(classifier, settings, result.History);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        CheckShape(columns, _options.TextColumnName, "text");
        if (_options.TextPairColumnName is { } pair) CheckShape(columns, pair, "text pair");
        if (!columns.TryGetValue(_options.LabelColumnName, out var label))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Could not find label column '{_options.LabelColumnName}'.");
        if (label.ItemType is BooleanDataViewType)
        {
            columns[_options.ScoreColumnName] = new SchemaShape.Column(_options.ScoreColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
            columns["Probability"] = new SchemaShape.Column("Probability", SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
            columns[_options.PredictedLabelColumnName] = new SchemaShape.Column(_options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar, BooleanDataViewType.Instance, false);
        }
        else
        {
            // Slot names on Score and key values on PredictedLabel: the labels, so MapKeyToValue can follow.
            SchemaShape TextAnnotation(string kind) => new([new SchemaShape.Column(kind, SchemaShape.Column.VectorKind.Vector, TextDataViewType.Instance, false)]);
            columns[_options.ScoreColumnName] = new SchemaShape.Column(_options.ScoreColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Single, false, TextAnnotation("SlotNames"));
            columns[_options.PredictedLabelColumnName] = new SchemaShape.Column(_options.PredictedLabelColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.UInt32, true, TextAnnotation("KeyValues"));
        }
        return new SchemaShape(columns.Values);
    }

    private static void CheckShape(Dictionary<string, SchemaShape.Column> columns, string name, string role)
    {
        if (!columns.TryGetValue(name, out var column))
            throw new ArgumentOutOfRangeException(nameof(columns), $"Could not find {role} column '{name}'.");
        if (column.ItemType is not TextDataViewType || column.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException(nameof(columns), $"Schema mismatch for {role} column '{name}': expected String (text), got {column.ItemType}.");
    }

    private void CheckInputColumns(DataViewSchema schema, string what = "training data")
    {
        try
        {
            ColumnChecks.RequireText(schema, _options.TextColumnName, "text");
            if (_options.TextPairColumnName is { } pair) ColumnChecks.RequireText(schema, pair, "text pair");
            ColumnChecks.Require(schema, _options.LabelColumnName, "label");
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"In the {what}: {e.Message.Split(" (Parameter")[0]}");
        }
    }

    private List<(TextInput Input, int Label)> ReadExamples(IDataView data, ClassLabels labels, string what)
    {
        var schema = data.Schema;
        var columns = new List<DataViewSchema.Column> { schema[_options.TextColumnName], schema[_options.LabelColumnName] };
        if (_options.TextPairColumnName is { } pairName) columns.Add(schema[pairName]);
        var rows = new List<(TextInput, int)>();
        using var cursor = data.GetRowCursor(columns);
        var text = ColumnChecks.TextReader(cursor, schema[_options.TextColumnName]);
        var pair = _options.TextPairColumnName is { } p ? ColumnChecks.TextReader(cursor, schema[p]) : null;
        var label = labels.CreateReader(cursor, schema[_options.LabelColumnName]);
        while (cursor.MoveNext())
        {
            var value = text();
            if (string.IsNullOrWhiteSpace(value))
                throw new InvalidDataException($"Row {cursor.Position} of the {what} has empty text in column '{_options.TextColumnName}'. Remove or fill empty rows (e.g. ml.Data.FilterByCustomPredicate).");
            rows.Add((new TextInput(value, pair?.Invoke()), label()));
        }
        return rows;
    }

    private static void CheckOptions(TextClassificationOptions o)
    {
        static void Positive(int value, string name) { if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"{name} must be at least 1."); }
        Positive(o.Epochs, nameof(o.Epochs));
        Positive(o.BatchSize, nameof(o.BatchSize));
        Positive(o.GradientAccumulationSteps, nameof(o.GradientAccumulationSteps));
        Positive(o.ScoringBatchSize, nameof(o.ScoringBatchSize));
        if (o.MaxSequenceLength < 8) throw new ArgumentOutOfRangeException(nameof(o.MaxSequenceLength), o.MaxSequenceLength, "MaxSequenceLength must be at least 8.");
        if (o.LearningRate is <= 0) throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, "LearningRate must be positive.");
        if (o.WarmupRatio is < 0 or > 1) throw new ArgumentOutOfRangeException(nameof(o.WarmupRatio), o.WarmupRatio, "WarmupRatio must be in [0, 1].");
        if (o.InitialAdapter is { } adapter && !File.Exists(Path.Combine(adapter, "adapter_config.json")))
            throw new FileNotFoundException($"InitialAdapter folder {adapter} has no adapter_config.json (expected a folder written by SaveAdapter or by PEFT's save_pretrained).");
        if (o.BaseModel is { } folder && !Directory.Exists(folder))
            throw new DirectoryNotFoundException($"BaseModel folder not found: {folder}. Give a Hugging Face model folder (config.json, model.safetensors, tokenizer files), or null for the default MiniLM.");
    }
}
