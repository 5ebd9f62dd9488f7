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
/// Builds the trainable-parameter list of a model and decides which parameters get weight decay.
/// </summary>
/// <remarks>
/// The no-decay rule (<see cref="IsNoDecay"/>), a superset of transformers' <c>Trainer.get_decay_parameter_names</c>
/// for every family this library ships: a parameter is exempt from weight decay when
/// <list type="number">
/// <item>its own name (the last dot-separated segment) is <c>bias</c> or ends with <c>_bias</c>; or</item>
/// <item>the module that owns it (the segment before the last) is a normalisation layer by name, compared
/// case-insensitively: it contains <c>layernorm</c>, <c>layer_norm</c> or <c>rmsnorm</c>, or equals <c>norm</c>,
/// or starts with <c>norm_</c>, or ends with <c>_norm</c>, or equals <c>ln</c> or starts with <c>ln_</c>
/// (BERT <c>LayerNorm</c>, DistilBERT <c>sa_layer_norm</c>, GPT-2 <c>ln_1</c>/<c>ln_f</c>, Llama/Qwen2
/// <c>input_layernorm</c>/<c>norm</c>, Qwen3 <c>q_norm</c>); or</item>
/// <item>the owning module is a TorchSharp normalisation layer by type (LayerNorm, GroupNorm, BatchNorm, InstanceNorm,
/// LocalResponseNorm), checked when the module is known (<see cref="FromModule"/>).</item>
/// </list>
/// Embeddings, linear weights and adapter matrices (lora_A, lora_B) decay.
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
        var normModules = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, module) in model.named_modules())
            if (IsNormalisationType(module)) normModules.Add(name);

        var result = new List<TrainableParameter>();
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (!parameter.requires_grad) continue;
            var owner = name.Contains('.') ? name[..name.LastIndexOf('.')] : "";
            bool noDecay = IsNoDecay(name) || normModules.Contains(owner);
            result.Add(new TrainableParameter(name, parameter, learningRateMultiplier?.Invoke(name) ?? 1.0, !noDecay));
        }
        return result;
    }

    /// <summary>
    /// Names the parameters of optimizer groups built elsewhere (e.g. PEFT's LoRA+ groups: B matrices at
    /// <c>ratio</c> times the rate) by looking them up in <paramref name="model"/>.
    /// </summary>
    /// <param name="model">The model that owns every parameter.</param>
    /// <param name="groups">Each group's parameters, learning-rate multiplier and weight-decay flag.</param>
    /// <exception cref="ArgumentException">A parameter is not part of the model, or appears in two groups.</exception>
    public static IReadOnlyList<TrainableParameter> FromGroups(nn.Module model,
        IEnumerable<(IEnumerable<Parameter> Parameters, double LearningRateMultiplier, bool ApplyWeightDecay)> groups)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(groups);
        var names = new Dictionary<IntPtr, string>();
        foreach (var (name, parameter) in model.named_parameters()) names.TryAdd(parameter.Handle, name);
        var result = new List<TrainableParameter>();
        var seen = new HashSet<IntPtr>();
        int groupIndex = 0;
        foreach (var (parameters, multiplier, decay) in groups)
        {
            foreach (var parameter in parameters)
            {
                if (!names.TryGetValue(parameter.Handle, out var name))
                    throw new ArgumentException($"Optimizer group {groupIndex} holds a parameter of shape [{string.Join(", ", parameter.shape)}] that is not part of the model.", nameof(groups));
                if (!seen.Add(parameter.Handle))
                    throw new ArgumentException($"Parameter '{name}' appears in more than one optimizer group.", nameof(groups));
                result.Add(new TrainableParameter(name, parameter, multiplier, decay));
            }
            groupIndex++;
        }
        return result;
    }

    /// <summary>The trainable parameters of a PEFT model from its optimizer groups
    /// (<see cref="MLNet.FineTune.Peft.PeftModel.ParameterGroups"/>, LoRA+ when its ratio is above 1).</summary>
    public static IReadOnlyList<TrainableParameter> FromGroups(nn.Module model, IEnumerable<MLNet.FineTune.Peft.ParameterGroup> groups) =>
        FromGroups(model, groups.Select(g => (g.Parameters.AsEnumerable(), g.LearningRateMultiplier, g.WeightDecay)));

    private static bool IsNormalisationType(nn.Module module) => module is TorchSharp.Modules.LayerNorm
        or TorchSharp.Modules.GroupNorm or TorchSharp.Modules.NormBase or TorchSharp.Modules.LocalResponseNorm;
}
