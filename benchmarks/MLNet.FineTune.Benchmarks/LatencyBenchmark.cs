using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using MLNet.FineTune.Models;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>latency</c>: serving speed of a fitted text classifier as users deploy it. Trains all-MiniLM-L6-v2 + LoRA on a
/// few rows through the public API (<c>ml.FineTune().Lora</c>, default precision), saves and reloads model.zip, then
/// measures PredictionEngine latency (p50/p90/p99) on a short sentence, batched Transform rows/s on the sample
/// reviews, the ratio of Transform's row rate to the engine's on the same rows, and a stopwatch breakdown of one
/// engine call (tokenization, collation, forward, softmax and copy back, ML.NET's plumbing), the compute ceiling of
/// the Transform/engine ratio on this CPU, and both scoring precisions' batch dependence and cost.
/// </summary>
internal sealed class LatencyBenchmark : IBenchmark
{
    private const string ShortSentence = "The food was great.";
    private const int TrainRows = 32;

    public string Name => "latency";
    public string Summary => "PredictionEngine p50/p90/p99 vs batched Transform rows/s of a reloaded MiniLM + LoRA classifier, with a breakdown";

    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }
    public sealed class ReviewPrediction { public float Probability { get; set; } public bool PredictedLabel { get; set; } }

    /// <summary>What <see cref="MeasureServing"/> measured.</summary>
    internal sealed record Serving(ITransformer Model, IDataView Data, List<Review> Reviews, int Tokens, Timings Single, Timings EngineRows, Timings TransformRows)
    {
        public double EngineRate => Reviews.Count / (EngineRows.Median / 1e3);
        public double TransformRate => Reviews.Count / (TransformRows.Median / 1e3);
        public double P(double q) => Percentile(Single, q);
    }

    /// <summary>Trains a LoRA classifier on <paramref name="baseModel"/> (null: MiniLM) through the public API in
    /// <paramref name="ml"/>'s device, saves and reloads model.zip, and times PredictionEngine and Transform.</summary>
    internal static Serving MeasureServing(MLContext ml, string? baseModel, int warmup, int runs)
    {
        var reviews = TrainBenchmark.ReadReviews(TrainBenchmark.FindReviews())
            .Select(r => new Review { Text = r.Text, Label = r.Label == 1 }).ToList();
        string zip = Path.Combine(Path.GetTempPath(), $"mlnet-finetune-latency-{Environment.ProcessId}.zip");
        var trainData = ml.Data.LoadFromEnumerable(reviews.Take(TrainRows));
        Console.Error.WriteLine($"training {baseModel ?? "MiniLM"} + LoRA on {TrainRows} rows (1 epoch)...");
        var fitted = ml.FineTune().Lora(new TextClassificationOptions { BaseModel = baseModel, MaxSequenceLength = 64, Epochs = 1, BatchSize = 16, Seed = 1 })
            .Fit(trainData);
        ml.Model.Save(fitted, trainData.Schema, zip);
        fitted.Adapted.Model.Dispose();
        var model = ml.Model.Load(zip, out _);
        File.Delete(zip);
        var transformer = (MLNet.FineTune.Tasks.TextClassification.TextClassificationTransformer)model;
        Console.Error.WriteLine($"reloaded on {transformer.Adapted.Device}; base dtype {transformer.Adapted.BaseDType}");

        var engine = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model);
        var input = new Review { Text = ShortSentence };
        int tokens = transformer.Adapted.Tokenizer.Encode(ShortSentence, addSpecialTokens: true).Ids.Count;
        var single = Timings.Measure(() => engine.Predict(input), warmup, runs);

        // Engine row rate and Transform row rate on the same rows (the sample reviews).
        var data = ml.Data.LoadFromEnumerable(reviews);
        void ScoreWithEngine() { foreach (var r in reviews) engine.Predict(r); }
        void ScoreWithTransform()
        {
            var scored = model.Transform(data);
            using var cursor = scored.GetRowCursor(scored.Schema.Where(c => c.Name == "Probability"));
            var probability = cursor.GetGetter<float>(cursor.Schema["Probability"]);
            float p = 0;
            while (cursor.MoveNext()) probability(ref p);
        }
        // Alternating passes, so that both rates see the same machine speed (it drifts on a shared VM).
        ScoreWithEngine();
        ScoreWithTransform();
        var enginePasses = new List<double>();
        var transformPasses = new List<double>();
        for (int pass = 0; pass < 3; pass++)
        {
            enginePasses.AddRange(Timings.Measure(ScoreWithEngine, 0, 1).Milliseconds);
            transformPasses.AddRange(Timings.Measure(ScoreWithTransform, 0, 1).Milliseconds);
        }
        var engineRows = new Timings(enginePasses);
        var transformRows = new Timings(transformPasses);
        return new Serving(model, data, reviews, tokens, single, engineRows, transformRows);
    }

    public int Run(BenchmarkOptions options)
    {
        string loadBefore = MachineInfo.LoadAverage();
        var ml = new MLContext(seed: 1);
        int warmup = Math.Max(options.Warmup, 20), runs = Math.Max(options.Runs, 200);
        var serving = MeasureServing(ml, null, warmup, runs);
        var (model, data, reviews, tokens, single, transformRows) = (serving.Model, serving.Data, serving.Reviews, serving.Tokens, serving.Single, serving.TransformRows);
        var transformer = (MLNet.FineTune.Tasks.TextClassification.TextClassificationTransformer)model;
        double engineRate = serving.EngineRate, transformRate = serving.TransformRate;

        // Before/after the single-row fix, alternating in rounds so both see the same machine load.
        var engine = ml.Model.CreatePredictionEngine<Review, ReviewPrediction>(model);
        var input = new Review { Text = ShortSentence };
        var before = new List<double>();
        var after = new List<double>();
        // This shared VM's speed drifts over minutes (other tenants): each round also times a one-thread bf16 matmul,
        // so a slow round shows as a slow machine rather than a slow engine.
        var rounds = new List<(double BeforeP50, double AfterP50, double MatmulGflops)>();
        for (int round = 0; round < 6; round++)
        {
            double matmul;
            using (MLNet.FineTune.Runtime.CallingThreadIntraOp.SingleThreaded()) matmul = MatmulPeak.Measure(ScalarType.BFloat16, 384, 3, 20).GigaflopsPerSecond;
            var p50 = new double[2];
            foreach (bool fixedPath in new[] { false, true })
            {
                MLNet.FineTune.Runtime.CallingThreadIntraOp.Enabled = fixedPath;
                var timings = Timings.Measure(() => engine.Predict(input), 5, runs / 4);
                (fixedPath ? after : before).AddRange(timings.Milliseconds);
                p50[fixedPath ? 1 : 0] = timings.Median;
            }
            rounds.Add((p50[0], p50[1], matmul));
        }
        var beforeTimings = new Timings(before);
        var afterTimings = new Timings(after);

        // Where one call goes, and Transform's batching, in the default precision (before float32 is tried below).
        var breakdown = Breakdown(transformer, warmup, runs);
        var classifierModel = transformer.Classifier;
        var texts = reviews.Select(r => new MLNet.FineTune.Tasks.TextClassification.TextInput(r.Text, null)).ToList();
        foreach (int b in new[] { 1, 8, 64 })
        {
            // One Predict call per batch: rows scored in their order (what Transform did before its sorted read-ahead).
            var inOrder = Timings.Measure(() => { foreach (var chunk in texts.Chunk(b)) classifierModel.Predict(chunk, b); }, 1, 3);
            breakdown.Add(($"TextClassifierModel.Predict of the reviews in order, batch {b} (ms per row)", inOrder.Median / reviews.Count));
        }
        var sortedReadAhead = Timings.Measure(() => { foreach (var chunk in texts.Chunk(64 * 8)) classifierModel.Predict(chunk, 64); }, 1, 3);
        breakdown.Add(("TextClassifierModel.Predict, read-ahead of 512 sorted by length, batch 64 (Transform's way; ms per row)", sortedReadAhead.Median / reviews.Count));

        // The ratio's ceiling: Transform cannot beat the bf16 matmul peak of both cores on the reviews' unpadded FLOPs.
        var tokenCounts = reviews.Select(r => transformer.Adapted.Tokenizer.Encode(r.Text, addSpecialTokens: true, maxLength: 64).Ids.Count).ToList();
        double flopsPerRow = tokenCounts.Average(t => EncoderFlops(transformer.Adapted.Model, t));
        // Measured here and again after the precision table below; the faster one is the machine's capability.
        double peakNearTransform = MatmulPeak.Measure(ScalarType.BFloat16, 1024, 3, 10).GigaflopsPerSecond;

        // Batch invariance on MiniLM: the reviews alone (engine) vs in Transform's batches of 64, in both precisions.
        var invariance = new List<(string Precision, double MaxDifference, int LabelsChanged, double TransformRate, double EngineP50)>();
        foreach (var precision in new[] { "as trained, the default (" + transformer.Adapted.BaseDType + ")", "float32" })
        {
            if (precision == "float32") transformer.Adapted.HoldFrozenWeightsInFloat32(); // what ScoringPrecision.Float32 does
            var alone = reviews.Select(r => engine.Predict(r)).ToArray();
            var batched = ml.Data.CreateEnumerable<ReviewPrediction>(model.Transform(data), reuseRowObject: false).ToArray();
            double maxDifference = alone.Zip(batched).Max(p => Math.Abs((double)p.First.Probability - p.Second.Probability));
            int labelsChanged = alone.Zip(batched).Count(p => p.First.PredictedLabel != p.Second.PredictedLabel);
            var rate = Timings.Measure(() => ml.Data.CreateEnumerable<ReviewPrediction>(model.Transform(data), reuseRowObject: false).Count(), 1, 3);
            var p50 = Timings.Measure(() => engine.Predict(input), warmup, runs / 2);
            invariance.Add((precision, maxDifference, labelsChanged, reviews.Count / (rate.Median / 1e3), p50.Median));
        }

        double peakLater = MatmulPeak.Measure(ScalarType.BFloat16, 1024, 3, 10).GigaflopsPerSecond;
        double peakGflops = Math.Max(peakNearTransform, peakLater);
        double transformGflops = flopsPerRow * transformRate / 1e9;
        double ceilingRate = peakGflops * 1e9 / flopsPerRow;
        string loadAfter = MachineInfo.LoadAverage();

        Console.WriteLine($"### Serving latency (`latency`): MiniLM + LoRA classifier trained on {TrainRows} rows, reloaded from model.zip");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter));
        Console.WriteLine();
        Console.WriteLine($"Base held in {transformer.Adapted.BaseDType}, scored as held (ScoringPrecision.AsTrained, the default). Short sentence \"{ShortSentence}\" ({tokens} tokens); " +
                          $"{warmup} warm-up calls, {runs} timed. Transform and engine row rates on the {reviews.Count} sample reviews " +
                          $"(`samples/SentimentAnalysis/Data/reviews.tsv`), median of 3 alternating passes, scoring batch 64.");
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(["measure", "value"],
        [
            ["PredictionEngine p50 (ms)", F(Percentile(single, 0.50), 2)],
            ["PredictionEngine p90 (ms)", F(Percentile(single, 0.90), 2)],
            ["PredictionEngine p99 (ms)", F(Percentile(single, 0.99), 2)],
            ["PredictionEngine rows/s (reviews)", F(engineRate, 1)],
            ["Transform rows/s (reviews)", F(transformRate, 1)],
            ["Transform / engine row rate", F(transformRate / engineRate, 1) + "x"],
        ]));
        Console.WriteLine(Markdown.Table(["PredictionEngine, short sentence, alternating rounds", "p50 ms", "p90 ms", "p99 ms"],
        [
            ["all torch threads (before)", F(Percentile(beforeTimings, 0.5), 2), F(Percentile(beforeTimings, 0.9), 2), F(Percentile(beforeTimings, 0.99), 2)],
            ["calling thread only (after)", F(Percentile(afterTimings, 0.5), 2), F(Percentile(afterTimings, 0.9), 2), F(Percentile(afterTimings, 0.99), 2)],
        ]));
        Console.WriteLine(Markdown.Table(["round", "p50 ms, all torch threads", "p50 ms, calling thread only", "bf16 matmul 384^3 on one thread (GFLOP/s)"],
            rounds.Select((r, i) => (IReadOnlyList<string>)[(i + 1).ToString(CultureInfo.InvariantCulture), F(r.BeforeP50, 2), F(r.AfterP50, 2), F(r.MatmulGflops, 1)])));
        Console.WriteLine(Markdown.Table(["Transform's compute ceiling on this CPU", "value"],
        [
            ["review tokens, mean (max 64)", F(tokenCounts.Average(), 1)],
            ["encoder GFLOP per review, unpadded", F(flopsPerRow / 1e9, 3)],
            ["bf16 matmul peak, 1024^3, all torch threads (GFLOP/s): the faster of two, measured after the rates above and at the end", $"{F(peakGflops, 1)} ({F(peakNearTransform, 1)}, {F(peakLater, 1)})"],
            ["Transform (GFLOP/s of unpadded work)", F(transformGflops, 1) + $" ({F(100 * transformGflops / peakGflops, 0)}% of peak)"],
            ["Transform rows/s at the matmul peak", F(ceilingRate, 1)],
            ["ceiling of Transform / engine row rate", F(ceilingRate / engineRate, 1) + "x"],
        ]));
        Console.WriteLine(Markdown.Table(["scoring precision", "max P(alone) - P(batch of 64), reviews", "predicted labels changed", "Transform rows/s", "engine p50 ms"],
            invariance.Select(i => (IReadOnlyList<string>)[i.Precision, i.MaxDifference.ToString("E2", CultureInfo.InvariantCulture),
                i.LabelsChanged.ToString(CultureInfo.InvariantCulture), F(i.TransformRate, 1), F(i.EngineP50, 2)])));
        Console.WriteLine(Markdown.Table(["one call, short sentence", "median ms"], breakdown.Select(b => (IReadOnlyList<string>)[b.Name, F(b.Ms, 3)])));
        return 0;
    }

    /// <summary>The stages of one single-row score, timed one by one on the transformer's model: what the engine call
    /// costs beyond them is ML.NET's plumbing and the scorer's own work.</summary>
    private static List<(string Name, double Ms)> Breakdown(MLNet.FineTune.Tasks.TextClassification.TextClassificationTransformer transformer, int warmup, int runs)
    {
        var adapted = transformer.Adapted;
        var classifier = (SequenceClassificationModel)adapted.Model;
        long pad = adapted.Tokenizer.PadTokenId ?? 0;
        long[] ids = [], types = [];
        var tokenize = Timings.Measure(() =>
        {
            var e = adapted.Tokenizer.Encode(ShortSentence, addSpecialTokens: true, maxLength: 64);
            ids = e.Ids.Select(i => (long)i).ToArray();
            types = e.TokenTypeIds.Select(i => (long)i).ToArray();
        }, warmup, runs);
        var collate = Timings.Measure(() =>
        {
            using var scope = NewDisposeScope();
            Collate.Encoder([ids], pad, tokenTypeIds: [types], device: adapted.Device);
        }, warmup, runs);
        var result = new List<(string, double)> { ("tokenize", tokenize.Median), ("collate (tensors)", collate.Median) };
        Console.Error.WriteLine($"calling-thread OpenMP limit available: {MLNet.FineTune.Runtime.CallingThreadIntraOp.Available}");
        var reviewTexts = TrainBenchmark.ReadReviews(TrainBenchmark.FindReviews()).Select(r => r.Text).ToList();
        foreach (int rows in new[] { 1, 2, 4, 8, 16, 64 })
        {
            var encoded = (rows == 1 ? [ShortSentence] : reviewTexts.Take(rows)).Select(t => adapted.Tokenizer.Encode(t, addSpecialTokens: true, maxLength: 64))
                .Select(e => (IReadOnlyList<long>)e.Ids.Select(i => (long)i).ToArray()).ToList();
            int width = encoded.Max(e => e.Count);
            foreach (bool single in new[] { false, true })
            {
                var forward = Timings.Measure(() =>
                {
                    using var limit = single ? MLNet.FineTune.Runtime.CallingThreadIntraOp.SingleThreaded() : default;
                    using var noGrad = no_grad();
                    using var scope = NewDisposeScope();
                    classifier.call(Collate.Encoder(encoded, pad, device: adapted.Device));
                }, rows > 8 ? 2 : warmup, rows > 8 ? 10 : runs);
                result.Add(($"forward {rows} x {width} tokens, {(single ? "calling thread only" : "all torch threads")}", forward.Median));
            }
        }
        return result;
    }

    /// <summary>Multiply-adds x 2 of one unpadded row of <paramref name="tokens"/> through the encoder: every linear
    /// layer of the blocks (LoRA's included) once per token, plus attention's two T x T products per layer.</summary>
    private static double EncoderFlops(nn.Module model, int tokens)
    {
        // The pooler and the head see one vector per row: left out (under 0.1% of a review's work).
        var linears = model.named_parameters().Where(p => p.parameter.dim() == 2 && p.name.Contains(".encoder.", StringComparison.Ordinal)).ToList();
        double linearFlops = 2.0 * tokens * linears.Sum(p => (double)p.parameter.numel());
        long layers = model.named_modules().Count(m => m.name.EndsWith(".attention.self", StringComparison.Ordinal));
        long hidden = linears.First(p => p.name.EndsWith("query.weight", StringComparison.Ordinal)).parameter.shape[0];
        return linearFlops + layers * 4.0 * tokens * tokens * hidden;
    }

    internal static double Percentile(Timings timings, double q)
    {
        var sorted = timings.Milliseconds.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
    }

    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
