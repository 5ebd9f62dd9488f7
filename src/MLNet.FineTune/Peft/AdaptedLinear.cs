using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// Base of every adapter wrapper around a linear layer (nn.Linear, or GPT-2's Conv1D whose weight is stored
/// [in, out]). The wrapper takes over the base layer's own <c>weight</c> and <c>bias</c> parameters under those names,
/// so a wrapped model's state-dict keys stay <c>...query.weight</c> and a base checkpoint loads into it unchanged;
/// the adapter's parameters sit beside them (<c>lora_A.weight</c>, <c>ia3_l</c>, ...).
/// </summary>
/// <remarks>
/// A 4-bit base (<see cref="Linear4Bit"/>, QLoRA) is wrapped the same way: <c>weight</c> is then its packed codes and
/// its quantization state comes along as the child <c>weight</c> (<c>weight.absmax</c>, ...); forward, merge and
/// PiSSA dequantize it (one layer at a time) and merging re-quantizes it.
/// </remarks>
/// <remarks>
/// Mixed precision: the frozen base may be held in bfloat16 while the adapter's parameters stay float32. Forward runs
/// every matmul in one compute dtype, <see cref="ComputeDType"/>, or the input's dtype when that is null: the input,
/// the base weight and the adapter weights are cast to it inside forward (the cast is differentiable, so gradients
/// reach float32 adapter parameters). The output has the compute dtype.
/// </remarks>
public abstract class AdaptedLinear : nn.Module<Tensor, Tensor>
{
    // Field names are the state-dict names (TorchSharp names a component after its field).
#pragma warning disable IDE1006
    /// <summary>The base layer's weight: (out, in) for nn.Linear, (in, out) for Conv1D.</summary>
    protected Parameter weight;
    /// <summary>The base layer's bias (out), or null.</summary>
    protected Parameter? bias;
#pragma warning restore IDE1006

    /// <summary>Builds the wrapper from the base layer's parameters.</summary>
    protected AdaptedLinear(string name, BaseLinear baseLayer) : base(name)
    {
        weight = baseLayer.Weight;
        bias = baseLayer.Bias;
        FanInFanOut = baseLayer.FanInFanOut;
        InFeatures = baseLayer.InFeatures;
        OutFeatures = baseLayer.OutFeatures;
        BaseTypeName = baseLayer.TypeName;
        if (baseLayer.QuantState is { } state)
        {
            // Register the packed codes before the state module of the same name: RegisterComponents then skips the
            // field (its name is taken) instead of failing.
            register_parameter(nameof(weight), weight);
            register_module(nameof(weight), state);
        }
    }

    /// <summary>The base weight (shared with the model's state dict under <c>weight</c>); for a 4-bit base the packed
    /// codes (uint8).</summary>
    public Parameter Weight => weight;

    /// <summary>The base bias, or null.</summary>
    public Parameter? Bias => bias;

    /// <summary>True when the weight is stored [in, out] (GPT-2's Conv1D; PEFT's <c>fan_in_fan_out</c>).</summary>
    public bool FanInFanOut { get; }

    /// <summary>Input features of the base layer.</summary>
    public long InFeatures { get; }

    /// <summary>Output features of the base layer.</summary>
    public long OutFeatures { get; }

    /// <summary>The wrapped layer's type name ("Linear", "Conv1D").</summary>
    public string BaseTypeName { get; }

    /// <summary>The dtype every matmul of forward runs in; null: the input's dtype.</summary>
    public ScalarType? ComputeDType { get; set; }

    /// <summary>The 4-bit quantization state of the base weight, or null for a float base.</summary>
    internal Quantized4BitState? QuantState => QuantizedWeights.StateOf(this);

    /// <summary>When false, forward is the base layer alone (PEFT's <c>disable_adapter</c>); merged weights are
    /// unmerged first.</summary>
    public bool AdapterEnabled { get; set; } = true;

    /// <summary>True while the adapter is folded into the base weight (forward then runs the base layer only).</summary>
    public bool IsMerged { get; protected set; }

    /// <summary>Whether this adapter can be folded into the base weight.</summary>
    public virtual bool CanMerge => true;

