using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>
/// Fine-tunes a pretrained causal language model (GPT-2, Llama, Mistral, Qwen2 families) on text, prompt/completion
/// pairs or conversations with a parameter-efficient method. <see cref="Fit"/> returns a <see cref="CausalLMTransformer"/>.
/// </summary>
/// <remarks>
/// The loss is transformers' causal LM loss over the target tokens (every token of text and conversations, completion
/// tokens of prompt/completion rows), averaged over all target tokens of an optimizer step, accumulation included.
/// With a validation set, the validation metric is the mean token loss (lower is better; perplexity and token
/// accuracy are logged beside it). Columns: see <see cref="CausalLMOptions"/> and <see cref="CausalLMTransformer"/>.
/// </remarks>
public sealed class CausalLMEstimator : FineTuningEstimator<CausalLMOptions, CausalLMTransformer>
{
    internal CausalLMEstimator(IHostEnvironment env, CausalLMOptions options, MethodOptions method)
        : base(env, nameof(CausalLMEstimator), "Fine-tuning a causal language model", options, method)
    {
        _ = options.Format;   // exactly one data format, or a named error
        if (options.BaseModel is null)
            throw new ArgumentNullException(nameof(options.BaseModel),
                "CausalLMOptions.BaseModel is required: the folder of a causal language model (config.json, weights, tokenizer files), e.g. a Llama, Mistral, Qwen2 or GPT-2 checkpoint.");
        if (options.MaxSequenceLength < 2) throw new ArgumentOutOfRangeException(nameof(options.MaxSequenceLength), options.MaxSequenceLength, "MaxSequenceLength must be at least 2.");
        if (string.IsNullOrEmpty(options.GeneratedTextColumnName)) throw new ArgumentException("GeneratedTextColumnName is empty.", nameof(options.GeneratedTextColumnName));
        if (string.IsNullOrEmpty(options.GeneratedTokenCountColumnName)) throw new ArgumentException("GeneratedTokenCountColumnName is empty.", nameof(options.GeneratedTokenCountColumnName));
        ArgumentNullException.ThrowIfNull(options.Generation, nameof(options.Generation));
        options.Generation.Validate();
        CheckCausalFolder(options.BaseModel);
    }

    /// <summary>A base folder whose config names an encoder (BERT, RoBERTa, DistilBERT) cannot be a causal LM: say so
    /// before any row is read.</summary>
    private static void CheckCausalFolder(string folder)
    {
        var type = ModelRegistry.ResolveModelType(Checkpoints.HfConfig.Load(folder));
        if (!ModelFactory.SupportedCausalModelTypes.Contains(type))
            throw new NotSupportedException(
                $"BaseModel folder {folder} holds a '{type}' model, which is not a causal language model: " +
                $"the causal LM task needs one of {string.Join(", ", ModelFactory.SupportedCausalModelTypes)}. " +
                "Encoders (BERT, RoBERTa, DistilBERT) fine-tune with TextClassificationOptions or QuestionAnsweringOptions.");
    }

