using TorchSharp;
using static TorchSharp.torch;
using TorchSharp.Modules;

namespace MLNet.FineTune.Peft;

/// <summary>A set of parameters that share a learning rate.</summary>
/// <param name="Name">"default"; with LoRA+ "groupA" and "groupB" (PEFT's names).</param>
/// <param name="Parameters">The parameters.</param>
/// <param name="LearningRateMultiplier">Multiplies the base learning rate.</param>
/// <remarks>Weight decay is not decided here: the training layer applies its one no-decay rule (biases and
/// normalisation weights, as transformers' Trainer) to every group's members, as PEFT's
/// <c>create_loraplus_optimizer</c> takes the Trainer's decay names.</remarks>
public sealed record ParameterGroup(string Name, IReadOnlyList<Parameter> Parameters, double LearningRateMultiplier);

/// <summary>
/// Groups a model's trainable parameters by learning rate: for LoRA+ (Hayou et al. 2024; PEFT's
/// create_loraplus_optimizer) a rate <c>ratio</c> times higher for the B matrices and every 1-D parameter.
/// </summary>
internal static class OptimizerParameterGroups
{
    /// <summary>Builds the groups (empty ones left out).</summary>
    /// <param name="model">The model; only parameters with requires_grad are grouped.</param>
    /// <param name="loraPlusRatio">lr_B / lr_A; 1 gives one group at the base rate.</param>
    public static IReadOnlyList<ParameterGroup> Create(nn.Module model, double loraPlusRatio = 1.0)
    {
        if (loraPlusRatio <= 0) throw new ArgumentOutOfRangeException(nameof(loraPlusRatio), loraPlusRatio, "The LoRA+ ratio must be positive.");
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).ToList();
        if (loraPlusRatio == 1.0)
            return Groups(("default", trainable, 1.0));

        bool IsB(string name, Parameter p) => name.Contains("lora_B", StringComparison.Ordinal) || p.dim() == 1;
        return Groups(
            ("groupA", trainable.Where(p => !IsB(p.name, p.parameter)), 1.0),
            ("groupB", trainable.Where(p => IsB(p.name, p.parameter)), loraPlusRatio));
    }

    private static List<ParameterGroup> Groups(params (string Name, IEnumerable<(string name, Parameter parameter)> Members, double Lr)[] groups) =>
        groups.Select(g => new ParameterGroup(g.Name, g.Members.Select(m => m.parameter).ToList(), g.Lr))
            .Where(g => g.Parameters.Count > 0).ToList();
}
