namespace MLNet.FineTune.Peft
{
    /// <summary>How LoRA's A and B start (PEFT's <c>init_lora_weights</c>).</summary>
    public enum LoraInit
    {
        /// <summary>A ~ kaiming_uniform(a = sqrt(5)), B = 0 (<c>true</c>): the model starts equal to the
        /// base.</summary>
        Default,
        /// <summary>A ~ N(0, 1/r), B = 0 (<c>"gaussian"</c>).</summary>
        Gaussian,
        /// <summary>A and B from the r principal singular vectors of W, the base weight replaced by the residual
        /// (<c>"pissa"</c>, Meng et al. 2024).</summary>
        PiSSA,
        /// <summary>Both keep nn.Linear's random initialisation (<c>false</c>): B is non-zero (for tests
        /// only).</summary>
        Random,
    }

    /// <summary>Which biases train and are saved with the adapter (PEFT's <c>bias</c>).</summary>
    public enum PeftBias
    {
        /// <summary><c>"none"</c>: biases stay frozen.</summary>
        None,
        /// <summary><c>"all"</c>: every bias of the model trains.</summary>
        All,
        /// <summary><c>"lora_only"</c>: the biases of adapted layers train.</summary>
        LoraOnly,
    }
}

namespace MLNet.FineTune
{
    using MLNet.FineTune.Peft;

    /// <summary>LoRA (Hu et al., 2021): W + scaling B A with B (out, r) and A (r, in) trained, W frozen; PEFT's
    /// <c>LoraConfig</c>. The defaults are this library's (r 8, alpha 16, dropout 0.1); a file that omits a key gets
    /// PEFT's default (lora_alpha 8, lora_dropout 0).</summary>
    public record LoraOptions : MethodOptions
    {
        /// <summary>r, the rank of the update. Default 8.</summary>
        public int Rank { get; init; } = 8;

        /// <summary>lora_alpha: scaling = alpha / r (rsLoRA: alpha / sqrt(r)). Default 16.</summary>
        public double Alpha { get; init; } = 16;

        /// <summary>lora_dropout: dropout on the LoRA path's input, in [0, 1). Default 0.1.</summary>
        public double Dropout { get; init; } = 0.1;

        /// <summary>use_rslora (Kalajdzievski, 2023): scaling = alpha / sqrt(r), stable at high ranks.</summary>
        public bool UseRsLora { get; init; }

        /// <summary>use_dora (Liu et al., 2024): LoRA on the direction of W plus a trained magnitude per
        /// output.</summary>
        public bool UseDora { get; init; }

        /// <summary>init_lora_weights: kaiming-uniform A and zero B (default), Gaussian A, or PiSSA (principal singular
        /// vectors of W, the base keeping the residual; Meng et al., 2024).</summary>
        public LoraInit Initialization { get; init; } = LoraInit.Default;

        /// <summary>bias: which biases train and are saved with the adapter. Default none.</summary>
        public PeftBias Bias { get; init; } = PeftBias.None;

        /// <summary>rank_pattern: per-module rank overrides; key = name or regex matched against the end of a module
        /// name.</summary>
        public IReadOnlyDictionary<string, int>? RankPattern { get; init; }

        /// <summary>alpha_pattern: per-module alpha overrides, matched like <see cref="RankPattern"/>.</summary>
        public IReadOnlyDictionary<string, double>? AlphaPattern { get; init; }

        /// <summary>LoRA+ (Hayou et al., 2024): the B matrices learn this many times faster than A; 1 disables. Papers
        /// suggest 16. A training setting (PEFT's <c>create_loraplus_optimizer</c>), not saved in the adapter
        /// file.</summary>
        public double LoraPlusLearningRateRatio { get; init; } = 1;
    }

    /// <summary>DoRA (Liu et al., 2024): <see cref="LoraOptions"/> with <see cref="LoraOptions.UseDora"/> on.</summary>
    public sealed record DoraOptions : LoraOptions
    {
        /// <summary>LoRA options with use_dora set.</summary>
        public DoraOptions() => UseDora = true;
    }
}
