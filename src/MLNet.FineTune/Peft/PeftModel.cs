using System.Globalization;
using MLNet.FineTune.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>Run-time choices that are not part of an adapter's file.</summary>
public sealed record PeftOptions
{
    /// <summary>The model family (<c>model_type</c>) for default targets; null: the model's own (IPretrainedModel).</summary>
    public string? ModelType { get; init; }

    /// <summary>The task head's top-level modules, always trained and saved; null: the model's own (IPretrainedModel).</summary>
    public IReadOnlyList<string>? HeadModuleNames { get; init; }

    /// <summary>Dtype of new adapter parameters; null: float32 over a 16-bit base (as PEFT's autocast_adapter_dtype),
    /// else the base weight's dtype.</summary>
    public ScalarType? AdapterDType { get; init; }

    /// <summary>Dtype of every adapted layer's matmuls; null: the input's dtype (see <see cref="AdaptedLinear"/>).</summary>
    public ScalarType? ComputeDType { get; init; }
}

/// <summary>Parameter counts, as PEFT's print_trainable_parameters reports them.</summary>
/// <param name="Trainable">Parameters that receive gradients.</param>
/// <param name="Total">All parameters (shared ones once).</param>
public sealed record TrainableParameterCount(long Trainable, long Total)
{
    /// <summary>100 * trainable / total.</summary>
    public double Percent => Total == 0 ? 0 : 100.0 * Trainable / Total;

    /// <summary>PEFT's line: "trainable params: 296,450 || all params: 109,780,228 || trainable%: 0.2700".</summary>
    public override string ToString() => string.Format(CultureInfo.InvariantCulture,
        "trainable params: {0:N0} || all params: {1:N0} || trainable%: {2:F4}", Trainable, Total, Percent);
}

/// <summary>
/// A model with an adapter injected: the frozen base, the adapter layers (by module path), the modules trained in
/// full (task head), and the adapter's operations (save/load in PEFT's format, merge, parameter groups).
/// </summary>
public sealed class PeftModel
{
    /// <summary>PEFT's prefix of every key in <c>adapter_model.safetensors</c>.</summary>
    public const string KeyPrefix = "base_model.model.";

    private readonly Dictionary<string, AdaptedLinear> _layers;

    private PeftModel(nn.Module model, MethodOptions config, Dictionary<string, AdaptedLinear> layers, IReadOnlyList<string> savedModules)
    {
        Model = model;
        Config = config;
        _layers = layers;
        SavedModules = savedModules;
    }

    /// <summary>The model (changed in place by injection).</summary>
    public nn.Module Model { get; }

    /// <summary>The config as resolved against the model (targets, modules_to_save, task type, fan_in_fan_out):
    /// what <see cref="SaveAdapter"/> writes.</summary>
    public MethodOptions Config { get; }

    /// <summary>The adapter layers by module path.</summary>
    public IReadOnlyDictionary<string, AdaptedLinear> Layers => _layers;

    /// <summary>Paths of the modules trained in full and saved with the adapter (modules_to_save).</summary>
    public IReadOnlyList<string> SavedModules { get; }

    /// <summary>Adapts <paramref name="model"/> in place: wraps the targeted linear layers, freezes everything else
    /// except the modules to save (the task head), and returns the handle.</summary>
    /// <exception cref="ArgumentException">Nothing matched the targets (lists the model's linear layers), or a
    /// matched module is not a linear layer, or no default targets exist for the model family.</exception>
    /// <exception cref="InvalidOperationException">The model already holds an adapter.</exception>
    public static PeftModel Inject(nn.Module model, MethodOptions config, PeftOptions? options = null)
    {
        Runtime.TorchRuntime.EnsureLoaded();
        options ??= new PeftOptions();
        CheckHoldsNoAdapter(model);
        var (resolved, layers, saved) = AdapterInjector.Inject(model, config, options);
        var peft = new PeftModel(model, resolved, layers, saved);
        if (options.ComputeDType is { } dtype) peft.ComputeDType = dtype;
        return peft;
    }

    /// <summary>True while every adapter is folded into its base weight.</summary>
    public bool IsMerged => _layers.Count > 0 && _layers.Values.All(l => l.IsMerged);

