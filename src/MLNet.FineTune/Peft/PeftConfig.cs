namespace MLNet.FineTune.Peft;

/// <summary>How LoRA's A and B start (PEFT's <c>init_lora_weights</c>).</summary>
public enum LoraInit
{
    /// <summary>A ~ kaiming_uniform(a = sqrt(5)), B = 0 (<c>true</c>): the model starts equal to the base.</summary>
    Default,
    /// <summary>A ~ N(0, 1/r), B = 0 (<c>"gaussian"</c>).</summary>
    Gaussian,
    /// <summary>A and B from the r principal singular vectors of W, the base weight replaced by the residual
    /// (<c>"pissa"</c>, Meng et al. 2024).</summary>
    PiSSA,
    /// <summary>Both keep nn.Linear's random initialisation (<c>false</c>): B is non-zero (for tests only).</summary>
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

/// <summary>Where bottleneck adapters go.</summary>
public enum BottleneckKind
{
    /// <summary>After the attention output projection and after the feed-forward output (Houlsby et al. 2019).</summary>
    Houlsby,
    /// <summary>After the feed-forward output only (Pfeiffer et al. 2021).</summary>
    Pfeiffer,
}

/// <summary>PEFT's task types (<c>task_type</c>).</summary>
public static class PeftTaskType
{
    /// <summary>Sequence classification; PEFT adds "classifier" and "score" to modules_to_save.</summary>
    public const string SequenceClassification = "SEQ_CLS";
    /// <summary>Extractive question answering; PEFT adds "qa_outputs" to modules_to_save.</summary>
    public const string QuestionAnswering = "QUESTION_ANS";
    /// <summary>Causal language modelling.</summary>
    public const string CausalLM = "CAUSAL_LM";
    /// <summary>Token classification.</summary>
    public const string TokenClassification = "TOKEN_CLS";
    /// <summary>Feature extraction (a bare encoder).</summary>
    public const string FeatureExtraction = "FEATURE_EXTRACTION";

    /// <summary>The module names PEFT's task model adds to modules_to_save for a task type.</summary>
    public static IReadOnlyList<string> DefaultModulesToSave(string? taskType) => taskType switch
    {
        SequenceClassification => ["classifier", "score"],
        QuestionAnswering => ["qa_outputs"],
        _ => [],
    };
}

/// <summary>
/// What to adapt and how; the fields mirror PEFT's config (<c>adapter_config.json</c>). Module selection follows
/// PEFT: a module is targeted when its full name equals an entry of <see cref="TargetModules"/> or ends with
/// "." + entry, or, with <see cref="TargetModulesPattern"/>, when the regular expression matches the full name.
/// </summary>
public abstract record PeftConfig
{
    /// <summary>PEFT's <c>peft_type</c>: "LORA", "IA3", "BOTTLENECK" (this library's), "FULL".</summary>
    public abstract string PeftType { get; }

    /// <summary>Module names (exact or suffix after a dot); null: the model family's default table.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    /// <summary>A regular expression that must match a module's full name (PEFT's target_modules as one string);
    /// "all-linear" selects every linear layer except the output layer and the task head.</summary>
    public string? TargetModulesPattern { get; init; }

    /// <summary>Names never adapted (exact or suffix after a dot).</summary>
    public IReadOnlyList<string>? ExcludeModules { get; init; }

    /// <summary>A regular expression (full match) for modules never adapted.</summary>
    public string? ExcludeModulesPattern { get; init; }

    /// <summary>Only layers with these indices (the number after <see cref="LayersPattern"/>, or the first numbered
    /// segment); applies to <see cref="TargetModules"/> matched by suffix, as in PEFT.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }

    /// <summary>Names of the layer list (e.g. "layer", "h", "layers") used with <see cref="LayersToTransform"/>.</summary>
    public IReadOnlyList<string>? LayersPattern { get; init; }

    /// <summary>Modules trained in full and saved with the adapter (a module matches when its name ends with an
    /// entry, as PEFT matches them). The task head of an <c>IPretrainedModel</c> is always added.</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }

