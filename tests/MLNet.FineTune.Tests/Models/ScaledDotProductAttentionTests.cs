using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>The attention every family calls: libtorch's kernel without dropout, and on the CPU in training with dropout
/// the same math written out, checked against that kernel.</summary>
[TestClass]
public sealed class ScaledDotProductAttentionTests
{
    private const long Batch = 3, Heads = 2, Length = 7, HeadSize = 8;

    private static (Tensor Q, Tensor K, Tensor V) Inputs(ScalarType dtype, long keyLength = Length)
    {
        manual_seed(11);
        return (randn([Batch, Heads, Length, HeadSize], dtype), randn([Batch, Heads, keyLength, HeadSize], dtype),
            randn([Batch, Heads, keyLength, HeadSize], dtype));
    }

    // (B, 1, 1, S) padding masks: the last 2 keys of row 1 and the first 3 of row 2 are padding.
    private static Tensor BoolPadding(long keys)
    {
        var allowed = ones([Batch, 1, 1, keys], ScalarType.Bool);
        allowed[1, .., .., (int)(keys - 2)..] = tensor(false);
        allowed[2, .., .., ..3] = tensor(false);
        return allowed;
    }

    private static Tensor Additive(Tensor allowed, ScalarType dtype) =>
        zeros(allowed.shape, dtype).masked_fill(allowed.logical_not(), finfo(dtype).min);

