namespace MLNet.FineTune.Peft
{
    /// <summary>Where bottleneck adapters go.</summary>
    public enum BottleneckKind
    {
        /// <summary>After the attention output projection and after the feed-forward output (Houlsby et al.
        /// 2019).</summary>
        Houlsby,
        /// <summary>After the feed-forward output only (Pfeiffer et al. 2021).</summary>
        Pfeiffer,
    }
}

namespace MLNet.FineTune
{
    using MLNet.FineTune.Peft;

    /// <summary>Bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020): x + scaling * up(act(down(x))) on
    /// the
    /// output projections of each layer, started near the identity. This library's format (PEFT has none), saved as
    /// peft_type "BOTTLENECK" (docs/methods.md).</summary>
    public sealed record AdapterOptions : MethodOptions
    {
        /// <summary>adapter_kind: Houlsby (attention and feed-forward outputs) or Pfeiffer (feed-forward output only);
        /// chooses the default targets. Default Pfeiffer (a file without the key reads as Houlsby).</summary>
        public BottleneckKind Placement { get; init; } = BottleneckKind.Pfeiffer;

        /// <summary>reduction_factor: hidden size / bottleneck width (16 in Houlsby's and Pfeiffer's setups). Default
        /// 16.</summary>
        public int ReductionFactor { get; init; } = 16;

        /// <summary>non_linearity: "relu", "gelu", "gelu_new", "silu" or "tanh". Default "relu".</summary>
        public string Activation { get; init; } = "relu";

        /// <summary>scaling: multiplier of the adapter's output. Default 1.</summary>
        public double Scaling { get; init; } = 1.0;
    }
}
