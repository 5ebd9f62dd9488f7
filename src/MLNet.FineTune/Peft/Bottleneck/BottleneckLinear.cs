using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// A bottleneck adapter (Houlsby et al. 2019; Pfeiffer et al. 2021) on the output of a sub-layer's output
/// projection: h = base(x); y = h + scaling * up(act(down(h))), with down (bottleneck, out) and up (out, bottleneck),
/// bottleneck = out / reduction factor. The up-projection starts at zero, so the adapter starts as the identity and
/// the model as the base. Placing it on the attention and feed-forward output projections gives Houlsby's layout;
/// on the feed-forward output only, Pfeiffer's. Parameters: <c>adapter_down.weight/bias</c>,
/// <c>adapter_up.weight/bias</c> (this library's format, see docs/methods.md).
/// </summary>
internal sealed class BottleneckLinear : AdaptedLinear
{
#pragma warning disable IDE1006
    private readonly Linear adapter_down;   // weight (bottleneck, out)
    private readonly Linear adapter_up;     // weight (out, bottleneck), zero at start
#pragma warning restore IDE1006
    private readonly Func<Tensor, Tensor> _activation;

    /// <summary>Wraps <paramref name="baseLayer"/> (an output projection).</summary>
    /// <param name="baseLayer">The linear layer (weight and bias taken over).</param>
    /// <param name="reductionFactor">out / bottleneck size.</param>
    /// <param name="nonLinearity">"relu", "gelu", "gelu_new", "silu"/"swish" or "tanh".</param>
    /// <param name="scaling">Multiplier of the adapter's output.</param>
    /// <param name="adapterDType">Dtype of the adapter's parameters.</param>
    public BottleneckLinear(BaseLinear baseLayer, int reductionFactor, string nonLinearity = "relu", double scaling = 1.0,
        ScalarType adapterDType = ScalarType.Float32) : base(nameof(BottleneckLinear), baseLayer)
    {
        if (reductionFactor <= 0) throw new ArgumentOutOfRangeException(nameof(reductionFactor), reductionFactor, "The reduction factor must be positive.");
        long bottleneck = OutFeatures / reductionFactor;
        // A width of 0 would silently become a 1-unit adapter: say which option and layer width disagree.
        if (bottleneck < 1)
            throw new ArgumentOutOfRangeException(nameof(AdapterOptions.ReductionFactor), reductionFactor,
                $"AdapterOptions.ReductionFactor {reductionFactor} leaves no bottleneck unit on a layer with {OutFeatures} outputs " +
                $"({OutFeatures} / {reductionFactor} rounds to 0): choose a reduction factor of at most {OutFeatures}.");
        ReductionFactor = reductionFactor;
        BottleneckSize = bottleneck;
        NonLinearity = nonLinearity;
        Scaling = scaling;
        _activation = Activation(nonLinearity);
        var device = weight.device;
        adapter_down = nn.Linear(OutFeatures, bottleneck, hasBias: true, device: device, dtype: adapterDType);
        adapter_up = nn.Linear(bottleneck, OutFeatures, hasBias: true, device: device, dtype: adapterDType);
        using (no_grad())
        {
            // Near-identity start: the up-projection is zero (Houlsby et al. 2019, section 2.1).
            nn.init.zeros_(adapter_up.weight!);
            nn.init.zeros_(adapter_up.bias!);
        }
        RegisterComponents();
    }

    /// <summary>out / bottleneck.</summary>
    public int ReductionFactor { get; }
    /// <summary>The bottleneck width.</summary>
    public long BottleneckSize { get; }
    /// <summary>The activation's name.</summary>
    public string NonLinearity { get; }
    /// <summary>Multiplier of the adapter's output.</summary>
    public double Scaling { get; }

    /// <inheritdoc/>
    public override bool CanMerge => false;

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        yield return ("adapter_down.weight", adapter_down.weight!);
        yield return ("adapter_down.bias", adapter_down.bias!);
        yield return ("adapter_up.weight", adapter_up.weight!);
        yield return ("adapter_up.bias", adapter_up.bias!);
    }

    /// <inheritdoc/>
    protected override Tensor AdaptedForward(Tensor x)
    {
        var dtype = x.dtype;
        var h = BaseForward(x);                                                     // (..., out)
        var down = nn.functional.linear(h, CastTo(adapter_down.weight!, dtype), CastTo(adapter_down.bias!, dtype)); // (..., bottleneck)
        var up = nn.functional.linear(_activation(down), CastTo(adapter_up.weight!, dtype), CastTo(adapter_up.bias!, dtype)); // (..., out)
        return Scaling == 1.0 ? h + up : h + up * Scaling;
    }

    /// <inheritdoc/>
    protected override void MergeCore() => throw new NotSupportedException("A bottleneck adapter cannot be merged.");

    /// <inheritdoc/>
    protected override void UnmergeCore() { }

    /// <summary>The activation named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">Unknown name (lists the known ones).</exception>
    public static Func<Tensor, Tensor> Activation(string name) => name.ToLowerInvariant() switch
    {
        "relu" => t => nn.functional.relu(t),
        "gelu" => t => nn.functional.gelu(t),
        "gelu_new" => t => 0.5 * t * (1.0 + tanh(Math.Sqrt(2.0 / Math.PI) * (t + 0.044715 * t.pow(3)))),
        "silu" or "swish" => t => nn.functional.silu(t),
        "tanh" => t => tanh(t),
        _ => throw new ArgumentException($"Unknown bottleneck non_linearity '{name}': use relu, gelu, gelu_new, silu (swish) or tanh.", nameof(name)),
    };
}