    [TestMethod]
    [DataRow(ScalarType.Float32)]
    [DataRow(ScalarType.BFloat16)]
    public void WithoutDropoutItIsLibtorchsKernelBitForBit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = Inputs(dtype);
        var mask = Additive(BoolPadding(Length), dtype);
        var ours = ScaledDotProductAttention.Compute(q, k, v, mask, isCausal: false, dropout: 0);
        var kernel = nn.functional.scaled_dot_product_attention(q, k, v, mask, 0);
        Assert.IsTrue(ours.eq(kernel).all().item<bool>(), "p = 0 (eval) runs scaled_dot_product_attention unchanged");
        var causal = ScaledDotProductAttention.Compute(q, k, v, null, isCausal: true, dropout: 0);
        Assert.IsTrue(causal.eq(nn.functional.scaled_dot_product_attention(q, k, v, null, 0, is_casual: true)).all().item<bool>());
    }

    [TestMethod]
    public void HalfPrecisionTrainingTakesTheExplicitPathAndEverythingElseTheKernel()
    {
        // libtorch's CPU kernel backpropagates bf16 about 4x slower than the explicit math (docs/performance.md).
        using var scope = NewDisposeScope();
        bool Explicit(ScalarType dtype, bool grad, double dropout = 0, long length = Length, bool enabled = true)
        {
            var q = randn([Batch, Heads, length, HeadSize], dtype).requires_grad_(grad);
            var kv = randn([Batch, Heads, length, HeadSize], dtype);
            using var mode = enabled ? null : no_grad();
            return ScaledDotProductAttention.UseExplicitMath(q, kv, kv, dropout);
        }
        Assert.IsTrue(Explicit(ScalarType.BFloat16, grad: true), "bf16 training");
        Assert.IsTrue(Explicit(ScalarType.Float16, grad: true), "fp16 training");
        Assert.IsFalse(Explicit(ScalarType.BFloat16, grad: false), "bf16 scoring (no gradient needed)");
        Assert.IsFalse(Explicit(ScalarType.BFloat16, grad: true, enabled: false), "bf16 under no_grad");
        Assert.IsFalse(Explicit(ScalarType.Float32, grad: true), "float32 training: the kernel is faster");
        Assert.IsTrue(Explicit(ScalarType.Float32, grad: false, dropout: 0.1), "any dtype with dropout");
        // (B, H, T, T) bf16 probabilities over the limit: libtorch's kernel, which keeps O(T) for backward.
        long tooLong = (long)Math.Ceiling(Math.Sqrt(ScaledDotProductAttention.ExplicitPathMaxProbabilityBytes / (2.0 * Batch * Heads))) + 1;
        Assert.IsFalse(Explicit(ScalarType.BFloat16, grad: true, length: tooLong), $"bf16 training at {tooLong} tokens");
    }

    [TestMethod]
    [DataRow(ScalarType.Float32, 2e-6)]
    [DataRow(ScalarType.Float64, 1e-10)]
    [DataRow(ScalarType.BFloat16, 3e-2)]
    public void TheExplicitPathComputesWhatTheKernelComputes(ScalarType dtype, double tolerance)
    {
        // A drop probability below 2^-33 rounds to a zero threshold: the explicit path runs and drops nothing, and its
        // factor 1/(1-p) is 1 in every dtype, so it must equal the kernel's p = 0 result up to rounding.
        const double tiny = 1e-12;
        using var scope = NewDisposeScope();
        var (q, k, v) = Inputs(dtype);
        var allowed = BoolPadding(Length);
        var cases = new (string Name, Tensor? Mask, bool Causal)[]
        {
            ("additive padding mask", Additive(allowed, dtype), false),
            ("boolean padding mask", allowed, false),
            ("causal", null, true),
            // as CausalAttention builds it: every query also sees itself, so no row is empty
            ("boolean causal and padding mask", ones(Length, Length, ScalarType.Bool).tril().unsqueeze(0).unsqueeze(0).logical_and(allowed)
                .logical_or(eye(Length, dtype: ScalarType.Bool)), false),
        };
        foreach (var (name, mask, causal) in cases)
        {
            var expected = nn.functional.scaled_dot_product_attention(q, k, v, mask, 0, is_casual: causal).to_type(ScalarType.Float64);
            var ours = ScaledDotProductAttention.Compute(q, k, v, mask, causal, tiny);
            Assert.AreEqual(dtype, ours.dtype);
            double error = (ours.to_type(ScalarType.Float64) - expected).abs().max().item<double>();
            Console.WriteLine($"{dtype}, {name}: max |explicit - kernel| = {error:E2} (bound {tolerance:E0})");
            Assert.IsTrue(error < tolerance, $"{name}: {error}");
        }
    }

    [TestMethod]
    public void DropoutZeroesAttentionProbabilitiesAndScalesTheRest()
    {
        // With values = the identity (S = D), the output is the dropped-out probability matrix itself: every entry is 0
        // or 1/(1-p) times the kernel's probability.
        const double p = 0.5;
        using var scope = NewDisposeScope();
        var (q, k, _) = Inputs(ScalarType.Float64, keyLength: HeadSize);
        var identity = eye(HeadSize, dtype: ScalarType.Float64).expand(Batch, Heads, HeadSize, HeadSize);
        var probabilities = nn.functional.scaled_dot_product_attention(q, k, identity, null, 0);      // (B, H, T, S)
        manual_seed(12);
        var dropped = ScaledDotProductAttention.Compute(q, k, identity, null, isCausal: false, p);
        var zero = dropped.eq(0);
        double scaledError = (dropped - probabilities / (1 - p)).abs().masked_select(zero.logical_not()).max().item<double>();
        double share = zero.to_type(ScalarType.Float64).mean().item<double>();
        long n = zero.numel();
        Console.WriteLine($"dropped {share:F3} of {n} probabilities (p = {p}); kept ones vs probability / (1 - p): max error {scaledError:E2}");
        Assert.IsTrue(scaledError < 1e-12);
        Assert.IsTrue(Math.Abs(share - p) < 5 * Math.Sqrt(p * (1 - p) / n));

        manual_seed(12);
        Assert.IsTrue(ScaledDotProductAttention.Compute(q, k, identity, null, isCausal: false, p).eq(dropped).all().item<bool>(), "manual_seed reproduces it");
    }

    [TestMethod]
    public void GradientsReachQueryKeyAndValueThroughTheDroppedProbabilities()
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = Inputs(ScalarType.BFloat16);
        foreach (var t in new[] { q, k, v }) t.requires_grad_(true);
        var output = ScaledDotProductAttention.Compute(q, k, v, Additive(BoolPadding(Length), ScalarType.BFloat16), isCausal: false, 0.1);
        output.to_type(ScalarType.Float32).square().sum().backward();
        foreach (var (name, t) in new[] { ("query", q), ("key", k), ("value", v) })
        {
            Assert.IsNotNull(t.grad, name);
            Assert.AreEqual(ScalarType.BFloat16, t.grad.dtype);
            Assert.IsTrue(t.grad.abs().sum().to_type(ScalarType.Float32).item<float>() > 0, $"no gradient reached {name}");
        }
    }
}
