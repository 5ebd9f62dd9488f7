using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// The quantization state of one 4-bit weight, registered as a child module named <c>weight</c> of the layer that owns
/// the packed codes, so that the layer's state-dict keys are bitsandbytes' (<c>Params4bit</c> / <c>QuantState</c>):
/// <list type="table">
/// <item><term><c>weight</c></term><description>uint8 (ceil(n/2), 1): two 4-bit codes per byte, first in the high nibble
/// (a frozen parameter of the owning layer).</description></item>
/// <item><term><c>weight.absmax</c></term><description>per block of <see cref="BlockSize"/> values: uint8 codes with
/// double quantization, else float32.</description></item>
/// <item><term><c>weight.quant_map</c></term><description>float32 (16): the NF4 or FP4 code values.</description></item>
/// <item><term><c>weight.nested_absmax</c></term><description>float32, one per 256 block maxima (double quantization).</description></item>
/// <item><term><c>weight.nested_quant_map</c></term><description>float32 (256): the 8-bit dynamic map (double quantization).</description></item>
/// <item><term><c>weight.nested_offset</c></term><description>float32 scalar: the mean subtracted from the block maxima
/// (bitsandbytes keeps it in the JSON entry <c>quant_state.bitsandbytes__nf4</c>, which is not written here: shape,
/// block size and type follow from the config and the quantization options).</description></item>
/// </list>
/// The float32 tensors keep their dtype when the model is converted with <c>to(dtype)</c>; device moves apply.
/// </summary>
internal sealed class Quantized4BitState : nn.Module
{
    // Field names are the state-dict names under the owner's "weight." prefix.
#pragma warning disable IDE1006
    private Tensor absmax;
    private Tensor quant_map;
    private Tensor? nested_absmax;
    private Tensor? nested_quant_map;
    private Tensor? nested_offset;
#pragma warning restore IDE1006

    private Quantized4BitState(Tensor absmax, Tensor quantMap, Tensor? nestedAbsmax, Tensor? nestedQuantMap, Tensor? nestedOffset,
        FourBitType type, int blockSize, long[] shape, ScalarType dtype) : base(nameof(Quantized4BitState))
    {
        this.absmax = absmax;
        quant_map = quantMap;
        nested_absmax = nestedAbsmax;
        nested_quant_map = nestedQuantMap;
        nested_offset = nestedOffset;
        QuantType = type;
        BlockSize = blockSize;
        Shape = shape;
        DType = dtype;
        RegisterComponents();
    }

    /// <summary>NF4 or FP4.</summary>
    public FourBitType QuantType { get; }
    /// <summary>Values per absmax block.</summary>
    public int BlockSize { get; }
    /// <summary>The weight's (out, in) shape.</summary>
    public long[] Shape { get; }
    /// <summary>The dtype the weight had when quantized (bitsandbytes' <c>quant_state.dtype</c>).</summary>
    public ScalarType DType { get; }
    /// <summary>True when the block maxima are themselves quantized to 8 bits.</summary>
    public bool DoubleQuantized => nested_absmax is not null;
    /// <summary>Number of values n.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>Quantizes an (out, in) weight: the packed codes as a frozen uint8 parameter and the state.</summary>
    public static (Parameter Packed, Quantized4BitState State) Quantize(Tensor weightOutIn, FourBitQuantization options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (weightOutIn.dim() != 2) throw new ArgumentException($"A 4-bit weight is quantized as an (out, in) matrix; got shape [{string.Join(", ", weightOutIn.shape)}].", nameof(weightOutIn));
        if (weightOutIn.dtype is not (ScalarType.Float32 or ScalarType.BFloat16 or ScalarType.Float16))
            throw new ArgumentException($"4-bit quantization reads float32, bfloat16 or float16 weights (bitsandbytes' quantize_4bit); got {weightOutIn.dtype}.", nameof(weightOutIn));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = weightOutIn.device;
        var (packed, absmax) = BlockwiseQuantizer.Quantize4Bit(weightOutIn, options.QuantType, options.BlockSize);
        var quantMap = BlockwiseQuantizer.Constant(QuantizationCodebooks.Values(options.QuantType), device);
        Tensor? nestedAbsmax = null, nestedMap = null, offset = null;
        if (options.DoubleQuantization)
        {
            // QLoRA's double quantization: the maxima are positive, so centre them on their mean and use the signed map.
            var dynamic = QuantizationCodebooks.Dynamic8Bit();
            offset = absmax.mean();
            (absmax, nestedAbsmax) = BlockwiseQuantizer.Quantize8Bit(absmax - offset, dynamic, FourBitQuantization.NestedBlockSize);
            nestedMap = BlockwiseQuantizer.Constant(dynamic, device);
        }
        var state = new Quantized4BitState(absmax.DetachFromDisposeScope(), quantMap.DetachFromDisposeScope(),
            nestedAbsmax?.DetachFromDisposeScope(), nestedMap?.DetachFromDisposeScope(), offset?.DetachFromDisposeScope(),
            options.QuantType, options.BlockSize, weightOutIn.shape, weightOutIn.dtype);
        var parameter = new Parameter(packed, requires_grad: false);
        parameter.DetachFromDisposeScope();
        return (parameter, state);
    }

