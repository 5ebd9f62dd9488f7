using MLNet.FineTune.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// LoRA around a linear layer (Hu et al. 2021): y = base(x) + B(A(dropout(x))) * scaling, with
/// <c>lora_A.weight</c> (r, in) and <c>lora_B.weight</c> (out, r) as PEFT spells them. scaling = alpha / r, or
/// alpha / sqrt(r) for rsLoRA (Kalajdzievski 2023). With <see cref="UseDora"/> the layer is DoRA (Liu et al. 2024), a
/// variant (<see cref="ILoraVariant"/>, Peft/Lora/Dora) that adds <c>lora_magnitude_vector</c> (out).
/// </summary>
internal sealed class LoraLinear : AdaptedLinear
{
#pragma warning disable IDE1006
    private readonly Linear lora_A;            // weight (r, in)
    private readonly Linear lora_B;            // weight (out, r)
    private readonly nn.Module<Tensor, Tensor> lora_dropout;
    private Parameter? lora_magnitude_vector;  // (out), DoRA only
#pragma warning restore IDE1006

    // The variant's computation (DoRA), or null for plain LoRA. Not a module or tensor field: TorchSharp registers
    // those as components.
    private readonly ILoraVariant? _variant;

    /// <summary>Wraps <paramref name="baseLayer"/> with a LoRA adapter initialised as <paramref name="init"/> says.</summary>
    /// <param name="baseLayer">The linear layer to adapt (its weight and bias are taken over, not copied).</param>
    /// <param name="rank">r, the rank of the update.</param>
    /// <param name="alpha">lora_alpha.</param>
    /// <param name="dropout">Dropout on the input of the LoRA path.</param>
    /// <param name="useRsLora">scaling = alpha / sqrt(r) instead of alpha / r.</param>
    /// <param name="useDora">Weight-decomposed LoRA (adds <c>lora_magnitude_vector</c>).</param>
    /// <param name="init">How A and B start (PiSSA also replaces the base weight by its residual).</param>
    /// <param name="adapterDType">Dtype of the adapter's parameters.</param>
    public LoraLinear(BaseLinear baseLayer, int rank, double alpha, double dropout = 0, bool useRsLora = false,
        bool useDora = false, LoraInit init = LoraInit.Default, ScalarType adapterDType = ScalarType.Float32)
        : base(nameof(LoraLinear), baseLayer)
    {
        if (rank <= 0) throw new ArgumentOutOfRangeException(nameof(rank), rank, "LoRA rank r must be a positive integer.");
        if (dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "LoRA dropout must be in [0, 1).");
        Rank = rank;
        Alpha = alpha;
        UseRsLora = useRsLora;
        _variant = useDora ? new DoraVariant() : null;
        Dropout = dropout;
        Scaling = useRsLora ? alpha / Math.Sqrt(rank) : alpha / rank;

        var device = weight.device;
        lora_A = nn.Linear(InFeatures, rank, hasBias: false, device: device, dtype: adapterDType);
        lora_B = nn.Linear(rank, OutFeatures, hasBias: false, device: device, dtype: adapterDType);
        lora_dropout = new InvertedDropout(dropout);
        using (no_grad())
        {
            Initialise(init);
            lora_magnitude_vector = _variant?.CreateParameter(this, adapterDType);
        }
        RegisterComponents();
    }

    /// <summary>r.</summary>
    public int Rank { get; }
    /// <summary>lora_alpha.</summary>
    public double Alpha { get; }
    /// <summary>alpha / r, or alpha / sqrt(r) with rsLoRA.</summary>
    public double Scaling { get; }
    /// <summary>rsLoRA scaling.</summary>
    public bool UseRsLora { get; }
    /// <summary>DoRA.</summary>
    public bool UseDora => _variant is DoraVariant;
    /// <summary>Dropout probability on the LoRA path's input.</summary>
    public double Dropout { get; }