    /// <summary>The adapter's own parameters, with their names relative to this module (e.g. <c>lora_A.weight</c>).</summary>
    public abstract IEnumerable<(string Name, Parameter Parameter)> AdapterParameters();

    /// <summary>Folds the adapter into the base weight (for inference).</summary>
    public void Merge()
    {
        if (IsMerged) return;
        if (!CanMerge) throw new NotSupportedException($"{GetType().Name} cannot be merged into the base weight: its function is not linear in the input.");
        using var scope = NewDisposeScope();
        using (no_grad()) MergeCore();
        IsMerged = true;
    }

    /// <summary>Restores the base weight a <see cref="Merge"/> changed.</summary>
    public void Unmerge()
    {
        if (!IsMerged) return;
        using var scope = NewDisposeScope();
        using (no_grad()) UnmergeCore();
        IsMerged = false;
    }

    /// <summary>Changes the base weight in place (called under no_grad).</summary>
    protected abstract void MergeCore();

    /// <summary>Undoes <see cref="MergeCore"/> (called under no_grad).</summary>
    protected abstract void UnmergeCore();

    /// <summary>Forward: the base layer alone when the adapter is merged or disabled, else the adapted layer.</summary>
    public sealed override Tensor forward(Tensor input)
    {
        if (!AdapterEnabled && IsMerged) Unmerge();
        var x = CastTo(input, ComputeDType ?? input.dtype);
        if (!AdapterEnabled || IsMerged) return BaseForward(x);
        return AdaptedForward(x);
    }

    /// <summary>The adapted layer; <paramref name="x"/> already has the compute dtype.</summary>
    protected abstract Tensor AdaptedForward(Tensor x);

    /// <summary>The base layer: x W^T + b, in x's dtype. // (..., in) -> (..., out)</summary>
    protected Tensor BaseForward(Tensor x)
    {
        if (QuantState is not { } state)
            return nn.functional.linear(x, WeightOutIn(x.dtype), bias is null ? null : CastTo(bias, x.dtype));
        var y = QuantizedMatmul.Apply(x, weight, state);
        return bias is null ? y : y + CastTo(bias, x.dtype);
    }

    /// <summary>x W^T without the bias, in x's dtype (a 4-bit base through <see cref="QuantizedMatmul"/>, so autograd
    /// does not keep its dequantized weight for backward). // (..., in) -> (..., out)</summary>
    protected Tensor BaseMatmul(Tensor x) =>
        QuantState is { } state ? QuantizedMatmul.Apply(x, weight, state) : nn.functional.linear(x, WeightOutIn(x.dtype));

    /// <summary>The base weight as (out, in) in <paramref name="dtype"/> (a view for Conv1D's [in, out] storage;
    /// dequantized for a 4-bit base).</summary>
    protected Tensor WeightOutIn(ScalarType dtype)
    {
        if (QuantState is { } state) return state.Dequantize(weight, dtype);
        var w = CastTo(weight, dtype);
        return FanInFanOut ? w.t() : w;
    }

    /// <summary>Transposes an (out, in) matrix into the storage layout of the base weight.</summary>
    protected Tensor ToStorageLayout(Tensor outIn) => FanInFanOut ? outIn.t() : outIn;

    /// <summary>Casts when the dtype differs (the cast is part of the autograd graph).</summary>
    protected static Tensor CastTo(Tensor t, ScalarType dtype) => t.dtype == dtype ? t : t.to_type(dtype);

    /// <summary>Overwrites the base weight in place with <paramref name="value"/> (in storage layout; converted to its
    /// dtype, or re-quantized for a 4-bit base, which loses what 4 bits cannot hold, as PEFT's 4-bit merge does).</summary>
    protected void SetWeight(Tensor value)
    {
        if (QuantState is { } state) state.Requantize(weight, value);
        else weight.copy_(value);
    }
}

