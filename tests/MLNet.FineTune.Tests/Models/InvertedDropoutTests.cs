using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>The dropout every model family and LoRA use: its statistics, its identity cases, its gradient and its
/// reproducibility, in each floating-point dtype.</summary>
[TestClass]
public sealed class InvertedDropoutTests
{
    // Odd, so the vectorised body and the scalar tail both run.
    private const long Count = (1 << 20) + 37;

    /// <summary>1/(1-p) as the dtype holds it (bf16 keeps 8 bits: 1/0.9 is 1.109375), the factor libtorch's dropout uses too.</summary>
    private static double ScaleIn(ScalarType dtype, double p) => tensor(1.0 / (1.0 - p), ScalarType.Float64).to_type(dtype).to_type(ScalarType.Float64).item<double>();

    [TestMethod]
    [DataRow(ScalarType.BFloat16, 0.1)]
    [DataRow(ScalarType.BFloat16, 0.5)]
    [DataRow(ScalarType.Float32, 0.1)]
    [DataRow(ScalarType.Float32, 0.05)]
    [DataRow(ScalarType.Float16, 0.3)]
    [DataRow(ScalarType.Float64, 0.1)]
    public void ZeroesAboutPOfTheElementsAndKeepsTheMean(ScalarType dtype, double p)
    {
        using var scope = NewDisposeScope();
        manual_seed(1);
        var x = (rand(Count, ScalarType.Float64) + 0.5).to_type(dtype);                   // no zeros of its own
        var y = InvertedDropout.Apply(x, p, training: true);
        Assert.AreEqual(dtype, y.dtype);

        double dropped = y.eq(0).sum().item<long>() / (double)Count;
        double sd = Math.Sqrt(p * (1 - p) / Count);                                          // binomial
        Console.WriteLine($"{dtype} p = {p}: dropped fraction {dropped:F5} ({(dropped - p) / sd:+0.00;-0.00} sd from p over {Count} elements)");
        Assert.IsTrue(Math.Abs(dropped - p) < 5 * sd, $"dropped {dropped}, expected {p} +- {5 * sd}");

        // Kept values are x / (1 - p), the factor rounded to the dtype and the product rounded as libtorch rounds it.
        double scale = ScaleIn(dtype, p);
        var kept = y.ne(0);
        Assert.IsTrue(y.masked_select(kept).eq((x * tensor(scale, dtype)).masked_select(kept)).all().item<bool>(), "kept values are x * 1/(1-p)");

        // The mean: sum(y) / sum(x) = scale (1 - dropped share of x), within 5 sd of its binomial spread.
        var x64 = x.to_type(ScalarType.Float64);
        double ratio = y.to_type(ScalarType.Float64).sum().item<double>() / x64.sum().item<double>();
        double ratioSd = scale * Math.Sqrt(p * (1 - p) * x64.square().sum().item<double>()) / x64.sum().item<double>();
        double expected = scale * (1 - p);
        Console.WriteLine($"  mean(y) / mean(x) = {ratio:F5}; expected {expected:F5} (1/(1-p) in {dtype} = {scale}), {(ratio - expected) / ratioSd:+0.00;-0.00} sd");
        Assert.IsTrue(Math.Abs(ratio - expected) < 5 * ratioSd);
        Assert.IsTrue(Math.Abs(expected - 1) < 2e-3, "only the dtype's rounding of 1/(1-p) moves the mean");

        // Neighbours (the two halves of one 64-bit draw) are independent: both dropped with probability p^2.
        var pairs = y.eq(0)[..(int)(Count - 1)].view(-1, 2);
        double both = pairs.all(1).to_type(ScalarType.Float64).mean().item<double>();
        double pairSd = Math.Sqrt(p * p * (1 - p * p) / pairs.shape[0]);
        Console.WriteLine($"  both elements of a pair dropped: {both:F5}, p^2 = {p * p:F5} ({(both - p * p) / pairSd:+0.00;-0.00} sd)");
        Assert.IsTrue(Math.Abs(both - p * p) < 5 * pairSd);
    }

