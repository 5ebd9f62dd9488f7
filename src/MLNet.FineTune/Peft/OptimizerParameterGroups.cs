using TorchSharp;
using static TorchSharp.torch;
using TorchSharp.Modules;

namespace MLNet.FineTune.Peft;

/// <summary>A set of parameters that share optimizer settings.</summary>
/// <param name="Name">"decay", "no_decay"; with LoRA+ "groupA", "groupB", "groupB_no_decay" (PEFT's names).</param>
/// <param name="Parameters">The parameters.</param>
/// <param name="LearningRateMultiplier">Multiplies the base learning rate.</param>
/// <param name="WeightDecay">Whether weight decay applies (not to biases and normalisation weights).</param>
public sealed record ParameterGroup(string Name, IReadOnlyList<Parameter> Parameters, double LearningRateMultiplier, bool WeightDecay);

/// <summary>
/// Groups a model's trainable parameters for AdamW: no weight decay on biases and normalisation weights (as
/// transformers' Trainer), and, for LoRA+ (Hayou et al. 2024; PEFT's create_loraplus_optimizer), a learning rate
/// <c>ratio</c> times higher for the B matrices and every 1-D parameter.
/// </summary>
public static class OptimizerParameterGroups
{
    /// <summary>Builds the groups (empty ones left out).</summary>
    /// <param name="model">The model; only parameters with requires_grad are grouped.</param>
    /// <param name="loraPlusRatio">lr_B / lr_A; 1 gives plain decay / no-decay groups.</param>
    public static IReadOnlyList<ParameterGroup> Create(nn.Module model, double loraPlusRatio = 1.0)
    {
        if (loraPlusRatio <= 0) throw new ArgumentOutOfRangeException(nameof(loraPlusRatio), loraPlusRatio, "The LoRA+ ratio must be positive.");
        var noDecay = NoDecayNames(model);
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        if (loraPlusRatio == 1.0)
            return Groups(
                ("decay", trainable.Where(p => !noDecay.Contains(p.name)), 1.0, true),
                ("no_decay", trainable.Where(p => noDecay.Contains(p.name)), 1.0, false));

        bool IsB(string name, Parameter p) => name.Contains("lora_B", StringComparison.Ordinal) || p.dim() == 1;
        return Groups(
            ("groupA", trainable.Where(p => !IsB(p.name, p.parameter)), 1.0, true),
            ("groupB", trainable.Where(p => IsB(p.name, p.parameter) && !noDecay.Contains(p.name)), loraPlusRatio, true),
            ("groupB_no_decay", trainable.Where(p => IsB(p.name, p.parameter) && noDecay.Contains(p.name)), loraPlusRatio, false));
    }

    // Biases, and the parameters of normalisation modules (LayerNorm, RMSNorm and the families' own *Norm classes).
    private static HashSet<string> NoDecayNames(nn.Module model)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, _) in model.named_parameters())
            if (name == "bias" || name.EndsWith(".bias", StringComparison.Ordinal)) names.Add(name);
        foreach (var (moduleName, module) in model.named_modules())
            if (module.GetType().Name.Contains("Norm", StringComparison.Ordinal))
                foreach (var (paramName, _) in module.named_parameters(recurse: false))
                    names.Add(moduleName + "." + paramName);
        return names;
    }

    private static List<ParameterGroup> Groups(params (string Name, IEnumerable<(string name, Parameter parameter)> Members, double Lr, bool Decay)[] groups) =>
        groups.Select(g => new ParameterGroup(g.Name, g.Members.Select(m => m.parameter).ToList(), g.Lr, g.Decay))
            .Where(g => g.Parameters.Count > 0).ToList();
}
