using MLNet.FineTune.Peft;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft.QLora;

/// <summary>NF4/FP4 blockwise quantization and double quantization against the codebooks, a scalar loop written as
/// bitsandbytes' kernels read, and the error the code spacing implies.</summary>
[TestClass]
public sealed class FourBitQuantizationTests
{
    // bitsandbytes' CUDA tree dQuantizeNF4 (csrc/kernels.cu): its float32 constants.
    private static readonly float[] BitsandbytesNF4Tree =
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    // dQuantizeFP4's pivots (magnitudes, divided by 12), ascending.
    private static readonly float[] BitsandbytesFP4Tree = [0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f];

    [TestMethod]
    public void ThresholdsAreTheMidpointsOfTheCodesAsBitsandbytesRoundsThem()
    {
        var codes = QuantizationCodebooks.NF4;
        Assert.AreEqual(16, codes.Distinct().Count());
        CollectionAssert.AreEqual(codes.OrderBy(c => c).ToArray(), codes, "NF4 codes ascend with their index");
        int identical = 0;
        for (int k = 0; k < 15; k++)
        {
            float ours = QuantizationCodebooks.NF4Thresholds[k], cuda = BitsandbytesNF4Tree[k];
            Assert.IsTrue(Math.Abs(ours - cuda) <= Ulp(cuda), $"NF4 threshold {k}: {ours:R} vs the CUDA tree's {cuda:R}");
            if (ours == cuda) identical++;
        }
        Console.WriteLine($"NF4 thresholds: {identical} of 15 bit-identical to the CUDA tree's constants, the rest 1 ulp apart");
        for (int k = 0; k < 15; k++)
        {
            double midpoint = ((double)codes[k] + codes[k + 1]) / 2;
            Assert.IsTrue(Math.Abs(QuantizationCodebooks.NF4Thresholds[k] - midpoint) <= Ulp(QuantizationCodebooks.NF4Thresholds[k]) / 2, $"threshold {k} is the float nearest the midpoint");
        }
        double fp4Gap = QuantizationCodebooks.FP4MagnitudeThresholds.Zip(BitsandbytesFP4Tree, (a, b) => Math.Abs((double)a - b)).Max();
        Console.WriteLine($"FP4 thresholds vs the CUDA tree's decimal literals: max difference {fp4Gap:E2}");
        Assert.IsTrue(fp4Gap < 4e-7, "FP4: within the CUDA tree's decimal rounding");
    }

    [TestMethod]
    [DataRow(FourBitType.NF4)]
    [DataRow(FourBitType.FP4)]
    public void EveryValueMapsToItsNearestCode(FourBitType type)
    {
        using var scope = NewDisposeScope();
        // Values in [-1, 1]: a dense sweep, every code, every threshold (a tie) and the floats either side of it.
        var codebook = QuantizationCodebooks.Values(type);
        float[] thresholds = type == FourBitType.NF4 ? QuantizationCodebooks.NF4Thresholds
            : [.. QuantizationCodebooks.FP4MagnitudeThresholds, .. QuantizationCodebooks.FP4MagnitudeThresholds.Select(t => -t)];
        var probes = new List<float>();
        for (int i = 0; i <= 1 << 16; i++) probes.Add(-1f + 2f * i / (1 << 16));
        probes.AddRange(codebook);
        foreach (var t in thresholds) probes.AddRange([t, BitIncrement(t), BitDecrement(t)]);
        // Blocks of 64 whose first value is 1, so every block's absmax is 1 and its scale exactly 1: scaled = value.
        var values = new List<float>();
        foreach (var chunk in probes.Chunk(63)) { values.Add(1f); values.AddRange(chunk); }
        var weight = tensor(values.ToArray()).view(1, -1);
        var (packed, absmax) = BlockwiseQuantizer.Quantize4Bit(weight, type, 64);
        Assert.IsTrue(absmax.eq(1).all().item<bool>(), "every block's absmax is 1");
        var codes = BlockwiseQuantizer.Unpack4Bit(packed, values.Count).data<byte>().ToArray();

        int ties = 0;
        for (int i = 0; i < values.Count; i++)
        {
            float x = values[i];
            float chosen = codebook[codes[i]];
            double best = codebook.Min(c => Math.Abs((double)x - c));
            int tie = Array.IndexOf(thresholds, x);
            if (tie >= 0)
            {
                // At a threshold bitsandbytes keeps the lower code (NF4) or the smaller magnitude (FP4): only x > t goes up.
                ties++;
                float expected = type == FourBitType.NF4
                    ? codebook[tie]
                    : MathF.CopySign(QuantizationCodebooks.FP4[QuantizationCodebooks.FP4MagnitudeOrder[tie % 7]], x);
                Assert.AreEqual(expected, chosen, $"tie at {x:R}: code {codes[i]} ({chosen:R})");
                continue;
            }
            Assert.AreEqual(best, Math.Abs((double)x - chosen), 0, $"{type}: {x:R} went to code {codes[i]} ({chosen:R}), nearest is {best:R} away");
        }
        Console.WriteLine($"{type}: {values.Count} values checked against all 16 codes, {ties} at a threshold (ties)");
    }