/// <summary>
/// A linear layer found in a model, described independently of its class: nn.Linear (weight (out, in)) or a
/// Conv1D (weight (in, out), GPT-2's layout, recognised by its class name as PEFT does).
/// </summary>
public sealed class BaseLinear
{
    private BaseLinear(nn.Module module, Parameter weight, Parameter? bias, bool fanInFanOut, Quantized4BitState? quantState = null)
    {
        Module = module;
        Weight = weight;
        Bias = bias;
        FanInFanOut = fanInFanOut;
        QuantState = quantState;
        var shape = quantState?.Shape ?? (fanInFanOut ? [weight.shape[1], weight.shape[0]] : weight.shape);   // (out, in)
        InFeatures = shape[1];
        OutFeatures = shape[0];
    }

    /// <summary>The module itself.</summary>
    public nn.Module Module { get; }
    /// <summary>Its weight parameter (for a 4-bit layer, the packed codes).</summary>
    public Parameter Weight { get; }
    /// <summary>The 4-bit state of a <see cref="Linear4Bit"/>, else null.</summary>
    internal Quantized4BitState? QuantState { get; }
    /// <summary>The dtype of the weight's values: the parameter's, or for a 4-bit layer the dtype it was quantized from.</summary>
    public ScalarType WeightDType => QuantState?.DType ?? Weight.dtype;
    /// <summary>Its bias parameter, or null.</summary>
    public Parameter? Bias { get; }
    /// <summary>True for Conv1D's [in, out] storage.</summary>
    public bool FanInFanOut { get; }
    /// <summary>Input features.</summary>
    public long InFeatures { get; }
    /// <summary>Output features.</summary>
    public long OutFeatures { get; }
    /// <summary>The module's class name.</summary>
    public string TypeName => Module.GetType().Name;

    /// <summary>Recognises nn.Linear, Conv1D (a class named "Conv1D" holding exactly a 2-D <c>weight</c> [in, out]
    /// and an optional <c>bias</c> [out]) and <see cref="Linear4Bit"/>; returns null for anything else.</summary>
    public static BaseLinear? TryCreate(nn.Module module)
    {
        if (module is AdaptedLinear) return null;
        if (module is Linear4Bit quantized) return new BaseLinear(module, quantized.Weight, quantized.Bias, fanInFanOut: false, quantized.State);
        bool isLinear = module is Linear;
        bool isConv1D = module.GetType().Name == "Conv1D";
        if (!isLinear && !isConv1D) return null;
        if (module.named_children().Any()) return null;
        var parameters = module.named_parameters(recurse: false).ToDictionary(p => p.name, p => p.parameter);
        if (!parameters.TryGetValue("weight", out var weight) || weight.dim() != 2) return null;
        parameters.TryGetValue("bias", out var bias);
        if (parameters.Keys.Any(k => k is not ("weight" or "bias"))) return null;
        long outFeatures = isConv1D ? weight.shape[1] : weight.shape[0];
        if (bias is not null && (bias.dim() != 1 || bias.shape[0] != outFeatures)) return null;
        return new BaseLinear(module, weight, bias, fanInFanOut: isConv1D);
    }
}

/// <summary>
/// A linear layer of a module to save (the task head) over a 16-bit base: its weight and bias are kept in the adapter
/// dtype (float32) and train in full, while forward runs in the compute dtype like the adapters. Keys are unchanged
/// (<c>classifier.weight</c>). Without it the head would train in bfloat16, where small updates round away.
/// </summary>
internal sealed class TrainedLinear : AdaptedLinear
{
    /// <summary>Takes over <paramref name="baseLayer"/>'s parameters, converted to <paramref name="dtype"/>.</summary>
    public TrainedLinear(BaseLinear baseLayer, ScalarType dtype) : base(nameof(TrainedLinear), baseLayer)
    {
        using (no_grad())
        {
            weight = new Parameter(weight.to_type(dtype), requires_grad: true);
            if (bias is not null) bias = new Parameter(bias.to_type(dtype), requires_grad: true);
        }
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> AdapterParameters() => [];

    /// <inheritdoc/>
    protected override Tensor AdaptedForward(Tensor x) => BaseForward(x);

    /// <inheritdoc/>
    protected override void MergeCore() { }

    /// <inheritdoc/>
    protected override void UnmergeCore() { }
}
