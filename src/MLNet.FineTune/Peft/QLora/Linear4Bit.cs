using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// A linear layer whose frozen weight is stored in 4 bits (bitsandbytes' <c>Linear4bit</c>): forward dequantizes the
/// weight to the input's dtype for the matmul, one layer at a time. State-dict keys: <c>weight</c> (the packed codes),
/// <c>weight.absmax</c>, <c>weight.quant_map</c>, ... (see <see cref="Quantized4BitState"/>) and <c>bias</c> (kept in
/// the model's dtype). A valid base for LoRA and DoRA: injection wraps it like an nn.Linear.
/// </summary>
internal sealed class Linear4Bit : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private Parameter weight;      // uint8 (ceil(out*in/2), 1), frozen
    private Parameter? bias;       // (out)
#pragma warning restore IDE1006

    /// <summary>Quantizes <paramref name="weightOutIn"/> (out, in); <paramref name="bias"/> is kept as it is.</summary>
    public Linear4Bit(Tensor weightOutIn, Parameter? bias, FourBitQuantization options) : base(nameof(Linear4Bit))
    {
        (weight, var state) = Quantized4BitState.Quantize(weightOutIn, options);
        this.bias = bias;
        // "weight" names both the packed codes and the state module (keys weight, weight.absmax, ...): register the
        // parameter first, since RegisterComponents skips a field whose name is already taken.
        register_parameter(nameof(weight), weight);
        register_module(nameof(weight), state);
        RegisterComponents();
    }

    /// <summary>The packed codes.</summary>
    public Parameter Weight => weight;
    /// <summary>The bias, or null.</summary>
    public Parameter? Bias => bias;
    /// <summary>The quantization state.</summary>
    public Quantized4BitState State => QuantizedWeights.StateOf(this)!;
    /// <summary>Input features.</summary>
    public long InFeatures => State.Shape[1];
    /// <summary>Output features.</summary>
    public long OutFeatures => State.Shape[0];

    /// <summary>x W^T + b in x's dtype. // (..., in) -> (..., out)</summary>
    public override Tensor forward(Tensor input)
    {
        var y = QuantizedMatmul.Apply(input, weight, State);
        return bias is null ? y : y + (bias.dtype == y.dtype ? bias : bias.to_type(y.dtype));
    }

    /// <summary>The (out, in) weight dequantized to <paramref name="dtype"/>.</summary>
    public Tensor DequantizedWeight(ScalarType dtype) => State.Dequantize(weight, dtype);
}

/// <summary>Finds and creates 4-bit weights in a model.</summary>
internal static class QuantizedWeights
{
    /// <summary>The 4-bit state registered as child <c>weight</c> of <paramref name="layer"/>, or null when its weight is
    /// not quantized.</summary>
    public static Quantized4BitState? StateOf(nn.Module layer) =>
        layer.named_children().FirstOrDefault(c => c.name == "weight").module as Quantized4BitState;
}