    /// <summary>A: (r, in).</summary>
    public Parameter LoraA => lora_A.weight!;
    /// <summary>B: (out, r).</summary>
    public Parameter LoraB => lora_B.weight!;
    /// <summary>DoRA's magnitude (out), or null.</summary>
    public Parameter? MagnitudeVector => lora_magnitude_vector;

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        yield return ("lora_A.weight", LoraA);
        yield return ("lora_B.weight", LoraB);
        if (lora_magnitude_vector is not null) yield return ("lora_magnitude_vector", lora_magnitude_vector);
    }

    private void Initialise(LoraInit init)
    {
        switch (init)
        {
            case LoraInit.Default:
                // A as nn.Linear's default, B = 0: the adapter starts as the identity update (microsoft/LoRA).
                nn.init.kaiming_uniform_(LoraA, a: Math.Sqrt(5));
                nn.init.zeros_(LoraB);
                break;
            case LoraInit.Gaussian:
                nn.init.normal_(LoraA, std: 1.0 / Rank);
                nn.init.zeros_(LoraB);
                break;
            case LoraInit.PiSSA:
                InitialisePiSSA();
                break;
            case LoraInit.Random:
                // Leave nn.Linear's own initialisation of both (PEFT's init_lora_weights=False): B is non-zero, so the
                // adapter changes the output from the start (tests use this).
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(init), init, "Unknown LoRA initialisation.");
        }
    }

    // PiSSA (Meng et al. 2024): A and B from the r principal singular triplets of W, scaled so that
    // scaling * B A equals the principal part; the base keeps the residual W - scaling * B A.
    private void InitialisePiSSA()
    {
        using var scope = NewDisposeScope();
        var w = WeightOutIn(ScalarType.Float32);                                   // (out, in)
        var (u, s, vh) = linalg.svd(w, fullMatrices: false);                        // u (out, k), s (k), vh (k, in)
        var ur = u[.., ..Rank];
        var sr = s[..Rank] / Scaling;
        var vhr = vh[..Rank];
        var sqrtS = sr.sqrt();
        var a = sqrtS.unsqueeze(1) * vhr;                                           // diag(sqrt S) Vh: (r, in)
        var b = ur * sqrtS.unsqueeze(0);                                            // U diag(sqrt S): (out, r)
        LoraA.copy_(a);
        LoraB.copy_(b);
        var residual = w - Scaling * b.matmul(a);
        SetWeight(ToStorageLayout(residual));
    }

    /// <inheritdoc/>
    protected override Tensor AdaptedForward(Tensor x)
    {
        var dtype = x.dtype;
        var result = BaseForward(x);                                                // (..., out)
        var a = CastTo(LoraA, dtype);
        var b = CastTo(LoraB, dtype);
        if (_variant is not null) return _variant.Forward(this, x, result, a, b);
        return result + nn.functional.linear(nn.functional.linear(lora_dropout.forward(x), a), b) * Scaling;
    }

    /// <summary>The base weight as (out, in) in <paramref name="dtype"/> (for the variant).</summary>
    internal Tensor BaseWeightOutIn(ScalarType dtype) => WeightOutIn(dtype);

    /// <summary>x W^T of the base without bias (for the variant).</summary>
    internal Tensor BaseMatmulFor(Tensor x) => BaseMatmul(x);

    /// <summary>Dropout on the LoRA path's input (for the variant).</summary>
    internal Tensor DropoutForward(Tensor x) => lora_dropout.forward(x);

    /// <summary>scaling * B A as (out, in) in <paramref name="dtype"/>.</summary>
    public Tensor DeltaOutIn(ScalarType dtype) => CastTo(LoraB, dtype).matmul(CastTo(LoraA, dtype)) * Scaling;

    /// <inheritdoc/>
    protected override void MergeCore()
    {
        // Merge in float32 (low-precision bases would lose the small update otherwise), then store in the base dtype.
        var w = WeightOutIn(ScalarType.Float32);
        var delta = DeltaOutIn(ScalarType.Float32);
        var merged = _variant?.Merge(this, w, delta) ?? w + delta;
        SetWeight(ToStorageLayout(merged));
    }

    /// <inheritdoc/>
    protected override void UnmergeCore()
    {
        var w = WeightOutIn(ScalarType.Float32);
        var delta = DeltaOutIn(ScalarType.Float32);
        var original = _variant?.Unmerge(this, w, delta) ?? w - delta;
        SetWeight(ToStorageLayout(original));
    }
}