    /// <summary>PEFT's task type (see <see cref="PeftTaskType"/>); PEFT adds the task's head names to modules_to_save.</summary>
    public string? TaskType { get; init; }

    /// <summary>The base model the adapter belongs to (written to the file; informational).</summary>
    public string? BaseModelNameOrPath { get; init; }

    /// <summary>The base model's revision (informational).</summary>
    public string? Revision { get; init; }

    /// <summary>True when the adapter is loaded for inference only (nothing trains). Files are written with true, as PEFT does.</summary>
    public bool InferenceMode { get; init; }

    /// <summary>Set by injection: the targeted layers store weights [in, out] (GPT-2's Conv1D).</summary>
    public bool FanInFanOut { get; init; }
}

/// <summary>LoRA and its variants: rsLoRA, DoRA, PiSSA and Gaussian initialisation.</summary>
public sealed record LoraConfig : PeftConfig
{
    /// <inheritdoc/>
    public override string PeftType => "LORA";
    /// <summary>r (PEFT's default 8).</summary>
    public int Rank { get; init; } = 8;
    /// <summary>lora_alpha (PEFT's default 8); scaling = alpha / r.</summary>
    public double Alpha { get; init; } = 8;
    /// <summary>Dropout on the input of the LoRA path.</summary>
    public double Dropout { get; init; }
    /// <summary>rsLoRA: scaling = alpha / sqrt(r) (Kalajdzievski 2023).</summary>
    public bool UseRsLora { get; init; }
    /// <summary>DoRA (Liu et al. 2024).</summary>
    public bool UseDora { get; init; }
    /// <summary>How A and B start.</summary>
    public LoraInit Init { get; init; } = LoraInit.Default;
    /// <summary>Which biases train.</summary>
    public PeftBias Bias { get; init; } = PeftBias.None;
    /// <summary>Per-module rank overrides: key = name or regex matched against the end of a module name.</summary>
    public IReadOnlyDictionary<string, int>? RankPattern { get; init; }
    /// <summary>Per-module alpha overrides, matched like <see cref="RankPattern"/>.</summary>
    public IReadOnlyDictionary<string, double>? AlphaPattern { get; init; }
}

/// <summary>(IA)^3: learned scaling vectors.</summary>
public sealed record IA3Config : PeftConfig
{
    /// <inheritdoc/>
    public override string PeftType => "IA3";
    /// <summary>Targets whose input (not output) is scaled; null: the family's default table. A module is
    /// feed-forward when its name ends with an entry (plain suffix, as PEFT checks).</summary>
    public IReadOnlyList<string>? FeedforwardModules { get; init; }
    /// <summary>A regular expression (full match) for feed-forward modules.</summary>
    public string? FeedforwardModulesPattern { get; init; }
    /// <summary>Start the vectors at ones (PEFT's init_ia3_weights).</summary>
    public bool InitIA3Weights { get; init; } = true;
}

/// <summary>Bottleneck adapters (this library's format; PEFT has none).</summary>
public sealed record BottleneckConfig : PeftConfig
{
    /// <inheritdoc/>
    public override string PeftType => "BOTTLENECK";
    /// <summary>Houlsby (attention and feed-forward outputs) or Pfeiffer (feed-forward output only); chooses the
    /// default targets.</summary>
    public BottleneckKind Kind { get; init; } = BottleneckKind.Houlsby;
    /// <summary>Hidden size / bottleneck size (16 in Houlsby's and Pfeiffer's setups).</summary>
    public int ReductionFactor { get; init; } = 16;
    /// <summary>"relu", "gelu", "gelu_new", "silu" or "tanh".</summary>
    public string NonLinearity { get; init; } = "relu";
    /// <summary>Multiplier of the adapter's output.</summary>
    public double Scaling { get; init; } = 1.0;
}

/// <summary>Full fine-tuning: every parameter trains (the baseline the PEFT methods are measured against).</summary>
public sealed record FullFineTuneConfig : PeftConfig
{
    /// <inheritdoc/>
    public override string PeftType => "FULL";
}