    [TestMethod]
    [DataRow(FourBitType.NF4, 64, 37, 51)]     // n = 1887: odd, not a multiple of the block
    [DataRow(FourBitType.NF4, 128, 64, 96)]
    [DataRow(FourBitType.FP4, 64, 37, 51)]
    [DataRow(FourBitType.NF4, 32, 5, 7)]
    public void VectorisedQuantizationEqualsTheScalarLoop(FourBitType type, int blockSize, int rows, int columns)
    {
        using var scope = NewDisposeScope();
        var weight = randn(rows, columns, generator: new Generator(7)) * 0.02;
        weight[3, 5] = tensor(0f);                                                      // an exact zero
        var (packed, absmax) = BlockwiseQuantizer.Quantize4Bit(weight, type, blockSize);
        var (expectedPacked, expectedAbsmax, expectedValues) = ScalarQuantize4Bit(weight.data<float>().ToArray(), type, blockSize);

        CollectionAssert.AreEqual(expectedAbsmax, absmax.data<float>().ToArray(), "absmax per block");
        CollectionAssert.AreEqual(expectedPacked, packed.data<byte>().ToArray(), "packed bytes");
        Assert.AreEqual((rows * columns + 1) / 2, packed.shape[0]);
        var codebook = BlockwiseQuantizer.Constant(QuantizationCodebooks.Values(type), CPU);
        var dequantized = BlockwiseQuantizer.Dequantize4Bit(packed, absmax, codebook, blockSize, [rows, columns], ScalarType.Float32);
        CollectionAssert.AreEqual(expectedValues, dequantized.data<float>().ToArray(), "dequantized values, bit for bit");
    }

    [TestMethod]
    public void PackingRoundTripIsBitExactAndHighNibbleFirst()
    {
        using var scope = NewDisposeScope();
        var weight = randn(96, 80, generator: new Generator(3));
        var (packed, absmax) = BlockwiseQuantizer.Quantize4Bit(weight, FourBitType.NF4, 64);
        var codes = BlockwiseQuantizer.Unpack4Bit(packed, weight.numel()).data<byte>().ToArray();
        var bytes = packed.data<byte>().ToArray();
        for (int i = 0; i < bytes.Length; i++) Assert.AreEqual((byte)(codes[2 * i] << 4 | codes[2 * i + 1]), bytes[i], $"byte {i}");

        // Dequantized values quantize back to the same bytes.
        var codebook = BlockwiseQuantizer.Constant(QuantizationCodebooks.NF4, CPU);
        var dequantized = BlockwiseQuantizer.Dequantize4Bit(packed, absmax, codebook, 64, [96, 80], ScalarType.Float32);
        var (again, againAbsmax) = BlockwiseQuantizer.Quantize4Bit(dequantized, FourBitType.NF4, 64);
        Assert.IsTrue(again.eq(packed).all().item<bool>(), "quantize(dequantize(q)) == q");
        Assert.IsTrue(againAbsmax.eq(absmax).all().item<bool>());

        // bitsandbytes' nibble order: [1, -1] -> code 15 high, code 0 low; [0, 0] -> 0x77.
        var pair = tensor(new float[] { 1, -1, 0, 0 }).view(1, 4);
        var (p, _) = BlockwiseQuantizer.Quantize4Bit(pair, FourBitType.NF4, 64);
        CollectionAssert.AreEqual(new byte[] { 0xF0, 0x77 }, p.data<byte>().ToArray());
    }