    /// <summary>Folds every adapter into its base weight (LoRA, rsLoRA, DoRA, IA3); forward then costs what the base does.</summary>
    /// <exception cref="NotSupportedException">Bottleneck adapters cannot be merged.</exception>
    public void Merge()
    {
        var notMergeable = _layers.FirstOrDefault(l => !l.Value.CanMerge);
        if (notMergeable.Value is not null)
            throw new NotSupportedException($"{Config.PeftType} adapters cannot be merged into the base weights ('{notMergeable.Key}' is a {notMergeable.Value.GetType().Name}).");
        foreach (var layer in _layers.Values) layer.Merge();
    }

    /// <summary>Restores the base weights after <see cref="Merge"/>.</summary>
    public void Unmerge()
    {
        foreach (var layer in _layers.Values) layer.Unmerge();
    }

    /// <summary>False runs the base model alone (PEFT's disable_adapter); merged weights are unmerged on the next forward.</summary>
    public bool AdaptersEnabled
    {
        get => _layers.Values.All(l => l.AdapterEnabled);
        set { foreach (var l in _layers.Values) l.AdapterEnabled = value; }
    }

    /// <summary>The compute dtype of every adapter layer and float32-kept head layer (null: the input's dtype).</summary>
    public ScalarType? ComputeDType
    {
        get => _layers.Values.Select(l => l.ComputeDType).FirstOrDefault();
        set { foreach (var l in Model.modules().OfType<AdaptedLinear>()) l.ComputeDType = value; }
    }

    /// <summary>The parameters that train, with their state-dict names.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        Model.named_parameters().Where(p => p.parameter.requires_grad);

    /// <summary>Counts trainable and all parameters (print_trainable_parameters).</summary>
    public TrainableParameterCount CountParameters()
    {
        long trainable = 0, total = 0;
        foreach (var (_, p) in Model.named_parameters())
        {
            // A 4-bit weight's packed codes hold two values per byte (PEFT counts bitsandbytes' Params4bit the same way).
            total += p.dtype == ScalarType.Byte ? 2 * p.numel() : p.numel();
            if (p.requires_grad) trainable += p.numel();
        }
        return new TrainableParameterCount(trainable, total);
    }

    /// <summary>Learning-rate groups for the trainable parameters; with <paramref name="loraPlusRatio"/> &gt; 1, LoRA+.
    /// The training layer decides weight decay (<c>Training.ParameterGroups.FromGroups</c>).</summary>
    public IReadOnlyList<ParameterGroup> ParameterGroups(double loraPlusRatio = 1.0) =>
        OptimizerParameterGroups.Create(Model, loraPlusRatio);

