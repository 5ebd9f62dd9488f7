using MLNet.FineTune.Peft;

namespace MLNet.FineTune;

/// <summary>The parameter-efficient method's settings; one subclass per method.</summary>
public abstract class MethodOptions
{
    /// <summary>Module names to adapt, as PEFT matches them: an exact name or a suffix after a dot ("query" matches
    /// "bert.encoder.layer.0.attention.self.query"). Null uses the family's default.</summary>
    public string[]? TargetModules { get; set; }

    /// <summary>A regular expression matched against whole module names instead of <see cref="TargetModules"/>.</summary>
    public string? TargetModulesRegex { get; set; }

    /// <summary>Module names never adapted (same matching rules).</summary>
    public string[]? ExcludeModules { get; set; }

    /// <summary>Extra modules trained in full and saved with the adapter (the task head always is).</summary>
    public string[]? ModulesToSave { get; set; }
}

/// <summary>LoRA (Hu et al., 2021): W + (alpha / r) B A with B (out, r) and A (r, in) trained, W frozen.</summary>
public class LoraOptions : MethodOptions
{
    /// <summary>Rank r of the update. Default 8.</summary>
    public int Rank { get; set; } = 8;

    /// <summary>Scaling numerator: scaling = alpha / r (rsLoRA: alpha / sqrt(r)). Default 16.</summary>
    public double Alpha { get; set; } = 16;

    /// <summary>Dropout on the LoRA path's input. Default 0.1.</summary>
    public double Dropout { get; set; } = 0.1;

    /// <summary>rsLoRA (Kalajdzievski, 2023): scaling = alpha / sqrt(r), stable at high ranks.</summary>
    public bool UseRsLora { get; set; }

    /// <summary>How A and B start: kaiming-uniform A and zero B (default), Gaussian A, or PiSSA (principal singular
    /// vectors of W, the base keeping the residual; Meng et al., 2024).</summary>
    public LoraInit Initialization { get; set; } = LoraInit.Default;

    /// <summary>LoRA+ (Hayou et al., 2024): the B matrices learn this many times faster than A; 1 disables.
    /// Papers suggest 16.</summary>
    public double LoraPlusLearningRateRatio { get; set; } = 1;
}

/// <summary>DoRA (Liu et al., 2024): LoRA on the direction of W plus a trained magnitude vector per output.</summary>
public sealed class DoraOptions : LoraOptions
{
}

/// <summary>Bottleneck adapters: x + up(act(down(x))), inserted into each layer, started near the identity.</summary>
public sealed class AdapterOptions : MethodOptions
{
    /// <summary>Houlsby (two per layer) or Pfeiffer (one per layer). Default Pfeiffer.</summary>
    public BottleneckKind Placement { get; set; } = BottleneckKind.Pfeiffer;

    /// <summary>hidden / bottleneck width. Default 16.</summary>
    public int ReductionFactor { get; set; } = 16;

    /// <summary>The bottleneck's non-linearity: "relu", "gelu", "silu" or "tanh". Default "relu".</summary>
    public string Activation { get; set; } = "relu";
}

/// <summary>IA3 (Liu et al., 2022): learned vectors rescale keys, values and the feed-forward input.</summary>
public sealed class IA3Options : MethodOptions
{
    /// <summary>Which of the target modules are feed-forward layers (their input is rescaled instead of their
    /// output). Null uses the family's default.</summary>
    public string[]? FeedForwardModules { get; set; }
}

/// <summary>Full fine-tuning: every weight trains. The baseline the parameter-efficient methods are measured against.
/// <see cref="MethodOptions.TargetModules"/>, <see cref="MethodOptions.TargetModulesRegex"/> and
/// <see cref="MethodOptions.ExcludeModules"/> choose modules to adapt, so setting them here is an error.</summary>
public sealed class FullFineTuneOptions : MethodOptions
{
}