    [TestMethod]
    [DataRow(FourBitType.NF4)]
    [DataRow(FourBitType.FP4)]
    public void MeanAbsoluteErrorPerBlockMatchesTheCodeSpacing(FourBitType type)
    {
        using var scope = NewDisposeScope();
        const int blockSize = 64;
        var weight = randn(1024, 1024, generator: new Generator(11));                  // N(0, 1), 16384 blocks
        var (packed, absmax) = BlockwiseQuantizer.Quantize4Bit(weight, type, blockSize);
        var codebook = BlockwiseQuantizer.Constant(QuantizationCodebooks.Values(type), CPU);
        var dequantized = BlockwiseQuantizer.Dequantize4Bit(packed, absmax, codebook, blockSize, [1024, 1024], ScalarType.Float32);
        var perBlock = (weight - dequantized).abs().view(-1, blockSize).mean([1]);   // (16384)
        double measured = perBlock.mean().item<float>();
        double expected = ExpectedBlockMae(QuantizationCodebooks.Values(type), blockSize);
        Console.WriteLine($"{type}, block {blockSize}, N(0, 1) weights: mean absolute error per block measured {measured:F6} " +
            $"(blocks' spread {perBlock.std().item<float>():F6}), implied by the code spacing {expected:F6}, ratio {measured / expected:F4}");
        Assert.AreEqual(1.0, measured / expected, 0.01, "measured MAE within 1% of the figure the codes imply");
    }

    [TestMethod]
    public void DoubleQuantizedBlockMaximaStayWithinHalfAStepOfTheDynamicMap()
    {
        using var scope = NewDisposeScope();
        var weight = randn(768, 2048, generator: new Generator(5)) * 0.02;             // 24576 blocks of 64
        var single = new FourBitQuantization { DoubleQuantization = false };
        var (_, plain) = Quantized4BitState.Quantize(weight, single);
        var (packed, nested) = Quantized4BitState.Quantize(weight, new FourBitQuantization());
        var exact = plain.BlockAbsmax();
        var approx = nested.BlockAbsmax();
        var state = nested.state_dict();
        Assert.AreEqual(ScalarType.Byte, state["absmax"].dtype, "absmax stored as 8-bit codes");
        long nestedBlocks = state["nested_absmax"].shape[0];
        Assert.AreEqual((exact.shape[0] + 255) / 256, nestedBlocks);

        var error = (approx - exact).abs();
        var relative = error / exact;
        // Bound: half the widest gap of the dynamic map (0.0140625 / 2 at the top) times the block's nested absmax.
        var dynamic = QuantizationCodebooks.Dynamic8Bit();
        double widestGap = dynamic.Zip(dynamic.Skip(1), (a, b) => (double)b - a).Max();
        var nestedAbsmax = state["nested_absmax"].repeat_interleave(256).narrow(0, 0, exact.shape[0]);
        var bound = nestedAbsmax * (widestGap / 2) * (1 + 1e-6) + 1e-9;
        Console.WriteLine($"double quantization of {exact.shape[0]} block maxima (mean {exact.mean().item<float>():E4}): " +
            $"max abs error {error.max().item<float>():E3}, mean abs error {error.mean().item<float>():E3}, " +
            $"max relative error {relative.max().item<float>():P3}, mean relative error {relative.mean().item<float>():P4}; widest map gap {widestGap:F6}");
        Assert.IsTrue(error.le(bound).all().item<bool>(), "every block maximum within half the widest map step");

        // The 8-bit path equals a scalar loop too.
        var centred = exact - exact.mean();
        var (codes8, absmax8) = BlockwiseQuantizer.Quantize8Bit(centred, dynamic, 256);
        var (expectedCodes, expectedAbsmax) = ScalarQuantize8Bit(centred.data<float>().ToArray(), dynamic, 256);
        CollectionAssert.AreEqual(expectedAbsmax, absmax8.data<float>().ToArray());
        CollectionAssert.AreEqual(expectedCodes, codes8.data<byte>().ToArray());

        // Weights through the double-quantized maxima stay near the single-quantized ones.
        var w1 = plain.Dequantize(Quantized4BitState.Quantize(weight, single).Packed, ScalarType.Float32);
        var w2 = nested.Dequantize(packed, ScalarType.Float32);
        Console.WriteLine($"weights: MAE single {(w1 - weight).abs().mean().item<float>():E4}, with double quantization {(w2 - weight).abs().mean().item<float>():E4}");
        Assert.IsTrue((w2 - weight).abs().mean().item<float>() < 1.01 * (w1 - weight).abs().mean().item<float>());
    }