    /// <inheritdoc/>
    public override CausalLMTransformer Fit(IDataView input)
    {
        using var channel = StartChannel();
        var columns = CausalLMColumns.From(Options);
        columns.Check(input.Schema, "training data");
        if (Options.ValidationSet is { } validationSet) columns.Check(validationSet.Schema, "validation data");

        var run = StartRun(channel);
        var adapted = CreateModel(run, ModelFactory.CreateCausalLM, PeftTaskType.CausalLM);
        var model = new CausalLMModel(adapted, Options.Format, Options.MaxSequenceLength, Options.AppendEos);

        var rows = columns.Read(input, model.Featurizer, "training data");
        if (rows.Count == 0)
            throw new InvalidOperationException($"The training data is empty: no rows to fine-tune on (columns {string.Join(", ", columns.Required.Select(c => $"'{c.Name}'"))}).");
        var train = Options.Packing ? CausalLMFeaturizer.Pack(rows, Options.MaxSequenceLength) : rows;
        if (CausalLMLoss.CountTargets(train) == 0)
            throw new InvalidOperationException("No training row has a token to learn from after truncation: raise MaxSequenceLength.");
        List<CausalLMExample>? validation = null;
        if (Options.ValidationSet is { } validSet)
        {
            validation = columns.Read(validSet, model.Featurizer, "validation data");
            if (CausalLMLoss.CountTargets(validation) == 0) throw new InvalidOperationException("The validation data has no target tokens (is it empty?).");
        }
        run.Log($"{rows.Count} training rows ({Options.Format}) -> {train.Count} examples, {train.Sum(e => (long)e.InputIds.Length)} tokens, " +
            $"{CausalLMLoss.CountTargets(train)} target tokens; base {run.BaseFolder}; device {run.Device}; base dtype {run.BaseDType}");

        Tensor Loss(IReadOnlyList<int> batch) => model.Loss(batch.Select(i => train[i]).ToList());
        long CountTargets(IReadOnlyList<int> batch) => batch.Sum(i => (long)train[i].TargetCount);
        Func<EvaluationResult>? evaluate = validation is null ? null : () =>
        {
            var m = CausalLMEvaluation.Evaluate(model.Model, validation, Options.ScoringBatchSize, model.PadTokenId);
            return new EvaluationResult("loss", m.MeanTokenLoss, HigherIsBetter: false)
            {
                OtherMetrics = new Dictionary<string, double> { ["perplexity"] = m.Perplexity, ["token_accuracy"] = m.TokenAccuracy },
            };
        };
        var taskSettings = JsonSerializer.Serialize(new
        {
            format = Options.Format.ToString(), text = Options.TextColumnName, prompt = Options.PromptColumnName, completion = Options.CompletionColumnName,
            messages = Options.MessagesColumnName, max_sequence_length = Options.MaxSequenceLength, packing = Options.Packing, append_eos = Options.AppendEos,
        });
        string Describe(IReadOnlyList<int> batch) => Options.Packing ? $"packed training examples {string.Join(", ", batch.Distinct().Order())}" : DescribeTrainingRows(batch);
        var result = Train(run, adapted, train.Select(e => e.InputIds.Length).ToList(), Loss, evaluate, taskSettings, Describe, CountTargets);
        return new CausalLMTransformer(model, CausalLMTransformer.Settings.From(Options), result.History);
    }

    /// <summary>
    /// The base model as it is, untrained, behind a <see cref="CausalLMTransformer"/>: to generate or evaluate before
    /// fine-tuning. A fresh rank-1 LoRA (B = 0 adds exactly nothing) keeps the base in the dtype training would hold
    /// it in (<see cref="FineTuneOptions.Precision"/>), so before/after numbers compare like with like.
    /// </summary>
    internal CausalLMTransformer Pretrained()
    {
        using var channel = StartChannel();
        var run = StartRun(channel);
        var method = new LoraOptions { Rank = 1, Dropout = 0, TaskType = PeftTaskType.CausalLM, BaseModelNameOrPath = run.BaseFolder };
        var adapted = AdaptedModel.CreateForTraining(run.BaseFolder, ModelFactory.CreateCausalLM, method, run.BaseDType, run.Device, run.Log);
        var model = new CausalLMModel(adapted, Options.Format, Options.MaxSequenceLength, Options.AppendEos);
        return new CausalLMTransformer(model, CausalLMTransformer.Settings.From(Options), history: null);
    }

    /// <inheritdoc/>
    public override SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var (name, role) in CausalLMColumns.From(Options).Required) ColumnChecks.RequireTextShape(columns, name, role);
        columns[Options.GeneratedTextColumnName] = new SchemaShape.Column(Options.GeneratedTextColumnName, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, false);
        columns[Options.GeneratedTokenCountColumnName] = new SchemaShape.Column(Options.GeneratedTokenCountColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Int32, false);
        return new SchemaShape(columns.Values);
    }
}
