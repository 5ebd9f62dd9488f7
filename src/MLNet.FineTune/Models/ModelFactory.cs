using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Builds the model family a Hugging Face config describes (by <c>model_type</c>, else by <c>architectures</c>) and loads
/// a folder's weights into it, returning the missing/unexpected-key report. One table per task: a family adds a row.
/// </summary>
internal static class ModelFactory
{
    private static readonly Dictionary<string, Func<HfConfig, EncoderModel>> BaseModels = new()
    {
        ["bert"] = c => new BertModel(c),
        ["roberta"] = c => new RobertaModel(c),
        ["distilbert"] = c => new DistilBertModel(c),
    };

    private static readonly Dictionary<string, Func<HfConfig, int, SequenceClassificationModel>> SequenceClassifiers = new()
    {
        ["bert"] = (c, n) => new BertForSequenceClassification(c, n),
        ["roberta"] = (c, n) => new RobertaForSequenceClassification(c, n),
        ["distilbert"] = (c, n) => new DistilBertForSequenceClassification(c, n),
    };

    private static readonly Dictionary<string, Func<HfConfig, QuestionAnsweringModel>> QuestionAnswerers = new()
    {
        ["bert"] = c => new BertForQuestionAnswering(c),
        ["roberta"] = c => new RobertaForQuestionAnswering(c),
        ["distilbert"] = c => new DistilBertForQuestionAnswering(c),
    };

    /// <summary>For configs without <c>model_type</c>: the class-name prefix of <c>architectures[i]</c> -> model_type.</summary>
    private static readonly (string Prefix, string ModelType)[] ArchitecturePrefixes =
    [
        ("DistilBert", "distilbert"),
        ("Roberta", "roberta"),
        ("Bert", "bert"),
    ];

    /// <summary>The config's <c>model_type</c>, or the one its <c>architectures</c> names (e.g. "BertForMaskedLM" -> "bert").</summary>
    /// <exception cref="InvalidDataException">Neither key identifies a family.</exception>
    public static string ResolveModelType(HfConfig config)
    {
        if (config.ModelType != "") return config.ModelType;
        foreach (var architecture in config.Architectures)
            foreach (var (prefix, type) in ArchitecturePrefixes)
                if (architecture.StartsWith(prefix, StringComparison.Ordinal)) return type;
        throw new InvalidDataException(
            $"{config.Path} has no model_type and its architectures [{string.Join(", ", config.Architectures)}] name no known family.");
    }

    /// <summary>A backbone without head (BertModel, RobertaModel, DistilBertModel), randomly initialised.</summary>
    /// <exception cref="NotSupportedException">The model_type has no backbone here; the message lists those supported.</exception>
    public static EncoderModel CreateBaseModel(HfConfig config) => Pick(BaseModels, config, "a base encoder")(config);

    /// <summary>A sequence classifier (e.g. BertForSequenceClassification) with <paramref name="numLabels"/> outputs,
    /// randomly initialised as transformers does.</summary>
    /// <exception cref="NotSupportedException">The model_type has no classifier here; the message lists those supported.</exception>
    public static SequenceClassificationModel CreateSequenceClassification(HfConfig config, int numLabels) =>
        Pick(SequenceClassifiers, config, "sequence classification")(config, numLabels);

    /// <summary>An extractive question-answering model (e.g. BertForQuestionAnswering), randomly initialised.</summary>
    /// <exception cref="NotSupportedException">The model_type has no QA model here; the message lists those supported.</exception>
    public static QuestionAnsweringModel CreateQuestionAnswering(HfConfig config) =>
        Pick(QuestionAnswerers, config, "question answering")(config);

    /// <summary>Builds the backbone a folder's config.json describes and loads its weights (a task checkpoint's backbone too).</summary>
    public static (EncoderModel Model, WeightLoadReport Report) FromPretrainedBaseModel(
        string folder, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var model = CreateBaseModel(HfConfig.Load(folder));
        return (model, LoadPretrained(model, folder, dtype, device));
    }

    /// <summary>Builds a sequence classifier from a folder and loads its weights: from a base checkpoint the head is
    /// reported missing (newly initialised), from a classifier checkpoint everything loads.</summary>
    public static (SequenceClassificationModel Model, WeightLoadReport Report) FromPretrainedSequenceClassification(
        string folder, int numLabels, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var model = CreateSequenceClassification(HfConfig.Load(folder), numLabels);
        return (model, LoadPretrained(model, folder, dtype, device));
    }

    /// <summary>Builds a question-answering model from a folder and loads its weights (qa_outputs missing from a base checkpoint).</summary>
    public static (QuestionAnsweringModel Model, WeightLoadReport Report) FromPretrainedQuestionAnswering(
        string folder, ScalarType dtype = ScalarType.Float32, Device? device = null)
    {
        var model = CreateQuestionAnswering(HfConfig.Load(folder));
        return (model, LoadPretrained(model, folder, dtype, device));
    }

    /// <summary>
    /// Loads a folder's weights into <paramref name="model"/> as transformers' from_pretrained does: the model is cast to
    /// <paramref name="dtype"/>, checkpoint keys are matched with or without the model's base prefix, keys the checkpoint
    /// lacks keep their initialisation, and the model ends on <paramref name="device"/> in eval mode.
    /// </summary>
    /// <returns>Which keys were loaded, missing (newly initialised) and unexpected (ignored).</returns>
    public static WeightLoadReport LoadPretrained<TModel>(TModel model, string folder, ScalarType dtype = ScalarType.Float32, Device? device = null)
        where TModel : nn.Module, IPretrainedModel
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float64))
            throw new ArgumentException($"dtype must be a floating-point type (Float32, BFloat16, Float16, Float64), got {dtype}.", nameof(dtype));
        var checkpoint = HfCheckpoint.Load(folder, dtype);
        try
        {
            model.to(dtype);
            var report = WeightLoader.Load(model, checkpoint, model.BaseModelPrefix, folder);
            model.to(device ?? CPU);
            model.eval();
            return report;
        }
        finally
        {
            foreach (var tensor in checkpoint.Values) tensor.Dispose();
        }
    }

    private static TFactory Pick<TFactory>(Dictionary<string, TFactory> table, HfConfig config, string task)
    {
        var type = ResolveModelType(config);
        return table.TryGetValue(type, out var factory)
            ? factory
            : throw new NotSupportedException(
                $"{config.Path}: model_type \"{type}\" is not supported for {task}; supported: {string.Join(", ", table.Keys.Order(StringComparer.Ordinal))}.");
    }
}