    [TestMethod]
    public void DynamicMapIsSignedAscendingWithZeroAndOne()
    {
        var map = QuantizationCodebooks.Dynamic8Bit();
        Assert.AreEqual(256, map.Length);
        Assert.AreEqual(256, map.Distinct().Count());
        CollectionAssert.AreEqual(map.OrderBy(v => v).ToArray(), map);
        Assert.AreEqual(1f, map[^1]);
        Assert.IsTrue(map.Contains(0f));
        var negatives = map.Where(v => v < 0).Select(v => -v).OrderBy(v => v).ToArray();
        var positives = map.Where(v => v > 0 && v < 1).OrderBy(v => v).ToArray();
        Assert.AreEqual(127, negatives.Length);
        CollectionAssert.AreEqual(positives, negatives, "symmetric but for 1.0");
        Assert.AreEqual(0.55f * 1e-6f, positives[0], 1e-12, "smallest: midpoint of linspace(0.1, 1, 2) times 1e-6");
    }

    // ---- references ----

    // bitsandbytes' kQuantizeBlockwise read as a loop: absmax in float32, scale by 1/absmax, first value in the high nibble.
    internal static (byte[] Packed, float[] Absmax, float[] Values) ScalarQuantize4Bit(float[] x, FourBitType type, int blockSize)
    {
        int blocks = (x.Length + blockSize - 1) / blockSize;
        var absmax = new float[blocks];
        var codes = new byte[x.Length + 1];
        var values = new float[x.Length];
        var codebook = QuantizationCodebooks.Values(type);
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize, end = Math.Min(x.Length, start + blockSize);
            float m = 0;
            for (int i = start; i < end; i++) m = Math.Max(m, Math.Abs(x[i]));
            absmax[b] = m;
            float scale = 1f / Math.Max(m, 1e-38f);
            for (int i = start; i < end; i++)
            {
                float s = Math.Clamp(x[i] * scale, -1f, 1f);
                codes[i] = type == FourBitType.NF4 ? NF4Code(s) : FP4Code(s);
                values[i] = codebook[codes[i]] * m;
            }
        }
        codes[x.Length] = type == FourBitType.NF4 ? NF4Code(0) : FP4Code(0);              // pad of an odd count
        var packed = new byte[(x.Length + 1) / 2];
        for (int i = 0; i < packed.Length; i++) packed[i] = (byte)(codes[2 * i] << 4 | codes[2 * i + 1]);
        return (packed, absmax, values);
    }

    private static byte NF4Code(float s)
    {
        byte code = 0;
        foreach (var t in QuantizationCodebooks.NF4Thresholds) if (s > t) code++;
        return code;
    }

    private static byte FP4Code(float s)
    {
        int rank = 0;
        foreach (var t in QuantizationCodebooks.FP4MagnitudeThresholds) if (Math.Abs(s) > t) rank++;
        return (byte)(QuantizationCodebooks.FP4MagnitudeOrder[rank] + (s < 0 ? 8 : 0));
    }

    // kQuantizeBlockwise with the 8-bit map: nearest code, x above a midpoint goes up.
    private static (byte[] Codes, float[] Absmax) ScalarQuantize8Bit(float[] x, float[] map, int blockSize)
    {
        var midpoints = QuantizationCodebooks.Midpoints(map);
        int blocks = (x.Length + blockSize - 1) / blockSize;
        var absmax = new float[blocks];
        var codes = new byte[x.Length];
        for (int b = 0; b < blocks; b++)
        {
            int start = b * blockSize, end = Math.Min(x.Length, start + blockSize);
            float m = 0;
            for (int i = start; i < end; i++) m = Math.Max(m, Math.Abs(x[i]));
            absmax[b] = m;
            float scale = 1f / Math.Max(m, 1e-38f);
            for (int i = start; i < end; i++)
            {
                float s = Math.Clamp(x[i] * scale, -1f, 1f);
                codes[i] = (byte)midpoints.Count(t => s > t);
            }
        }
        return (codes, absmax);
    }

    /// <summary>
    /// E[mean |w - dequant(w)| over a block] for w ~ N(0, 1) in blocks of <paramref name="blockSize"/>, from the code
    /// values alone. Given the block's absmax M = m, the other B - 1 values are N(0, 1) truncated to (-m, m) and a value
    /// x in the cell of code c (between the midpoints to its neighbours, times m) errs by |x - m c|; the maximum itself
    /// is exact. So E = (B - 1)/B * integral over m of f_M(m) g(m), g(m) = sum over cells of
    /// integral |x - m c| phi(x) dx / (2 Phi(m) - 1), with f_M(m) = B (2 Phi(m) - 1)^(B-1) 2 phi(m).
    /// </summary>
    internal static double ExpectedBlockMae(float[] codebook, int blockSize)
    {
        var codes = codebook.Select(c => (double)c).Distinct().OrderBy(c => c).ToArray();
        var edges = new double[codes.Length + 1];
        edges[0] = -1; edges[^1] = 1;
        for (int k = 1; k < codes.Length; k++) edges[k] = (codes[k - 1] + codes[k]) / 2;

        double Inner(double m)
        {
            double sum = 0;
            for (int k = 0; k < codes.Length; k++)
            {
                double a = m * edges[k], b = m * edges[k + 1], c = m * codes[k];
                sum += c * (Cdf(c) - Cdf(a)) + Pdf(c) - Pdf(a) + Pdf(c) - Pdf(b) - c * (Cdf(b) - Cdf(c));
            }
            return sum;
        }

        // Simpson over m in (0, 8]: the integrand is B (2 Phi(m) - 1)^(B-2) 2 phi(m) Inner(m).
        const int intervals = 4000;
        double h = 8.0 / intervals, total = 0;
        for (int i = 0; i <= intervals; i++)
        {
            double m = i * h;
            double mass = 2 * Cdf(m) - 1;
            double f = m == 0 ? 0 : blockSize * Math.Pow(mass, blockSize - 2) * 2 * Pdf(m) * Inner(m);
            total += f * (i == 0 || i == intervals ? 1 : i % 2 == 1 ? 4 : 2);
        }
        return (blockSize - 1.0) / blockSize * total * h / 3;
    }

    private static double Pdf(double x) => Math.Exp(-x * x / 2) / Math.Sqrt(2 * Math.PI);

    // Phi(x) = 1/2 + phi(x) sum x^(2n+1) / (2n+1)!!: all terms share x's sign, so no cancellation.
    private static double Cdf(double x)
    {
        double term = x, sum = x;
        for (int n = 1; n < 500 && Math.Abs(term) > 1e-17 * Math.Abs(sum); n++)
        {
            term *= x * x / (2 * n + 1);
            sum += term;
        }
        return 0.5 + Pdf(x) * sum;
    }

    private static double Ulp(float x) => BitIncrement(Math.Abs(x)) - Math.Abs(x);
    private static float BitIncrement(float x) => MathF.BitIncrement(x);
    private static float BitDecrement(float x) => MathF.BitDecrement(x);
}
