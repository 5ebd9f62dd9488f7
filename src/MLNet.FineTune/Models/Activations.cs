using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>Activation functions by the names transformers' <c>ACT2FN</c> uses in config.json
/// (<c>hidden_act</c>, <c>activation</c>, <c>hidden_activation</c>).</summary>
public static class Activations
{
    /// <summary>Names this library knows, for error messages.</summary>
    public static IReadOnlyList<string> Supported { get; } =
        ["gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish", "tanh"];

    /// <summary>The activation module for a transformers name.</summary>
    /// <param name="name">e.g. "gelu" (exact, erf-based), "gelu_new" (tanh approximation), "silu".</param>
    /// <param name="config">The config it came from, named in the error.</param>
    /// <param name="key">The config key it came from, named in the error.</param>
    /// <exception cref="NotSupportedException">An activation outside <see cref="Supported"/>.</exception>
    public static nn.Module<Tensor, Tensor> Create(string name, HfConfig? config = null, string key = "hidden_act") => name switch
    {
        // transformers' "gelu" is the exact erf form; gelu_new / gelu_fast / gelu_pytorch_tanh are the tanh approximation.
        "gelu" or "gelu_python" => nn.GELU(),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => nn.GELU(TorchSharp.Modules.GELU.Approximate.tanh),
        "quick_gelu" => new QuickGelu(),
        "relu" => nn.ReLU(),
        "silu" or "swish" => nn.SiLU(),
        "tanh" => nn.Tanh(),
        _ => throw new NotSupportedException(
            $"{config?.Path ?? "config"}: '{key}' = \"{name}\" is not supported; supported activations: {string.Join(", ", Supported)}."),
    };

    /// <summary>Checks a config's activation name early, so the error names the file and key.</summary>
    /// <exception cref="NotSupportedException">An activation outside <see cref="Supported"/>.</exception>
    public static string EnsureSupported(string name, HfConfig config, string key)
    {
        if (!Supported.Contains(name))
            throw new NotSupportedException($"{config.Path}: '{key}' = \"{name}\" is not supported; supported activations: {string.Join(", ", Supported)}.");
        return name;
    }

    /// <summary>x * sigmoid(1.702 x) (CLIP's fast GELU approximation).</summary>
    private sealed class QuickGelu() : nn.Module<Tensor, Tensor>("QuickGelu")
    {
        public override Tensor forward(Tensor x) => x * sigmoid(x * 1.702);
    }
}
