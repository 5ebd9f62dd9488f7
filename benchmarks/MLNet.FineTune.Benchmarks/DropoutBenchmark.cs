using System.Globalization;
using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>dropout</c>: forward + backward time of dropout on the activations of a MiniLM training step (16 x 176 tokens),
/// libtorch's <c>nn.functional.dropout</c> against the library's <see cref="InvertedDropout"/>, in bfloat16 and float32,
/// with the pieces that explain them (each one's mask draw, a float32 uniform draw, the multiply alone); and attention
/// (16 x 12 heads x 176 x 32) with and without dropout, libtorch's kernel against the library's path.
/// </summary>
internal sealed class DropoutBenchmark : IBenchmark
{
    private const double P = 0.1;
    private static readonly long[][] Shapes = [[16, 176, 384], [16, 176, 1536], [16, 12, 176, 176]];
    private static readonly long[] AttentionShape = [16, 12, 176, 32];   // (B, nh, T, hs)

    public string Name => "dropout";
    public string Summary => "dropout and attention-with-dropout forward+backward on bf16/f32 activations: libtorch vs the library";

    public int Run(BenchmarkOptions options)
    {
        string loadBefore = MachineInfo.LoadAverage();
        var elementwise = new List<IReadOnlyList<string>>();
        foreach (var shape in Shapes)
            foreach (var dtype in ForwardBenchmark.DTypes.Reverse())
            {
                using var scope = NewDisposeScope();
                manual_seed(0);
                var x = randn(shape, dtype).requires_grad_(true);
                var upstream = randn(shape, dtype);
                long n = x.numel();
                Console.Error.WriteLine($"element-wise {string.Join("x", shape)} {ForwardBenchmark.DTypeName(dtype)}");
                double Time(Action action) => Timings.Measure(() => { using var step = NewDisposeScope(); action(); }, options.Warmup, options.Runs).Median;
                double torchDropout = Time(() => autograd.grad([nn.functional.dropout(x, P, training: true)], [x], [upstream]));
                double library = Time(() => autograd.grad([InvertedDropout.Apply(x, P, training: true)], [x], [upstream]));
                double bernoulli = Time(() => empty(shape, dtype).bernoulli_(1 - P));
                double mask = Time(() => DropoutMask.Draw(shape, dtype, P));
                double uniform = Time(() => rand(shape, ScalarType.Float32));
                double multiply = Time(() => { using var _ = no_grad(); x.mul(upstream); });
                string PerElement(double ms) => $"{F(ms, 2)} ({F(ms * 1e6 / n, 2)})";
                elementwise.Add([string.Join(" x ", shape), ForwardBenchmark.DTypeName(dtype), PerElement(torchDropout), PerElement(library),
                    F(torchDropout / library, 1) + "x", PerElement(bernoulli), PerElement(mask), PerElement(uniform), PerElement(multiply)]);
            }

        var attention = new List<IReadOnlyList<string>>();
        foreach (var dtype in ForwardBenchmark.DTypes.Reverse())
        {
            using var scope = NewDisposeScope();
            manual_seed(0);
            var q = randn(AttentionShape, dtype).requires_grad_(true);
            var k = randn(AttentionShape, dtype).requires_grad_(true);
            var v = randn(AttentionShape, dtype).requires_grad_(true);
            var upstream = randn(AttentionShape, dtype);
            // Additive padding mask as the encoders build it: the last 40 keys of every other sequence are padding.
            var mask = zeros([AttentionShape[0], 1, 1, AttentionShape[2]], dtype);
            using (no_grad()) mask[TensorIndex.Slice(0, null, 2), .., .., (int)(AttentionShape[2] - 40)..].fill_(finfo(dtype).min);
            Console.Error.WriteLine($"attention {string.Join("x", AttentionShape)} {ForwardBenchmark.DTypeName(dtype)}");
            (double Forward, double Both) Time(Func<Tensor> attend) =>
                (Timings.Measure(() => { using var step = NewDisposeScope(); using var _ = no_grad(); attend(); }, options.Warmup, options.Runs).Median,
                 Timings.Measure(() => { using var step = NewDisposeScope(); autograd.grad([attend()], [q, k, v], [upstream]); }, options.Warmup, options.Runs).Median);
            var kernel = Time(() => nn.functional.scaled_dot_product_attention(q, k, v, mask, 0));
            var kernelNoMask = Time(() => nn.functional.scaled_dot_product_attention(q, k, v, null, 0));
            var kernelDropout = Time(() => nn.functional.scaled_dot_product_attention(q, k, v, mask, P));
            var library = Time(() => ScaledDotProductAttention.Compute(q, k, v, mask, isCausal: false, P));
            // The same math written out with no dropout: what the explicit path costs before its mask.
            var writtenOut = Time(() => (q.matmul(k.transpose(-2, -1)) * (1 / Math.Sqrt(AttentionShape[3])) + mask).softmax(-1).matmul(v));
            foreach (var (what, t) in new[] { ("libtorch kernel, p = 0 (eval path, unchanged)", kernel), ("libtorch kernel, p = 0, no mask", kernelNoMask), ($"libtorch kernel, p = {P}", kernelDropout),
                         ($"library, p = {P} (explicit math + InvertedDropout)", library), ("explicit math, no dropout (reference)", writtenOut) })
                attention.Add([ForwardBenchmark.DTypeName(dtype), what, F(t.Forward, 1), F(t.Both, 1)]);
        }
        string loadAfter = MachineInfo.LoadAverage();

        Console.WriteLine($"### Dropout on the CPU (`dropout`): p = {P}, {options.Runs} timed runs after {options.Warmup} warm-up, median");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter));
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(
            ["shape", "dtype", "libtorch dropout fwd+bwd ms (ns/element)", "InvertedDropout fwd+bwd", "speed-up",
             "libtorch's mask: bernoulli_", "InvertedDropout's mask", "rand float32", "multiply alone"], elementwise));
        Console.WriteLine(Markdown.Table(
            ["dtype", $"attention {string.Join(" x ", AttentionShape)}, padding mask", "forward ms", "forward + backward ms"], attention));
        return 0;
    }

    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