    [TestMethod]
    [DataRow(ScalarType.BFloat16)]
    [DataRow(ScalarType.Float32)]
    public void IsTheIdentityInEvalAndForZeroAndDrawsNothing(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(2);
        var x = randn([4, 7, 9], dtype);
        var layer = new InvertedDropout(0.3);
        layer.eval();
        manual_seed(3);
        Assert.IsTrue(layer.call(x).eq(x).all().item<bool>(), "eval mode");
        Assert.IsTrue(InvertedDropout.Apply(x, 0, training: true).eq(x).all().item<bool>(), "p = 0");
        var zero = new InvertedDropout(0);
        zero.train();
        Assert.IsTrue(zero.call(x).eq(x).all().item<bool>(), "p = 0 module in training");
        var next = rand(5);
        manual_seed(3);
        Assert.IsTrue(next.eq(rand(5)).all().item<bool>(), "the identity cases leave torch's generator where it was");

        layer.train();
        Assert.IsFalse(layer.call(x).eq(x).all().item<bool>(), "train mode drops");
    }

    [TestMethod]
    [DataRow(ScalarType.BFloat16)]
    [DataRow(ScalarType.Float32)]
    public void GradientIsTheUpstreamGradientTimesTheMask(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(4);
        const double p = 0.25;
        var x = ((rand([16, 33, 24]) + 0.5) * randn([16, 33, 24]).sign()).to_type(dtype).requires_grad_(true);   // no zeros
        var y = InvertedDropout.Apply(x, p, training: true);
        var upstream = randn(y.shape, dtype);
        y.backward([upstream]);

        // Recover the mask from the output (x has no zeros here), then compare exactly.
        Assert.IsFalse(x.eq(0).any().item<bool>());
        var mask = y.detach().ne(0).to_type(dtype) * tensor(ScaleIn(dtype, p), dtype);
        var expected = upstream * mask;
        long mismatches = x.grad!.ne(expected).sum().item<long>();
        Console.WriteLine($"{dtype}: gradient vs upstream * mask * 1/(1-p): {mismatches} of {x.numel()} elements differ; dropped {y.eq(0).to_type(ScalarType.Float64).mean().item<double>():F3}");
        Assert.AreEqual(0L, mismatches);
        Assert.AreEqual(dtype, x.grad!.dtype);
    }

    [TestMethod]
    public void ManualSeedReproducesTheMasksAndLaterDrawsDiffer()
    {
        using var scope = NewDisposeScope();
        var x = ones([8, 100], ScalarType.BFloat16);
        manual_seed(5);
        var a = InvertedDropout.Apply(x, 0.5, training: true);
        var b = InvertedDropout.Apply(x, 0.5, training: true);
        manual_seed(5);
        var again = InvertedDropout.Apply(x, 0.5, training: true);
        Assert.IsTrue(a.eq(again).all().item<bool>(), "same seed, same mask");
        long differing = a.ne(b).sum().item<long>();
        Console.WriteLine($"two successive masks differ in {differing} of {x.numel()} elements (about half expected)");
        Assert.IsTrue(differing > 300, "successive draws are new masks");
    }

    [TestMethod]
    public void AnElementsFateDependsOnlyOnTheSeedAndItsPosition()
    {
        // The vectorised body (its width depends on the dtype) and the scalar tail must decide alike: the first 37
        // elements of any mask drawn from one seed agree, whatever its length and dtype.
        using var scope = NewDisposeScope();
        Tensor Kept(long count, ScalarType dtype)
        {
            manual_seed(6);
            return DropoutMask.Draw([count], dtype, 0.5)[..37].ne(0);
        }
        var reference = Kept(37, ScalarType.Float64);                                     // scalar path only
        foreach (var (count, dtype) in new[] { (37L, ScalarType.BFloat16), (1000L, ScalarType.BFloat16), (37L, ScalarType.Float32),
                     (1000L, ScalarType.Float32), (1000L, ScalarType.Float16), (1000L, ScalarType.Float64) })
            Assert.IsTrue(Kept(count, dtype).eq(reference).all().item<bool>(), $"{dtype}, {count} elements");
        Console.WriteLine($"kept pattern of the first 37 elements (seed 6, p 0.5) identical across 6 lengths and dtypes: {reference.sum().item<long>()} kept");
    }

    [TestMethod]
    public void ProbabilityOneZeroesEverythingAndOutsideTheRangeNamesIt()
    {
        using var scope = NewDisposeScope();
        var x = randn([3, 4]).requires_grad_(true);
        var y = InvertedDropout.Apply(x, 1, training: true);
        Assert.IsTrue(y.eq(0).all().item<bool>());
        y.sum().backward();
        Assert.IsTrue(x.grad!.eq(0).all().item<bool>());
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new InvertedDropout(1.5));
        StringAssert.Contains(error.Message, "Dropout probability must be in [0, 1]");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => InvertedDropout.Apply(x, -0.1, training: false));
    }
}
