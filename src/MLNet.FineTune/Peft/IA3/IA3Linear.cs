using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// (IA)^3 around a linear layer (Liu et al. 2022): a learned vector <c>ia3_l</c> rescales the layer's output
/// (keys, values: shape (out, 1)), or, for feed-forward modules, its input (shape (1, in)), as PEFT defines them.
/// Initialised to ones, so the adapted model starts equal to the base.
/// </summary>
internal sealed class IA3Linear : AdaptedLinear
{
#pragma warning disable IDE1006
    private Parameter ia3_l;            // (out, 1), or (1, in) for a feed-forward module
#pragma warning restore IDE1006

    /// <summary>Wraps <paramref name="baseLayer"/>.</summary>
    /// <param name="baseLayer">The linear layer (weight and bias taken over).</param>
    /// <param name="isFeedforward">Scale the input (feed-forward modules) instead of the output.</param>
    /// <param name="initOnes">Start at ones (PEFT's init_ia3_weights); false draws N(0, 1) as PEFT does.</param>
    /// <param name="adapterDType">Dtype of <c>ia3_l</c>.</param>
    public IA3Linear(BaseLinear baseLayer, bool isFeedforward, bool initOnes = true, ScalarType adapterDType = ScalarType.Float32)
        : base(nameof(IA3Linear), baseLayer)
    {
        IsFeedforward = isFeedforward;
        long[] shape = isFeedforward ? [1, InFeatures] : [OutFeatures, 1];
        var init = initOnes ? ones(shape, adapterDType, weight.device) : randn(shape, adapterDType, weight.device);
        ia3_l = new Parameter(init, requires_grad: true);
        RegisterComponents();
    }

    /// <summary>True when the input, not the output, is scaled.</summary>
    public bool IsFeedforward { get; }

    /// <summary>The scaling vector: (out, 1), or (1, in) for feed-forward modules.</summary>
    public Parameter Scale => ia3_l;

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        yield return ("ia3_l", ia3_l);
    }

    /// <inheritdoc/>
    protected override Tensor AdaptedForward(Tensor x)
    {
        var scale = CastTo(ia3_l, x.dtype).flatten();
        return IsFeedforward
            ? BaseForward(x * scale)                                                // (..., in) * (in)
            : BaseForward(x) * scale;                                               // (..., out) * (out)
    }

    // The vector laid out to multiply the stored weight: rows (out) or columns (in) of W (out, in); transposed for
    // Conv1D's [in, out].
    private Tensor WeightScale(ScalarType dtype) => ToStorageLayout(CastTo(ia3_l, dtype));

    /// <inheritdoc/>
    protected override void MergeCore()
    {
        SetWeight(ToStorageLayout(WeightOutIn(ScalarType.Float32)) * WeightScale(ScalarType.Float32));
        if (!IsFeedforward && bias is not null)
            bias.copy_(bias.to_type(ScalarType.Float32) * ia3_l.to_type(ScalarType.Float32).reshape(bias.shape));
    }

    /// <inheritdoc/>
    /// <remarks>Division undoes the merge only approximately (PEFT adds 1e-8 to avoid dividing by zero, as here).</remarks>
    protected override void UnmergeCore()
    {
        SetWeight(ToStorageLayout(WeightOutIn(ScalarType.Float32)) / (WeightScale(ScalarType.Float32) + 1e-8));
        if (!IsFeedforward && bias is not null)
            bias.copy_(bias.to_type(ScalarType.Float32) / (ia3_l.to_type(ScalarType.Float32).reshape(bias.shape) + 1e-8));
    }
}
