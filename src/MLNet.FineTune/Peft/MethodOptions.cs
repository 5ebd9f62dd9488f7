using MLNet.FineTune.Peft;

namespace MLNet.FineTune;

/// <summary>
/// A fine-tuning method's settings, one record per method (<see cref="LoraOptions"/>, <see cref="DoraOptions"/>,
/// <see cref="IA3Options"/>, <see cref="AdapterOptions"/>, <see cref="FullFineTuneOptions"/>). The records are PEFT's
/// configs: the fields are PEFT's (<c>adapter_config.json</c>'s keys, in C# casing), a saved adapter's file is the
/// record as it is, and the defaults stated on each record are this library's (a file that omits a key gets PEFT's
/// default for it when read; see <see cref="PeftConfigJson"/>). Module selection follows PEFT: a module is targeted when
/// its full name equals an entry of <see cref="TargetModules"/> or ends with "." + entry, or, with
/// <see cref="TargetModulesPattern"/>, when the regular expression matches the full name.
/// </summary>
public abstract record MethodOptions
{
    /// <summary>PEFT's <c>peft_type</c>: "LORA", "IA3", "BOTTLENECK" (this library's), "FULL".</summary>
    public string PeftType => PeftMethods.For(this).PeftType;

    /// <summary>Module names to adapt, as PEFT matches them: an exact name or a suffix after a dot ("query" matches
    /// "bert.encoder.layer.0.attention.self.query"). Null uses the model family's default.</summary>
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

    /// <summary>Extra modules trained in full and saved with the adapter (a module matches when its name ends with an
    /// entry, as PEFT matches them). The task head is always added.</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }

    /// <summary>PEFT's task type (see <see cref="PeftTaskType"/>); PEFT adds the task's head names to modules_to_save.
    /// The estimators set it.</summary>
    public string? TaskType { get; init; }

    /// <summary>The base model the adapter belongs to (written to the file; informational). The estimators set it.</summary>
    public string? BaseModelNameOrPath { get; init; }

    /// <summary>The base model's revision (informational).</summary>
    public string? Revision { get; init; }

    /// <summary>True when the adapter is loaded for inference only (nothing trains). Files are written with true, as
    /// PEFT does.</summary>
    public bool InferenceMode { get; init; }

    /// <summary>Set by injection: the targeted layers store weights [in, out] (GPT-2's Conv1D).</summary>
    public bool FanInFanOut { get; init; }
}

