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
/// engine call (tokenization, collation, forward, softmax and copy back, ML.NET's plumbing).
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
        var fitted = ml.FineTune().Lora(new TextClassificationOptions { BaseModel = baseModel, MaxSequenceLength = 64, Epochs = 1, BatchSize = 16, Seed = 1,
            ScoringPrecision = ScoringPrecision.AsTrained })
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
        var engineRows = Timings.Measure(() => { foreach (var r in reviews) engine.Predict(r); }, 1, 3);
        var transformRows = Timings.Measure(() =>
        {
            var scored = model.Transform(data);
            using var cursor = scored.GetRowCursor(scored.Schema.Where(c => c.Name == "Probability"));
            var probability = cursor.GetGetter<float>(cursor.Schema["Probability"]);
            float p = 0;
            while (cursor.MoveNext()) probability(ref p);
        }, 1, 3);
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
        for (int round = 0; round < 6; round++)
            foreach (bool fixedPath in new[] { false, true })
            {
                MLNet.FineTune.Runtime.CallingThreadIntraOp.Enabled = fixedPath;
                (fixedPath ? after : before).AddRange(Timings.Measure(() => engine.Predict(input), 5, runs / 4).Milliseconds);
            }
        MLNet.FineTune.Runtime.CallingThreadIntraOp.Enabled = true;
        var beforeTimings = new Timings(before);
        var afterTimings = new Timings(after);

        // Batch invariance on MiniLM: the reviews alone (engine) vs in Transform's batches of 64, in both precisions.
        var invariance = new List<(string Precision, double MaxDifference, double TransformRate, double EngineP50)>();
        foreach (var precision in new[] { "as trained (" + transformer.Adapted.BaseDType + ")", "float32" })
        {
            if (precision == "float32") transformer.Adapted.HoldFrozenWeightsInFloat32(); // what ScoringPrecision.Float32 does
            var alone = reviews.Select(r => engine.Predict(r).Probability).ToArray();
            var batched = ml.Data.CreateEnumerable<ReviewPrediction>(model.Transform(data), reuseRowObject: false).Select(p => p.Probability).ToArray();
            double maxDifference = alone.Zip(batched).Max(p => Math.Abs((double)p.First - p.Second));
            var rate = Timings.Measure(() => ml.Data.CreateEnumerable<ReviewPrediction>(model.Transform(data), reuseRowObject: false).Count(), 1, 3);
            var p50 = Timings.Measure(() => engine.Predict(input), warmup, runs / 2);
            invariance.Add((precision, maxDifference, reviews.Count / (rate.Median / 1e3), p50.Median));
        }

        var breakdown = Breakdown(transformer, warmup, runs);
        var classifierModel = transformer.Classifier;
        var texts = reviews.Select(r => new MLNet.FineTune.Tasks.TextClassification.TextInput(r.Text, null)).ToList();
        foreach (int b in new[] { 1, 8, 64 })
        {
            var direct = Timings.Measure(() => classifierModel.Predict(texts, b), 1, 3);
            breakdown.Add(($"TextClassifierModel.Predict of the reviews, batch {b} (ms per row)", direct.Median / reviews.Count));
        }
        var sorted = texts.OrderBy(t => t.Text.Length).ToList();
        var directSorted = Timings.Measure(() => classifierModel.Predict(sorted, 64), 1, 3);
        breakdown.Add(($"TextClassifierModel.Predict of the reviews sorted by length, batch 64 (ms per row)", directSorted.Median / reviews.Count));
        string loadAfter = MachineInfo.LoadAverage();

        Console.WriteLine($"### Serving latency (`latency`): MiniLM + LoRA classifier trained on {TrainRows} rows, reloaded from model.zip");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter));
        Console.WriteLine();
        Console.WriteLine($"Base held in {transformer.Adapted.BaseDType}, scored as held. Short sentence \"{ShortSentence}\" ({tokens} tokens); " +
                          $"{warmup} warm-up calls, {runs} timed. Transform and engine row rates on the {reviews.Count} sample reviews " +
                          $"(`samples/SentimentAnalysis/Data/reviews.tsv`), median of 3 passes, scoring batch 64.");
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
        Console.WriteLine(Markdown.Table(["scoring precision", "max P(alone) - P(batch of 64), reviews", "Transform rows/s", "engine p50 ms"],
            invariance.Select(i => (IReadOnlyList<string>)[i.Precision, i.MaxDifference.ToString("E2", CultureInfo.InvariantCulture), F(i.TransformRate, 1), F(i.EngineP50, 2)])));
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
        foreach (int threads in new[] { 1, torch.get_num_threads() }.Distinct())
        {
            int before = torch.get_num_threads();
            torch.set_num_threads(threads);
            var forward = Timings.Measure(() =>
            {
                using var noGrad = no_grad();
                using var scope = NewDisposeScope();
                var batch = Collate.Encoder([ids], pad, tokenTypeIds: [types], device: adapted.Device);
                classifier.call(batch);
            }, warmup, runs);
            torch.set_num_threads(before);
            result.Add(($"forward as scored, {threads} torch thread(s)", forward.Median));
        }
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

    internal static double Percentile(Timings timings, double q)
    {
        var sorted = timings.Milliseconds.Order().ToArray();
        return sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
    }

    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