    /// <summary>
    /// The tensors an adapter file holds, keyed as PEFT keys them: <c>base_model.model.&lt;path&gt;.lora_A.weight</c>
    /// (the adapter name "default" stripped), <c>...lora_magnitude_vector</c>, <c>...ia3_l</c>, the modules to save
    /// under their own names (<c>base_model.model.classifier.weight</c>), and trained biases (an adapted layer's as
    /// <c>...base_layer.bias</c>). The values are the live tensors, not copies.
    /// </summary>
    public Dictionary<string, Tensor> AdapterStateDict()
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (path, layer) in _layers)
            foreach (var (name, p) in layer.AdapterParameters())
                result[KeyPrefix + path + "." + name] = p;
        foreach (var path in SavedModules)
            foreach (var (name, t) in ModuleSurgery.Get(Model, path).state_dict())
                result[KeyPrefix + path + "." + name] = t;
        foreach (var (name, tensor) in PeftMethods.For(Config).ExtraAdapterState(Model, Config, _layers))
            result.TryAdd(KeyPrefix + name, tensor);
        return result;
    }

    /// <summary>Writes the adapter in PEFT's format: <c>adapter_config.json</c> and <c>adapter_model.safetensors</c>
    /// (bottleneck adapters: this library's format, same two files). Merged weights do not matter: the adapter's
    /// own parameters are saved.</summary>
    /// <exception cref="NotSupportedException">Full fine-tuning has no adapter.</exception>
    /// <remarks>Both files are written into a temporary folder beside <paramref name="folder"/> and then moved in,
    /// the config last (after the old config is removed), so a failed save leaves an existing adapter as it was and
    /// never new weights beside an old config (<see cref="Runtime.AtomicFile.WriteFileSet"/>).</remarks>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="extraFiles">Text files written with the adapter (name to content), e.g. what a task records about
    /// its head; PEFT reads only its own two files.</param>
    public void SaveAdapter(string folder, IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var json = PeftConfigJson.Write(Config with { InferenceMode = true });
        Runtime.AtomicFile.WriteFileSet(folder, PeftConfigJson.FileName, temp =>
        {
            foreach (var (name, text) in extraFiles ?? new Dictionary<string, string>())
                File.WriteAllText(Path.Combine(temp, name), text);
            Checkpoints.SafeTensors.Save(Path.Combine(temp, PeftAdapterFile.WeightsFileName), AdapterStateDict(),
                new Dictionary<string, string> { ["format"] = "pt" });
            File.WriteAllText(Path.Combine(temp, PeftConfigJson.FileName), json);
        });
    }

    /// <summary>Loads an adapter saved by PEFT or by <see cref="SaveAdapter"/> into <paramref name="model"/>:
    /// checks that every key and shape of the file fits the adapter its config describes on this model, then injects
    /// the config's targets and copies the weights. A file that does not fit leaves the model unchanged.</summary>
    /// <param name="model">The base model (a fresh one, without an adapter).</param>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="options">Run-time options.</param>
    /// <param name="trainable">Keep the adapter trainable (to continue training); false freezes everything (PEFT's
    /// default, inference).</param>
    /// <exception cref="InvalidDataException">A key of the file does not fit the model (names the first one: a module
    /// the model lacks, or a shape that differs), or the file lacks a tensor the config calls for.</exception>
    /// <exception cref="InvalidOperationException">The model already holds an adapter.</exception>
    public static PeftModel LoadAdapter(nn.Module model, string folder, PeftOptions? options = null, bool trainable = false)
    {
        Runtime.TorchRuntime.EnsureLoaded();
        options ??= new PeftOptions();
        // Files say inference_mode = true (PEFT writes that); the caller decides whether the adapter trains on.
        var config = PeftConfigJson.Read(folder) with { InferenceMode = !trainable };
        var tensors = PeftAdapterFile.ReadWeights(folder);
        try
        {
            CheckHoldsNoAdapter(model);
            PeftAdapterFile.CheckPathsFit(model, tensors.Keys, folder);
            CheckShapesFit(model, config, options, tensors, folder);
            var peft = Inject(model, config, options);
            PeftAdapterFile.CopyInto(peft.AdapterStateDict(), tensors, folder);
            return peft;
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    private static void CheckHoldsNoAdapter(nn.Module model)
    {
        var existing = model.named_modules().FirstOrDefault(m => m.module is AdaptedLinear);
        if (existing.module is not null)
            throw new InvalidOperationException($"The model already holds an adapter (at '{existing.name}'); one adapter per model is supported. Merge or load into a fresh model.");
    }

    // The adapter's shapes depend on the config (rank per module) and on the model (layer widths): build the layers
    // the config describes without placing them, compare, and drop them, so a mismatch fails before the model changes.
    // Initialisations that rewrite the base weights (PiSSA) are swapped for one that does not: shapes do not depend on it.
    private static void CheckShapesFit(nn.Module model, MethodOptions config, PeftOptions options, IReadOnlyDictionary<string, Tensor> tensors, string source)
    {
        var shapeConfig = PeftMethods.For(config).ForShapeCheck(config);
        var (resolved, layers, saved) = AdapterInjector.Prepare(model, shapeConfig, options);
        try
        {
            PeftAdapterFile.CheckFits(new PeftModel(model, resolved, layers, saved).AdapterStateDict(), tensors, source);
        }
        finally
        {
            // Only the adapter's own tensors: the layers share the model's base weight and bias.
            foreach (var layer in layers.Values)
                foreach (var (_, p) in layer.AdapterParameters()) p.Dispose();
        }
    }
}
