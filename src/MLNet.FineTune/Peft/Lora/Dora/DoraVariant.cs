using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// DoRA (Liu et al. 2024) as a LoRA variant: a learned magnitude per output row, <c>lora_magnitude_vector</c> (out),
/// times the direction of W + scaling * B A, whose norm is treated as a constant (detached) as the paper's section 4.3
/// and PEFT do.
/// </summary>
internal sealed class DoraVariant : ILoraVariant
{
    // The row norm of W + delta taken at merge time; unmerge needs that exact value.
    private Tensor? _mergedNorm;

    /// <inheritdoc/>
    public Parameter? CreateParameter(LoraLinear layer, ScalarType adapterDType) =>
        new(RowNorm(layer.BaseWeightOutIn(ScalarType.Float32), layer.DeltaOutIn(ScalarType.Float32)).to_type(adapterDType), requires_grad: true);

    /// <inheritdoc/>
    public Tensor Forward(LoraLinear layer, Tensor x, Tensor result, Tensor a, Tensor b)
    {
        // The magnitude over the (detached) row norm of W + scaling * B A rescales each output; the base path without
        // bias is reused when dropout is off, else recomputed on the dropped-out input (as PEFT does).
        var dtype = x.dtype;
        Tensor weightNorm;                                                          // (out)
        using (var scope = NewDisposeScope())
        {
            // The (out, in) temporaries go at once, not at the end of the step (a 4-bit base's dequantized weight too).
            var w = layer.BaseWeightOutIn(dtype);                                   // (out, in)
            weightNorm = RowNorm(w, b.matmul(a).detach() * layer.Scaling).detach().MoveToOuterDisposeScope();
        }
        var magNormScale = (Cast(layer.MagnitudeVector!, dtype) / weightNorm).view(1, -1);
        Tensor baseResult, xLora;
        if (layer.Dropout == 0 || !layer.training)
        {
            xLora = x;
            baseResult = layer.Bias is null ? result : result - Cast(layer.Bias, dtype);
        }
        else
        {
            xLora = layer.DropoutForward(x);
            baseResult = layer.BaseMatmulFor(xLora);
        }
        var loraResult = nn.functional.linear(nn.functional.linear(xLora, a), b);
        return result + ((magNormScale - 1) * baseResult + magNormScale * loraResult * layer.Scaling);
    }

    /// <inheritdoc/>
    public Tensor Merge(LoraLinear layer, Tensor weightOutIn, Tensor delta)
    {
        var norm = RowNorm(weightOutIn, delta);                                     // (out)
        _mergedNorm = norm.DetachFromDisposeScope();
        var factor = layer.MagnitudeVector!.to_type(ScalarType.Float32) / norm;
        return factor.view(-1, 1) * (weightOutIn + delta);
    }

    /// <inheritdoc/>
    public Tensor Unmerge(LoraLinear layer, Tensor mergedOutIn, Tensor delta)
    {
        var norm = _mergedNorm ?? throw new InvalidOperationException("DoRA unmerge without a merge.");
        _mergedNorm = null;
        var factor = layer.MagnitudeVector!.to_type(ScalarType.Float32) / norm;
        var original = mergedOutIn / factor.view(-1, 1) - delta;
        norm.Dispose();
        return original;
    }

    // L2 norm of each output row of W + delta. // (out)
    private static Tensor RowNorm(Tensor weightOutIn, Tensor deltaOutIn) =>
        linalg.vector_norm(weightOutIn + deltaOutIn, 2, dims: [1]);

    private static Tensor Cast(Tensor t, ScalarType dtype) => t.dtype == dtype ? t : t.to_type(dtype);
}
