using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// The machine's practical matmul rate: a square n x n matmul in one dtype, measured in the same process and thread
/// setting as the benchmark it is compared with, so results can be stated as a fraction of it.
/// </summary>
internal static class MatmulPeak
{
    /// <summary>Median GFLOP/s (2 n^3 flops per product) and the timings.</summary>
    public static (double GigaflopsPerSecond, Timings Timings) Measure(ScalarType dtype, int n, int warmup, int runs)
    {
        using var scope = NewDisposeScope();
        manual_seed(0);
        var a = randn([n, n]).to_type(dtype);
        var b = randn([n, n]).to_type(dtype);
        var timings = Timings.Measure(() =>
        {
            using var step = NewDisposeScope();
            a.matmul(b);
        }, warmup, runs);
        return (2.0 * n * n * n / (timings.Median / 1e3) / 1e9, timings);
    }
}
