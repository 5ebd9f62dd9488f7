using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// x W^T for a 4-bit W (bitsandbytes' <c>MatMul4Bit</c>): W is dequantized to x's dtype for the matmul and dropped at
/// once, and dequantized again in backward for the input's gradient, so training holds one layer's full-precision
/// weight at a time instead of keeping every layer's for backward. W gets no gradient (it is frozen).
/// </summary>
internal sealed class QuantizedMatmul : autograd.SingleTensorFunction<QuantizedMatmul>
{
    /// <summary>The packed codes and state of one weight (held by reference until backward).</summary>
    public sealed record Weight(Parameter Packed, Quantized4BitState State);

    /// <inheritdoc/>
    public override string Name => nameof(QuantizedMatmul);

    /// <summary>x W^T. // (..., in) -> (..., out)</summary>
    public static Tensor Apply(Tensor x, Parameter packed, Quantized4BitState state)
    {
        if (!is_grad_enabled() || !x.requires_grad) return Multiply(x, new Weight(packed, state));
        return apply(x, new Weight(packed, state));
    }

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Weight)vars[1];
        ctx.save_data(nameof(Weight), weight);
        return Multiply(x, weight);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (Weight)ctx.get_data(nameof(Weight));
        using var w = weight.State.Dequantize(weight.Packed, gradOutput.dtype);          // (out, in)
        return [gradOutput.matmul(w), null!];                                             // (..., in)
    }

    private static Tensor Multiply(Tensor x, Weight weight)
    {
        using var w = weight.State.Dequantize(weight.Packed, x.dtype);                    // (out, in)
        return nn.functional.linear(x, w);
    }
}
