using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>Activation functions by the names transformers' <c>ACT2FN</c> uses in config.json (<c>hidden_act</c>,
/// <c>activation</c>, <c>activation_function</c>, <c>hidden_activation</c>): the one table every model family reads.</summary>
internal static class Activations
{
    /// <summary>Names this library knows, for error messages.</summary>
    public static IReadOnlyList<string> Supported { get; } =
        ["gelu", "gelu_python", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish", "tanh"];

    /// <summary>The activation for a transformers name, as a function (for families that call it inline).</summary>
    /// <param name="name">e.g. "gelu" (exact, erf-based), "gelu_new" (tanh approximation), "silu".</param>
    /// <param name="source">Where the name came from (the config file's path), named in the error.</param>
    /// <param name="key">The config key it came from, named in the error.</param>
    /// <exception cref="NotSupportedException">An activation outside <see cref="Supported"/>.</exception>
    public static Func<Tensor, Tensor> Function(string name, string source = "config", string key = "hidden_act") => name switch
    {
        // transformers' "gelu" is the exact erf form; gelu_new / gelu_fast / gelu_pytorch_tanh are the tanh
        // approximation of GELU (Hendrycks & Gimpel 2016), GPT-2's default.
        "gelu" or "gelu_python" => x => nn.functional.gelu(x),
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => x => nn.functional.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        "quick_gelu" => x => x * sigmoid(x * 1.702),   // CLIP's fast approximation
        "relu" => x => nn.functional.relu(x),
        "silu" or "swish" => x => nn.functional.silu(x),
        "tanh" => x => tanh(x),
        _ => throw Unsupported(name, source, key),
    };

    /// <summary>The activation for a transformers name, as a parameterless module (for families whose Hugging Face
    /// counterpart holds it as an attribute, e.g. BERT's <c>intermediate_act_fn</c>).</summary>
    /// <param name="name">e.g. "gelu" (exact, erf-based), "gelu_new" (tanh approximation), "silu".</param>
    /// <param name="config">The config it came from, named in the error.</param>
    /// <param name="key">The config key it came from, named in the error.</param>
    /// <exception cref="NotSupportedException">An activation outside <see cref="Supported"/>.</exception>
    public static nn.Module<Tensor, Tensor> Create(string name, HfConfig? config = null, string key = "hidden_act") =>
        new Activation(name, Function(name, config?.Path ?? "config", key));

    /// <summary>Checks a config's activation name early, so the error names the file and key.</summary>
    /// <exception cref="NotSupportedException">An activation outside <see cref="Supported"/>.</exception>
    public static string EnsureSupported(string name, HfConfig config, string key)
    {
        if (!Supported.Contains(name)) throw Unsupported(name, config.Path, key);
        return name;
    }

    private static NotSupportedException Unsupported(string name, string source, string key) =>
        new($"{source}: '{key}' = \"{name}\" is not supported; supported activations: {string.Join(", ", Supported)}.");

    /// <summary>A named activation module: no parameters, so it adds nothing to the state dict.</summary>
    private sealed class Activation(string name, Func<Tensor, Tensor> function) : nn.Module<Tensor, Tensor>(name)
    {
        public override Tensor forward(Tensor x) => function(x);
    }
}
