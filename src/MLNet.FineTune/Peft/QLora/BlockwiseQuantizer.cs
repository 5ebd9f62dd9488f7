using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// Blockwise absmax quantization as bitsandbytes computes it (<c>quantize_4bit</c>, <c>quantize_blockwise</c> and their
/// inverses), vectorised with torch ops so it runs on the tensor's device. The input is flattened row-major and cut into
/// blocks; a block's absmax m is its largest |x| in float32, its values are scaled by the float32 reciprocal 1/m (m
/// clamped to 1e-38 so an all-zero block maps to the zero code), clamped to [-1, 1] and rounded to the nearest code
/// (ties to the lower code). Dequantization is code[q] * m in float32, then cast.
/// </summary>
internal static class BlockwiseQuantizer
{
    /// <summary>The 4-bit codes of <paramref name="weight"/> packed two per byte, the first value of a pair in the high
    /// nibble (bitsandbytes' order), as (ceil(n/2), 1) uint8, and the float32 absmax of each block (ceil(n/B)).</summary>
    public static (Tensor Packed, Tensor Absmax) Quantize4Bit(Tensor weight, FourBitType type, int blockSize)
    {
        using var scope = NewDisposeScope();
        long n = weight.numel();
        var (blocks, absmax) = ScaledBlocks(weight, blockSize);                    // (nb, B) in [-1, 1], (nb)
        var codes = type == FourBitType.NF4
            ? bucketize(blocks, Constant(QuantizationCodebooks.NF4Thresholds, weight.device), outInt32: true)
            : FP4Codes(blocks, weight.device);
        var pairs = codes.to(ScalarType.Byte).view(-1).narrow(0, 0, 2 * ((n + 1) / 2)).view(-1, 2);  // (ceil(n/2), 2)
        var packed = (pairs[.., 0] * 16 + pairs[.., 1]).view(-1, 1);
        return (packed.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>(out, in) float32 values code[q] * absmax of packed 4-bit codes, cast to <paramref name="dtype"/>.</summary>
    /// <param name="packed">(ceil(n/2), 1) uint8.</param>
    /// <param name="absmax">float32 (ceil(n/B)).</param>
    /// <param name="codebook">The 16 code values, float32 on the packed tensor's device.</param>
    /// <param name="blockSize">B.</param>
    /// <param name="shape">The weight's shape.</param>
    /// <param name="dtype">The result's dtype.</param>
    public static Tensor Dequantize4Bit(Tensor packed, Tensor absmax, Tensor codebook, int blockSize, long[] shape, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        long n = shape.Aggregate(1L, (a, b) => a * b);
        long blocks = absmax.shape[0];
        // One gather per byte: row b of the pair table is (code[b >> 4], code[b & 15]).
        var byteValues = arange(256, dtype: ScalarType.Int64, device: packed.device);
        var pairTable = stack([codebook[byteValues.div(16, rounding_mode: RoundingMode.floor)], codebook[byteValues.remainder(16)]], 1); // (256, 2)
        var values = pairTable.index_select(0, packed.view(-1).to(ScalarType.Int32)).view(-1);   // (2 ceil(n/2))
        long padded = blocks * blockSize;
        if (values.shape[0] < padded) values = nn.functional.pad(values, [0, padded - values.shape[0]]);
        var scaled = (values.narrow(0, 0, padded).view(blocks, blockSize) * absmax.unsqueeze(1)).view(-1);   // float32, as bitsandbytes
        var result = (scaled.shape[0] == n ? scaled : scaled.narrow(0, 0, n)).to(dtype).view(shape);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>The n 4-bit codes of packed bytes, high nibble first. // (ceil(n/2), 1) -> (n) uint8</summary>
    public static Tensor Unpack4Bit(Tensor packed, long n)
    {
        using var scope = NewDisposeScope();
        var bytes = packed.view(-1);
        var codes = stack([bytes.div(16, rounding_mode: RoundingMode.floor), bytes.remainder(16)], 1).view(-1).narrow(0, 0, n);
        return codes.to(ScalarType.Byte).MoveToOuterDisposeScope();
    }

    /// <summary>8-bit blockwise quantization with an ascending 256-value <paramref name="codebook"/>: uint8 codes (n)
    /// and the float32 absmax of each block.</summary>
    public static (Tensor Codes, Tensor Absmax) Quantize8Bit(Tensor values, float[] codebook, int blockSize)
    {
        using var scope = NewDisposeScope();
        long n = values.numel();
        var (blocks, absmax) = ScaledBlocks(values, blockSize);
        var midpoints = Constant(QuantizationCodebooks.Midpoints(codebook), values.device);
        var codes = bucketize(blocks, midpoints, outInt32: true).to(ScalarType.Byte).view(-1).narrow(0, 0, n);
        return (codes.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>float32 code[q] * absmax of 8-bit codes (n).</summary>
    public static Tensor Dequantize8Bit(Tensor codes, Tensor absmax, Tensor codebook, int blockSize)
    {
        using var scope = NewDisposeScope();
        long n = codes.numel();
        long blocks = absmax.shape[0];
        var values = codebook.index_select(0, codes.to(ScalarType.Int32));
        long padded = blocks * blockSize;
        if (n < padded) values = nn.functional.pad(values, [0, padded - n]);
        var result = (values.view(blocks, blockSize) * absmax.unsqueeze(1)).view(-1).narrow(0, 0, n);
        return result.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>A float32 tensor of <paramref name="values"/> on <paramref name="device"/>.</summary>
    public static Tensor Constant(float[] values, Device device) => tensor(values, dtype: ScalarType.Float32, device: device);

    // The flattened input as (nb, B) float32 blocks (the last one padded with zeros, which leaves its absmax unchanged)
    // scaled into [-1, 1], and the absmax of each block.
    private static (Tensor Blocks, Tensor Absmax) ScaledBlocks(Tensor input, int blockSize)
    {
        long n = input.numel();
        if (n == 0) throw new ArgumentException("Cannot quantize an empty tensor.", nameof(input));
        long blocks = (n + blockSize - 1) / blockSize;
        var flat = input.reshape(-1).to(ScalarType.Float32);
        if (blocks * blockSize != n) flat = nn.functional.pad(flat, [0, blocks * blockSize - n]);
        var view = flat.view(blocks, blockSize);
        var absmax = view.abs().amax([1]);                                              // (nb)
        var reciprocal = absmax.clamp_min(1e-38).reciprocal();
        var scaled = (view * reciprocal.unsqueeze(1)).clamp(-1, 1);                     // (nb, B)
        return (scaled, absmax);
    }

    // FP4: sign bit 3 when x < 0, magnitude code from |x| against the ascending magnitude thresholds.
    private static Tensor FP4Codes(Tensor scaled, Device device)
    {
        var order = tensor(QuantizationCodebooks.FP4MagnitudeOrder.Select(b => (int)b).ToArray(), dtype: ScalarType.Int32, device: device);
        var rank = bucketize(scaled.abs(), Constant(QuantizationCodebooks.FP4MagnitudeThresholds, device), outInt32: true);
        var magnitude = order.index_select(0, rank.view(-1)).view_as(rank);
        return magnitude + scaled.lt(0).to(ScalarType.Int32) * 8;
    }
}
