using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// Quantizes a loaded model's linear layers to 4 bits in place, as transformers' bitsandbytes integration does with
/// <c>load_in_4bit</c>: every nn.Linear and Conv1D becomes a <see cref="Linear4Bit"/>, except the output layer
/// (<c>lm_head</c>), the task heads (<see cref="IPretrainedModel.HeadModuleNames"/>) and the modules named in
/// <c>skipModules</c> (<c>llm_int8_skip_modules</c>). Embeddings, norms and the skipped layers keep their dtype.
/// </summary>
internal static class BaseQuantizer
{
    /// <summary>Replaces the model's linear layers one at a time (each float weight is released as soon as its packed
    /// copy exists, so memory never holds two copies of more than one layer) and returns the paths quantized.</summary>
    /// <param name="model">The model, weights loaded (any float dtype, any device).</param>
    /// <param name="options">Data type, block size, double quantization.</param>
    /// <param name="skipModules">More module names (or dotted suffixes) to keep in full precision.</param>
    /// <exception cref="ArgumentException">The model has no linear layer left to quantize.</exception>
    public static IReadOnlyList<string> Quantize(nn.Module model, FourBitQuantization options, IEnumerable<string>? skipModules = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var skipped = (skipModules ?? []).Concat((model as IPretrainedModel)?.HeadModuleNames ?? []).Append("lm_head").ToList();
        var targets = model.named_modules()
            .Where(m => BaseLinear.TryCreate(m.module) is { QuantState: null } && !skipped.Any(s => IsUnder(m.name, s)))
            .Select(m => m.name)
            .ToList();
        if (targets.Count == 0)
            throw new ArgumentException($"The model ({model.GetType().Name}) has no linear layer to quantize outside the skipped modules [{string.Join(", ", skipped)}].", nameof(model));
        using (no_grad())
        {
            foreach (var path in targets)
            {
                var linear = BaseLinear.TryCreate(ModuleSurgery.Get(model, path))!;
                Linear4Bit quantized;
                using (var scope = NewDisposeScope())
                    quantized = new Linear4Bit(linear.FanInFanOut ? linear.Weight.t() : linear.Weight, linear.Bias, options);
                ModuleSurgery.Replace(model, path, quantized);
                linear.Weight.Dispose();
            }
        }
        return targets;
    }

    // True when a module path is the named module or lies inside it: "lm_head", "classifier" or "...layer.0.mlp".
    private static bool IsUnder(string path, string name) =>
        path == name || path.EndsWith("." + name, StringComparison.Ordinal)
        || path.StartsWith(name + ".", StringComparison.Ordinal) || path.Contains("." + name + ".", StringComparison.Ordinal);
}
