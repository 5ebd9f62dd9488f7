using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// One fine-tuning method as a plug-in: everything the shared machinery (injection, the adapter file, the training
/// engine, model.zip) asks of a method, answered in the method's own folder (Peft/Lora, Peft/IA3, Peft/Bottleneck,
/// Peft/Full). <see cref="PeftMethods"/> holds one instance per method.
/// </summary>
internal abstract class PeftMethod
{
    /// <summary>The options record this method reads (derived records, e.g. DoRA's, belong to it too).</summary>
    public abstract Type OptionsType { get; }

    /// <summary>PEFT's <c>peft_type</c>.</summary>
    public abstract string PeftType { get; }

    /// <summary>The method's name in messages ("LoRA", "DoRA").</summary>
    public abstract string DisplayName(MethodOptions options);

    /// <summary>The <c>ml.FineTune()</c> method that trains these options ("Lora", "Dora", ...).</summary>
    public abstract string CatalogMethodName(MethodOptions options);

    /// <summary>The peak learning rate when the task options leave it unset.</summary>
    public abstract double DefaultLearningRate { get; }

    /// <summary>False for a method that trains the model itself (full fine-tuning): no adapter layers, no adapter
    /// file.</summary>
    public virtual bool InjectsAdapters => true;

    /// <summary>The names of the adapter layer's own tensors in an adapter file, after the wrapped layer's path
    /// (<c>lora_A.weight</c>): the file's keys that name a linear layer, not a parameter of the model.</summary>
    public virtual IReadOnlyList<string> AdapterTensorNames => [];

    /// <summary>The model types with default targets (for the error when a family has none).</summary>
    public virtual IReadOnlyCollection<string> KnownModelTypes => [];

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public virtual void Validate(MethodOptions options) { }

    /// <summary>The options with the family's default targets filled in, or null when the family has none. Called
    /// only when the options name no targets.</summary>
    public virtual MethodOptions? WithDefaultTargets(MethodOptions options, string? modelType) => options;

    /// <summary>Method-specific resolution once the targets are known (e.g. IA3's feed-forward modules).</summary>
    public virtual MethodOptions Resolve(MethodOptions options, string? modelType) => options;

    /// <summary>The adapter layer for one matched linear layer at <paramref name="path"/>.</summary>
    public virtual AdaptedLinear CreateLayer(MethodOptions options, string path, BaseLinear baseLinear, ScalarType adapterDType) =>
        throw new NotSupportedException($"{PeftType} injects no adapter layers.");

    /// <summary>Parameters trained besides the adapter layers and modules to save (LoRA's <c>bias</c>).</summary>
    public virtual IEnumerable<Tensor> ExtraTrainable(nn.Module model, MethodOptions options, IReadOnlyDictionary<string, AdaptedLinear> layers) => [];

    /// <summary>Tensors saved in the adapter file besides the adapter layers' and the modules to save (full names,
    /// without PEFT's prefix).</summary>
    public virtual IEnumerable<(string Name, Tensor Tensor)> ExtraAdapterState(nn.Module model, MethodOptions options,
        IReadOnlyDictionary<string, AdaptedLinear> layers) => [];

    /// <summary>The options to build layers with when only their shapes matter (no change to the base
    /// weights).</summary>
    public virtual MethodOptions ForShapeCheck(MethodOptions options) => options;

    /// <summary>True when injection writes into the frozen base weights it wraps (PiSSA), so they must be
    /// saved.</summary>
    public virtual bool RewritesBaseWeights(MethodOptions options) => false;

    /// <summary>The optimizer's learning-rate groups for the trainable parameters (<paramref name="options"/>: the
    /// user's, which carry library-only settings such as LoRA+'s ratio).</summary>
    public virtual IReadOnlyList<ParameterGroup> ParameterGroups(PeftModel model, MethodOptions options) => model.ParameterGroups();

    /// <summary>Changes the loaded base before injection (QLoRA quantizes its linear layers); called when a model is
    /// created for training and when model.zip is read, before the adapter is injected.</summary>
    public virtual void PrepareBase(nn.Module model, MethodOptions options, Action<string>? log) { }

    /// <summary>Keys a model saved whole (model.zip) records beside the adapter config, for settings that are not
    /// PEFT's (QLoRA's <c>quantization_config</c>); not written to adapter files.</summary>
    public virtual void WriteModelJson(MethodOptions options, JsonObject json) { }

    /// <summary>Reads what <see cref="WriteModelJson"/> wrote into the options <see cref="ReadJson"/> returned.</summary>
    public virtual MethodOptions ReadModelJson(PeftConfigJson.Reader json, MethodOptions options) => options;

    /// <summary>Writes the method's own keys of <c>adapter_config.json</c> (the common ones are written
    /// already).</summary>
    public abstract void WriteJson(MethodOptions options, JsonObject json);

    /// <summary>Reads the method's own keys; keys the file omits get the file format's (PEFT's) defaults, stated
    /// here.</summary>
    public abstract MethodOptions ReadJson(PeftConfigJson.Reader json);
}

/// <summary><see cref="PeftMethod"/> for one options record type: the overrides receive it typed.</summary>
internal abstract class PeftMethod<TOptions> : PeftMethod where TOptions : MethodOptions
{
    /// <inheritdoc/>
    public sealed override Type OptionsType => typeof(TOptions);

    /// <summary>The options cast to this method's record.</summary>
    protected static TOptions Typed(MethodOptions options) => options as TOptions
        ?? throw new ArgumentException($"Expected {typeof(TOptions).Name}, got {options.GetType().Name}.", nameof(options));
}
