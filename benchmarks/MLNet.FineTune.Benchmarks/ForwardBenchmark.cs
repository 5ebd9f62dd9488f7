using System.Globalization;
using MLNet.FineTune.Models;
using MLNet.FineTune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>forward</c>: inference throughput of the default encoder (all-MiniLM-L6-v2, <see cref="DefaultModels.MiniLM()"/>)
/// in float32 and bfloat16 on full batches of real text, the bf16 deviation from float32, and the square-matmul rate of
/// both dtypes measured in the same run (before and after), so each throughput is also a fraction of what the machine's matmul reaches.
/// </summary>
internal sealed class ForwardBenchmark : IBenchmark
{
    private static readonly (int Batch, int Tokens)[] Shapes = [(32, 128), (8, 64), (1, 16)]; // the last: one short row, as a PredictionEngine scores it
    /// <summary>The dtypes compared, float32 first.</summary>
    internal static readonly ScalarType[] DTypes = [ScalarType.Float32, ScalarType.BFloat16];
    /// <summary>n of the square matmul whose rate is the peak.</summary>
    internal const int MatmulSize = 1024;

    // Plain English prose, tokenized and cycled to fill every row with real word pieces (no padding).
    private const string Text =
        "The committee met on a rainy Tuesday to review the budget for the coming year. Most members agreed that the " +
        "library needed new shelves, longer opening hours and a reading room for students, but the cost of heating the " +
        "old building kept rising. After two hours of discussion they voted to repair the roof first, postpone the new " +
        "furniture until spring, and ask the city council for a small grant. Outside, the river had risen above the " +
        "footpath, and the bakery across the square was selling warm bread to anyone who had forgotten an umbrella. " +
        "Nobody expected the meeting to end early, yet by six o'clock the hall was empty and the lights were switched off.";

    public string Name => "forward";
    public string Summary => "MiniLM encoder forward throughput, float32 vs bfloat16, bf16 deviation, and the matmul peak";

