using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// The code values of bitsandbytes' data types and the decision thresholds its kernels round with. A value goes to the
/// upper code only when it is strictly greater than the float32 midpoint between two codes, so a tie goes to the lower
/// code (bitsandbytes' CUDA decision trees <c>dQuantizeNF4</c>/<c>dQuantizeFP4</c>, and <c>torch.bucketize</c> with
/// <c>right=False</c> in its torch backend).
/// </summary>
internal static class QuantizationCodebooks
{
    /// <summary>NF4's 16 values, index = 4-bit code (create_normal_map(0.9677083, use_extra_value=True): 8 quantiles
    /// of N(0, 1) below zero, zero, 7 above, normalised to [-1, 1]).</summary>
    public static readonly float[] NF4 =
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>Thresholds between consecutive NF4 codes, ascending (threshold k separates code k from k + 1): the
    /// float32 midpoints, as bitsandbytes' torch backend computes its bounds (the constants of its CUDA tree
    /// <c>dQuantizeNF4</c> are within one float32 ulp of these).</summary>
    public static readonly float[] NF4Thresholds = Midpoints(NF4);

    /// <summary>FP4's 16 values, index = code: bit 3 the sign, bits 0-2 the magnitudes 0, 0.0625, 8, 12, 4, 6, 2, 3
    /// (2 exponent bits, 1 mantissa bit, bias 2), divided by 12 in float32 as get_4bit_type("fp4") does.</summary>
    public static readonly float[] FP4 = BuildFP4();

    /// <summary>FP4 magnitude codes (0-7) in ascending order of value.</summary>
    public static readonly byte[] FP4MagnitudeOrder = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

    /// <summary>Thresholds between the ascending FP4 magnitudes: their float32 midpoints, as bitsandbytes' torch backend
    /// computes its bounds (the decimal literals of its CUDA tree <c>dQuantizeFP4</c> differ from these by up to 3.3e-7,
    /// so a value that close to a threshold may round the other way there).</summary>
    public static readonly float[] FP4MagnitudeThresholds = Midpoints([.. FP4MagnitudeOrder.Select(c => FP4[c])]);

    /// <summary>The 16 values of <paramref name="type"/>, index = code.</summary>
    public static float[] Values(FourBitType type) => type == FourBitType.NF4 ? NF4 : FP4;

    private static float[] BuildFP4()
    {
        float[] magnitudes = [0f, 0.0625f, 8f, 12f, 4f, 6f, 2f, 3f];
        var values = new float[16];
        for (int code = 0; code < 8; code++)
        {
            values[code] = magnitudes[code] / 12f;
            values[code + 8] = -magnitudes[code] / 12f;
        }
        return values;
    }

    private static float[]? _dynamic;

    /// <summary>
    /// bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8);
    /// Dettmers 2015): for exponent e = 0..6, 2^e evenly spaced fractions in (0.1, 1) times 10^(e-6), both signs, plus 0
    /// and 1; 256 values ascending. Built with the same float32 torch ops (linspace, midpoint, scalar product) so the
    /// values are bit-identical to the Python construction.
    /// </summary>
    public static float[] Dynamic8Bit()
    {
        if (_dynamic is { } cached) return cached;
        const int maxExponentBits = 7;
        var data = new List<float>(256);
        using (var scope = NewDisposeScope())
        {
            for (int i = 0; i < maxExponentBits; i++)
            {
                int fractionItems = (1 << i) + 1;
                var boundaries = linspace(0.1, 1, fractionItems, dtype: ScalarType.Float32);
                var means = (boundaries[..^1] + boundaries[1..]) / 2.0;
                double power = Math.Pow(10, -(maxExponentBits - 1) + i);
                data.AddRange((means * power).data<float>().ToArray());
                data.AddRange((means * -power).data<float>().ToArray());
            }
        }
        data.Add(0f);
        data.Add(1f);
        if (data.Count != 256) throw new InvalidOperationException($"The 8-bit dynamic map has {data.Count} values instead of 256.");
        data.Sort();
        return _dynamic = data.ToArray();
    }

    /// <summary>Float32 midpoints (c[k] + c[k+1]) / 2 of an ascending codebook, as bitsandbytes' blockwise 8-bit kernel
    /// computes them.</summary>
    public static float[] Midpoints(float[] ascending)
    {
        var midpoints = new float[ascending.Length - 1];
        for (int k = 0; k < midpoints.Length; k++) midpoints[k] = (ascending[k] + ascending[k + 1]) * 0.5f;
        return midpoints;
    }
}
