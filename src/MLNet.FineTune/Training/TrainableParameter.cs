using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Training;

/// <summary>One parameter the optimizer updates.</summary>
/// <param name="Name">Its state-dict name (used for checkpoints, the best-weights snapshot and error messages).</param>
/// <param name="Parameter">The parameter itself; it must require grad.</param>
/// <param name="LearningRateMultiplier">The parameter's rate is the scheduled rate times this (LoRA+ gives B matrices
/// a multiplier of e.g. 16).</param>
/// <param name="ApplyWeightDecay">False for parameters that must not decay (biases, normalisation weights).</param>
public sealed record TrainableParameter(string Name, Parameter Parameter, double LearningRateMultiplier = 1.0, bool ApplyWeightDecay = true);

/// <summary>
/// Builds the trainable-parameter list of a model and decides which parameters get weight decay. This is the
/// library's one no-decay rule: PEFT's groups (<see cref="MLNet.FineTune.Peft.ParameterGroup"/>) carry only learning
/// rates and are given their decay flags here.
/// </summary>
/// <remarks>
/// The no-decay rule, a superset of transformers' <c>Trainer.get_decay_parameter_names</c> for every family this
/// library ships: a parameter is exempt from weight decay when
/// <list type="number">
/// <item>its own name (the last dot-separated segment) is <c>bias</c> or ends with <c>_bias</c>; or</item>
/// <item>the module that owns it (the segment before the last) is a normalisation layer by name, compared
/// case-insensitively: it contains <c>layernorm</c>, <c>layer_norm</c> or <c>rmsnorm</c>, or equals <c>norm</c>,
/// or starts with <c>norm_</c>, or ends with <c>_norm</c>, or equals <c>ln</c> or starts with <c>ln_</c>
/// (BERT <c>LayerNorm</c>, DistilBERT <c>sa_layer_norm</c>, GPT-2 <c>ln_1</c>/<c>ln_f</c>, Llama/Qwen2
/// <c>input_layernorm</c>/<c>norm</c>, Qwen3 <c>q_norm</c>); or</item>
/// <item>the owning module is a normalisation layer by type: a TorchSharp batch/instance norm (<c>NormBase</c>), or
/// any module whose class name ends with <c>Norm</c> (TorchSharp's LayerNorm, GroupNorm, LocalResponseNorm; the
/// families' own <c>RmsNorm</c>), checked when the module is known (<see cref="FromModule"/>, <see cref="FromGroups"/>).</item>
/// </list>
/// Embeddings, linear weights and adapter matrices (lora_A, lora_B, DoRA magnitudes) decay.
/// </remarks>
public static class ParameterGroups
{
    /// <summary>True when the parameter with this full name is exempt from weight decay (name rules 1 and 2).</summary>
    public static bool IsNoDecay(string parameterName)
    {
        ArgumentNullException.ThrowIfNull(parameterName);
        var segments = parameterName.Split('.');
        var own = segments[^1].ToLowerInvariant();
        if (own == "bias" || own.EndsWith("_bias", StringComparison.Ordinal)) return true;
        if (segments.Length < 2) return false;
        return IsNormalisationName(segments[^2]);
    }

    /// <summary>True when a module attribute name denotes a normalisation layer (rule 2).</summary>
    public static bool IsNormalisationName(string moduleName)
    {
        var m = moduleName.ToLowerInvariant();
        return m.Contains("layernorm", StringComparison.Ordinal) || m.Contains("layer_norm", StringComparison.Ordinal)
            || m.Contains("rmsnorm", StringComparison.Ordinal)
            || m == "norm" || m.StartsWith("norm_", StringComparison.Ordinal) || m.EndsWith("_norm", StringComparison.Ordinal)
            || m == "ln" || m.StartsWith("ln_", StringComparison.Ordinal);
    }

    /// <summary>
    /// Every parameter of <paramref name="model"/> that requires grad, in <c>named_parameters</c> order, with weight decay
    /// decided by the no-decay rule and an optional learning-rate multiplier per name.
    /// </summary>
    /// <param name="model">The model after any dtype/device moves and adapter injection (TorchSharp's <c>to()</c>
    /// replaces parameter objects, so groups must be built afterwards).</param>
    /// <param name="learningRateMultiplier">Multiplier by parameter name (e.g. LoRA+ for <c>lora_B</c>); null means 1.</param>
    public static IReadOnlyList<TrainableParameter> FromModule(nn.Module model, Func<string, double>? learningRateMultiplier = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var isNoDecay = NoDecayRule(model);
        var result = new List<TrainableParameter>();
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!parameter.requires_grad) continue;
            result.Add(new TrainableParameter(name, parameter, learningRateMultiplier?.Invoke(name) ?? 1.0, !isNoDecay(name)));
        }
        return result;
    }

    /// <summary>
    /// The trainable parameters of a PEFT model from its learning-rate groups
    /// (<see cref="MLNet.FineTune.Peft.PeftModel.ParameterGroups"/>, LoRA+ when its ratio is above 1), named by looking
    /// them up in <paramref name="model"/>, with weight decay decided by the no-decay rule.
    /// </summary>
    /// <param name="model">The model that owns every parameter.</param>
    /// <param name="groups">Each group's parameters and learning-rate multiplier.</param>
    /// <exception cref="ArgumentException">A parameter is not part of the model, or appears in two groups.</exception>
    public static IReadOnlyList<TrainableParameter> FromGroups(nn.Module model, IEnumerable<MLNet.FineTune.Peft.ParameterGroup> groups)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(groups);
        var names = new Dictionary<IntPtr, string>();
        foreach (var (name, parameter) in model.named_parameters()) names.TryAdd(parameter.Handle, name);
        var isNoDecay = NoDecayRule(model);
        var result = new List<TrainableParameter>();
        var seen = new HashSet<IntPtr>();
        foreach (var group in groups)
        {
            foreach (var parameter in group.Parameters)
            {
                if (!names.TryGetValue(parameter.Handle, out var name))
                    throw new ArgumentException($"Optimizer group '{group.Name}' holds a parameter of shape [{string.Join(", ", parameter.shape)}] that is not part of the model.", nameof(groups));
                if (!seen.Add(parameter.Handle))
                    throw new ArgumentException($"Parameter '{name}' appears in more than one optimizer group.", nameof(groups));
                result.Add(new TrainableParameter(name, parameter, group.LearningRateMultiplier, !isNoDecay(name)));
            }
        }
        return result;
    }

    // The whole rule for one model: the name rules, plus the owning module's type (rule 3).
    private static Func<string, bool> NoDecayRule(nn.Module model)
    {
        var normModules = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, module) in model.named_modules())
            if (IsNormalisationType(module)) normModules.Add(name);
        return name =>
        {
            var owner = name.Contains('.') ? name[..name.LastIndexOf('.')] : "";
            return IsNoDecay(name) || normModules.Contains(owner);
        };
    }

    private static bool IsNormalisationType(nn.Module module) =>
        module is TorchSharp.Modules.NormBase || module.GetType().Name.EndsWith("Norm", StringComparison.Ordinal);
}
