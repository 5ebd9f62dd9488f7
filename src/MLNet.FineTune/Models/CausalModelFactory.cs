using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>Builds causal language models from Hugging Face configs and folders, choosing the family by <c>model_type</c>.</summary>
internal static class CausalModelFactory
{
    /// <summary>The <c>model_type</c> values supported for causal language modelling.</summary>
    public static IReadOnlyList<string> SupportedCausalModelTypes { get; } = ["gpt2", .. LlamaConfig.ModelTypes];

    /// <summary>A randomly initialised model for a config (float32, CPU).</summary>
    /// <exception cref="NotSupportedException">The config's model_type is not one of <see cref="SupportedCausalModelTypes"/>.</exception>
    public static CausalLanguageModel CreateCausalLM(HfConfig config)
    {
        TorchRuntime.EnsureLoaded();
        return config.ModelType switch
        {
            "gpt2" => new Gpt2LMHeadModel(config),
            "llama" or "mistral" or "qwen2" => new LlamaForCausalLM(config),
            var other => throw new NotSupportedException(
                $"{config.Path}: model_type '{other}' is not supported for causal language modelling; supported: {string.Join(", ", SupportedCausalModelTypes)}."),
        };
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
        var config = HfConfig.Load(folder);
        var model = CreateCausalLM(config);
        var type = dtype ?? ScalarType.Float32;
        if (type != ScalarType.Float32) model.to(type);
        var weights = HfCheckpoint.Load(folder, type);
        try
        {
            report = WeightLoader.Load(model, weights, model.BaseModelPrefix, folder);
        }
        finally
        {
            foreach (var tensor in weights.Values) tensor.Dispose();
        }
        if (report.MissingWeightsError(folder, config.ModelType, [], "Is tie_word_embeddings right in config.json?") is { } missing)
        {
            model.Dispose();
            throw missing;
        }
        if (device is not null) model.to(device);
        model.eval();
        return model;
    }
}