    /// <summary>The float32 absmax of each block (double quantization undone: code[q] * nested_absmax + offset).</summary>
    public Tensor BlockAbsmax()
    {
        if (nested_absmax is null) return absmax.alias();
        using var scope = NewDisposeScope();
        var centred = BlockwiseQuantizer.Dequantize8Bit(absmax, nested_absmax, nested_quant_map!, FourBitQuantization.NestedBlockSize);
        return (centred + nested_offset!).MoveToOuterDisposeScope();
    }

    /// <summary>The (out, in) weight in <paramref name="dtype"/> from the packed codes <paramref name="packed"/>.</summary>
    public Tensor Dequantize(Tensor packed, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var result = BlockwiseQuantizer.Dequantize4Bit(packed, BlockAbsmax(), quant_map, BlockSize, Shape, dtype);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Quantizes <paramref name="weightOutIn"/> (same shape) into this state and <paramref name="packed"/> in
    /// place (merging an adapter into a 4-bit base, as PEFT's Linear4bit.merge re-quantizes).</summary>
    public void Requantize(Tensor packed, Tensor weightOutIn)
    {
        if (!weightOutIn.shape.SequenceEqual(Shape))
            throw new ArgumentException($"Requantize needs the weight's shape [{string.Join(", ", Shape)}]; got [{string.Join(", ", weightOutIn.shape)}].");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var options = new FourBitQuantization { QuantType = QuantType, BlockSize = BlockSize, DoubleQuantization = DoubleQuantized };
        var (newPacked, newState) = Quantize(weightOutIn.to(ScalarType.Float32), options);
        try
        {
            packed.copy_(newPacked);
            absmax.copy_(newState.absmax);
            if (DoubleQuantized)
            {
                nested_absmax!.copy_(newState.nested_absmax!);
                nested_offset!.copy_(newState.nested_offset!);
            }
        }
        finally
        {
            newPacked.Dispose();
            newState.Dispose();
        }
    }

    /// <summary>Bytes of the state's tensors (not the packed codes).</summary>
    public long StateBytes => named_buffers().Sum(b => b.buffer.numel() * b.buffer.element_size());

    // The float32 state keeps its dtype under model.to(dtype): only the compute dtype of the dequantized weight changes.
    /// <inheritdoc/>
    protected override nn.Module _to(ScalarType dtype, bool non_blocking) => this;

    /// <inheritdoc/>
    protected override nn.Module _to(Device device, ScalarType dtype, bool non_blocking) => _to(device.type, device.index, non_blocking);
}