    public int Run(BenchmarkOptions options)
    {
        string loadBefore = MachineInfo.LoadAverage();
        var folder = DefaultModels.MiniLM();
        var tokenizer = HfTokenizer.FromFolder(folder);
        var models = DTypes.ToDictionary(d => d, d => ModelFactory.FromPretrainedBaseModel(folder, d).Model);
        var bert = (BertModel)models[ScalarType.Float32];
        var config = bert.Settings;
        Console.Error.WriteLine($"model: {folder} ({config.NumHiddenLayers} layers, hidden {config.HiddenSize}, {config.NumAttentionHeads} heads, FFN {config.IntermediateSize})");

        var peaksBefore = MeasurePeaks(options);
        var speed = new List<(int Batch, int Tokens, ScalarType DType, Timings Timings, double Gflop)>();
        var deviations = new List<(int Batch, int Tokens, double Max, double Mean, double Scale)>();
        foreach (var (batch, tokens) in Shapes)
        {
            using var scope = NewDisposeScope();
            var inputs = TextBatch(tokenizer, batch, tokens);
            double gflop = ForwardFlops(config, batch, tokens) / 1e9;
            foreach (var dtype in DTypes)
            {
                Console.Error.WriteLine($"timing {dtype} {batch} x {tokens}: {options.Warmup} warm-up + {options.Runs} runs");
                var model = models[dtype];
                var timings = Timings.Measure(() =>
                {
                    using var step = NewDisposeScope();
                    using var _ = no_grad();
                    model.call(inputs);
                }, options.Warmup, options.Runs);
                speed.Add((batch, tokens, dtype, timings, gflop));
            }
            using (no_grad())
            {
                var f32 = models[ScalarType.Float32].call(inputs).LastHiddenState;                 // (B, T, H)
                var bf16 = models[ScalarType.BFloat16].call(inputs).LastHiddenState.to_type(ScalarType.Float32);
                var diff = (bf16 - f32).abs();
                deviations.Add((batch, tokens, diff.max().item<float>(), diff.mean().item<float>(), f32.abs().max().item<float>()));
            }
        }

        var peaksAfter = MeasurePeaks(options);
        var peaks = BestPeaks(peaksBefore, peaksAfter);
        string loadAfter = MachineInfo.LoadAverage();
        foreach (var model in models.Values) model.Dispose();

        Console.WriteLine($"### MiniLM encoder forward (`forward`), {options.Runs} timed runs after {options.Warmup} warm-up, median");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter));
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(
            ["dtype", "batch x tokens", "median ms (min..max)", "sequences/s", "tokens/s", "GFLOP/s", "% of matmul peak"],
            speed.Select(s =>
            {
                double seconds = s.Timings.Median / 1e3, gflops = s.Gflop / seconds;
                return (IReadOnlyList<string>)[DTypeName(s.DType), $"{s.Batch} x {s.Tokens}",
                    $"{F(s.Timings.Median, 1)} ({F(s.Timings.Min, 1)}..{F(s.Timings.Max, 1)})",
                    F(s.Batch / seconds, 1), F(s.Batch * s.Tokens / seconds, 0), F(gflops, 1),
                    F(100 * gflops / peaks[s.DType].GigaflopsPerSecond, 0) + "%"];
            })));
        Console.WriteLine(Markdown.Table(
            ["batch x tokens", "bf16 / f32 throughput", "max abs(bf16 - f32) of last_hidden_state", "mean abs(bf16 - f32)", "max abs(f32)"],
            deviations.Select(d =>
            {
                double f32 = speed.Single(s => s.Batch == d.Batch && s.Tokens == d.Tokens && s.DType == ScalarType.Float32).Timings.Median;
                double bf16 = speed.Single(s => s.Batch == d.Batch && s.Tokens == d.Tokens && s.DType == ScalarType.BFloat16).Timings.Median;
                return (IReadOnlyList<string>)[$"{d.Batch} x {d.Tokens}", F(f32 / bf16, 2) + "x", d.Max.ToString("E2", CultureInfo.InvariantCulture),
                    d.Mean.ToString("E2", CultureInfo.InvariantCulture), F(d.Scale, 2)];
            })));
        Console.WriteLine(PeakTable(peaksBefore, peaksAfter));
        Console.WriteLine("GFLOP/s counts the forward's matrix products only: per layer 8 H^2 + 4 H I per token for the projections and " +
                          "4 T H per token for attention scores and their weighted sum, plus the pooler.");
        return 0;
    }

    /// <summary>Square-matmul GFLOP/s of each dtype (measured before and after the timed work; also used by <c>train</c>).</summary>
    internal static Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> MeasurePeaks(BenchmarkOptions options) =>
        DTypes.ToDictionary(d => d, d =>
        {
            Console.Error.WriteLine($"timing {d} matmul {MatmulSize}: {options.Warmup + 1} warm-up + {2 * options.Runs} runs");
            return MatmulPeak.Measure(d, MatmulSize, options.Warmup + 1, 2 * options.Runs);
        });

    /// <summary>The peak per dtype: the better of the two matmul runs, since on a shared machine the slower one measured other work.</summary>
    internal static Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> BestPeaks(
        Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> before, Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> after) =>
        DTypes.ToDictionary(d => d, d => before[d].GigaflopsPerSecond >= after[d].GigaflopsPerSecond ? before[d] : after[d]);

    /// <summary>The markdown table of both matmul measurements and the peak used.</summary>
    internal static string PeakTable(
        Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> before, Dictionary<ScalarType, (double GigaflopsPerSecond, Timings Timings)> after)
    {
        var peaks = BestPeaks(before, after);
        return Markdown.Table(
            ["square matmul", "dtype", "before: median ms", "GFLOP/s", "after: median ms", "GFLOP/s", "peak used"],
            DTypes.Select(d => (IReadOnlyList<string>)[$"n = {MatmulSize}", DTypeName(d),
                F(before[d].Timings.Median, 2), F(before[d].GigaflopsPerSecond, 1),
                F(after[d].Timings.Median, 2), F(after[d].GigaflopsPerSecond, 1), F(peaks[d].GigaflopsPerSecond, 1)]));
    }

    /// <summary>(B, T) ids of real text: row b is [CLS] + T - 2 word pieces of <see cref="Text"/> from offset 7 b (cycled) + [SEP]; no padding.</summary>
    internal static EncoderInputs TextBatch(HfTokenizer tokenizer, int batch, int tokens)
    {
        var pieces = tokenizer.Encode(Text, addSpecialTokens: false).Ids;
        long cls = tokenizer.ClsTokenId ?? throw new InvalidOperationException("The MiniLM tokenizer has no [CLS] token."),
             sep = tokenizer.SepTokenId ?? throw new InvalidOperationException("The MiniLM tokenizer has no [SEP] token.");
        var ids = new long[batch * tokens];
        for (int b = 0; b < batch; b++)
        {
            ids[b * tokens] = cls;
            for (int t = 1; t < tokens - 1; t++) ids[b * tokens + t] = pieces[(7 * b + t - 1) % pieces.Count];
            ids[b * tokens + tokens - 1] = sep;
        }
        return new EncoderInputs(tensor(ids, [batch, tokens]), ones([batch, tokens], ScalarType.Int64), zeros([batch, tokens], ScalarType.Int64));
    }

    /// <summary>Matrix-product flops of one BERT forward: per layer and token 2 (4 H^2 + 2 H I) for q, k, v, output and the
    /// feed-forward, 2 (2 T H) for q k^T and the weighted sum of v; the pooler's 2 H^2 per sequence.</summary>
    internal static double ForwardFlops(BertConfig c, int batch, int tokens)
    {
        double h = c.HiddenSize, i = c.IntermediateSize, perToken = 2 * (4 * h * h + 2 * h * i) + 4.0 * tokens * h;
        return c.NumHiddenLayers * perToken * batch * tokens + 2 * h * h * batch;
    }

    internal static string DTypeName(ScalarType dtype) => dtype == ScalarType.BFloat16 ? "bfloat16" : "float32";
    internal static string F(double value, int decimals) => value.ToString("F" + decimals, CultureInfo.InvariantCulture);
}
