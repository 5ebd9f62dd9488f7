using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Builds the model a Hugging Face config describes (family chosen by <c>model_type</c>, else by <c>architectures</c>,
/// through <see cref="ModelRegistry"/>) and loads a folder's weights into it, returning the missing/unexpected-key report.
/// </summary>
internal static class ModelFactory
{
    /// <summary>The <c>model_type</c> values supported for causal language modelling.</summary>
    public static IReadOnlyList<string> SupportedCausalModelTypes { get; } = ModelRegistry.ModelTypes(ModelKind.CausalLanguageModel);

    /// <summary>The <c>model_type</c> values supported by the encoder tasks (backbone, classification, QA).</summary>
    public static IReadOnlyList<string> SupportedEncoderModelTypes { get; } = ModelRegistry.ModelTypes(ModelKind.Encoder);

    /// <summary>The config's <c>model_type</c>, or the one its <c>architectures</c> names (e.g. "BertForMaskedLM" -> "bert").</summary>
    /// <exception cref="InvalidDataException">Neither key identifies a family.</exception>
    public static string ResolveModelType(HfConfig config) => ModelRegistry.ResolveModelType(config);

    /// <summary>A backbone without head (BertModel, RobertaModel, DistilBertModel), randomly initialised.</summary>
    /// <exception cref="NotSupportedException">The model_type has no backbone here; the message lists those supported.</exception>
    public static EncoderModel CreateBaseModel(HfConfig config) => Pick(config, f => f.Backbone, "a base encoder")(config);

    /// <summary>A sequence classifier (e.g. BertForSequenceClassification) with <paramref name="numLabels"/> outputs,
    /// randomly initialised as transformers does.</summary>
    /// <exception cref="NotSupportedException">The model_type has no classifier here; the message lists those supported.</exception>
    public static SequenceClassificationModel CreateSequenceClassification(HfConfig config, int numLabels) =>
        Pick(config, f => f.SequenceClassifier, "sequence classification")(config, numLabels);

    /// <summary>An extractive question-answering model (e.g. BertForQuestionAnswering), randomly initialised.</summary>
    /// <exception cref="NotSupportedException">The model_type has no QA model here; the message lists those supported.</exception>
    public static QuestionAnsweringModel CreateQuestionAnswering(HfConfig config) =>
        Pick(config, f => f.QuestionAnswerer, "question answering")(config);

    /// <summary>A randomly initialised causal language model for a config (float32, CPU).</summary>
    /// <exception cref="NotSupportedException">The config's model_type is not one of <see cref="SupportedCausalModelTypes"/>
    /// (an encoder's is named as such).</exception>
    public static CausalLanguageModel CreateCausalLM(HfConfig config)
    {
        TorchRuntime.EnsureLoaded();
        return Pick(config, f => f.CausalLM, "causal language modelling")(config);
    }

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

    /// <summary>Loads a Hugging Face folder (config.json + safetensors) into a causal LM in evaluation mode.</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">Parameter dtype (float32 when null); bfloat16 halves memory and is faster on recent CPUs.</param>
    /// <param name="device">Target device (CPU when null).</param>
    /// <exception cref="InvalidDataException">The checkpoint lacks weights the model needs (names them).</exception>
    public static CausalLanguageModel FromPretrainedCausalLM(string folder, ScalarType? dtype = null, Device? device = null) =>
        FromPretrainedCausalLM(folder, dtype, device, out _);

    /// <summary>As <see cref="FromPretrainedCausalLM(string, ScalarType?, Device?)"/>, also reporting what was loaded and
    /// which checkpoint keys were ignored (e.g. GPT-2's stored causal-mask buffers <c>h.N.attn.bias</c>).</summary>
    public static CausalLanguageModel FromPretrainedCausalLM(string folder, ScalarType? dtype, Device? device, out WeightLoadReport report)
    {
        var model = CreateCausalLM(HfConfig.Load(folder));
        try
        {
            report = LoadPretrained(model, folder, dtype ?? ScalarType.Float32, device);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        if (report.MissingWeightsError(folder, model.ModelType, [], "Is tie_word_embeddings right in config.json?") is { } missing)
        {
            model.Dispose();
            throw missing;
        }
        return model;
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

    /// <summary>The family's builder for one task, or an error in the user's terms: the wrong kind of model for the task
    /// (a causal folder given to an encoder task, or the reverse), or an unknown model_type; both list what is supported.</summary>
    private static TBuilder Pick<TBuilder>(HfConfig config, Func<ModelFamily, TBuilder?> builder, string task) where TBuilder : class
    {
        var type = ResolveModelType(config);
        var family = ModelRegistry.Families.FirstOrDefault(f => f.ModelType == type);
        if (family is not null && builder(family) is { } build) return build;
        var supported = ModelRegistry.Families.Where(f => builder(f) is not null).Select(f => f.ModelType).Order(StringComparer.Ordinal);
        var wanted = supported.Select(t => ModelRegistry.Get(t).Kind).First() == ModelKind.Encoder ? "an encoder" : "a causal language model";
        throw family is null
            ? new NotSupportedException(
                $"{config.Path}: model_type \"{type}\" is not supported for {task}; supported: {string.Join(", ", supported)} " +
                $"(a new family is a row for '{type}' in ModelRegistry).")
            : new NotSupportedException(
                $"{config.Path}: model_type '{type}' is {(family.Kind == ModelKind.Encoder ? "an encoder" : "a causal language model")}; " +
                $"{task} needs {wanted}: {string.Join(", ", supported)}.");
    }
}
