using System.Diagnostics;
using System.Globalization;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>train</c>: LoRA training throughput of the default encoder (all-MiniLM-L6-v2, <see cref="DefaultModels.MiniLM()"/>)
/// through the library's own path (ModelFactory -> bf16 cast -> PeftModel.Inject -> ParameterGroups -> FineTuneTrainer),
/// float32 against a frozen bfloat16 base with float32 adapters, for two target sets and two batch sizes, on real
/// English text with dynamic padding. Each configuration trains for a fixed wall time after warm-up steps; the per-step
/// throughput comes from the trainer's history. Also: model FLOP/s as a fraction of the square-matmul peak measured in
/// the same run, and the time share of the optimizer step.
/// </summary>
internal sealed class TrainBenchmark : IBenchmark
{
    private const int MaxSequenceLength = 128;
    private const int NumLabels = 2;
    private const int Rank = 8;
    private const double Alpha = 16, LoraDropout = 0.1, LearningRate = 5e-4;
    private const int ExampleCount = 2000;
    private const int MaxSentencesPerExample = 8;
    private const string ReviewsFile = "samples/SentimentAnalysis/Data/reviews.tsv";
    // Each configuration trains this long after its warm-up steps, and for at least MinMeasuredSteps steps (which
    // decides on a loaded machine, where a step can take 10 s): 8 configurations, about 5 minutes on a quiet machine.
    private static readonly TimeSpan MeasuredTime = TimeSpan.FromSeconds(25);
    private const int MinMeasuredSteps = 5;
    private static readonly int[] BatchSizes = [32, 8];
    private static readonly (string Name, string[] Modules)[] TargetSets =
    [
        ("query, value", ["query", "value"]),
        ("query, key, value, dense", ["query", "key", "value", "dense"]),
    ];

    public string Name => "train";
    public string Summary => "LoRA training throughput of MiniLM, float32 vs a bfloat16 frozen base, FLOPs vs the matmul peak";

    private sealed record Example(long[] Ids, long[] TokenTypeIds, long Label);

    private sealed record Result(ScalarType DType, string Targets, int Batch, long TrainableParameters, int WarmupSteps,
        IReadOnlyList<(int Batch, int Width, double Seconds, double Flops)> Steps, Timings Optimizer, string Load);

    public int Run(BenchmarkOptions options)
    {
        string loadBefore = MachineInfo.LoadAverage();
        var folder = DefaultModels.MiniLM();
        var tokenizer = HfTokenizer.FromFolder(folder);
        var examples = BuildExamples(tokenizer, ReadReviews(FindReviews()));
        var lengths = examples.Select(e => e.Ids.Length).Order().ToArray();
        Console.Error.WriteLine($"model: {folder}; {examples.Count} examples, tokens per example min {lengths[0]}, median {lengths[lengths.Length / 2]}, " +
                                $"mean {lengths.Average():F1}, max {lengths[^1]}");

        var peaksBefore = ForwardBenchmark.MeasurePeaks(options);
        var results = new List<Result>();
        // f32 and bf16 of one shape run back to back, so that their ratio sees the same machine load.
        foreach (var targets in TargetSets)
            foreach (var batch in BatchSizes)
                foreach (var dtype in ForwardBenchmark.DTypes)
                    results.Add(Train(folder, tokenizer, examples, dtype, targets, batch, options));
        var peaksAfter = ForwardBenchmark.MeasurePeaks(options);
        var peaks = ForwardBenchmark.BestPeaks(peaksBefore, peaksAfter);
        string loadAfter = MachineInfo.LoadAverage();

        Console.WriteLine($"### MiniLM LoRA training (`train`): {MeasuredTime.TotalSeconds:F0} s (at least {MinMeasuredSteps} steps) per configuration after {Math.Max(options.Warmup, 1)} warm-up steps, median of the steps");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter));
        Console.WriteLine();
        Console.WriteLine($"Data: {examples.Count} examples of 1-{MaxSentencesPerExample} consecutive same-label sentences of `{ReviewsFile}`, " +
                          $"at most {MaxSequenceLength} tokens (median {lengths[lengths.Length / 2]}, mean {lengths.Average():F1}), dynamic padding, " +
                          $"no length bucketing. LoRA r = {Rank}, alpha = {Alpha}, dropout {LoraDropout}; FineTuneTrainer defaults (AdamW lr {LearningRate}, " +
                          "weight decay 0.01, clipping at 1.0).");
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(
            ["base dtype", "LoRA targets", "batch", "trainable params", "steps", "mean padded T", "examples/s (min..max)", "padded tokens/s",
             "ms/step", "GFLOP/s", "% of matmul peak", "optimizer ms (share)", "load (1 min)"],
            results.Select(r =>
            {
                var measured = r.Steps.Skip(r.WarmupSteps).ToList();
                var examplesPerSecond = measured.Select(s => s.Batch / s.Seconds).ToList();
                double stepMs = Median(measured.Select(s => s.Seconds * 1e3));
                double gflops = Median(measured.Select(s => s.Flops / s.Seconds / 1e9));
                return (IReadOnlyList<string>)[ForwardBenchmark.DTypeName(r.DType), r.Targets, r.Batch.ToString(CultureInfo.InvariantCulture),
                    r.TrainableParameters.ToString("N0", CultureInfo.InvariantCulture), measured.Count.ToString(CultureInfo.InvariantCulture),
                    F(measured.Average(s => s.Width), 1),
                    $"{F(Median(examplesPerSecond), 1)} ({F(examplesPerSecond.Min(), 1)}..{F(examplesPerSecond.Max(), 1)})",
                    F(Median(measured.Select(s => s.Batch * s.Width / s.Seconds)), 0), F(stepMs, 0), F(gflops, 1),
                    F(100 * gflops / peaks[r.DType].GigaflopsPerSecond, 0) + "%",
                    $"{F(r.Optimizer.Median, 2)} ({F(100 * r.Optimizer.Median / stepMs, 2)}%)", r.Load];
            })));
        Console.WriteLine(Markdown.Table(
            ["LoRA targets", "batch", "float32 examples/s", "bfloat16 examples/s", "bf16 / f32"],
            results.Where(r => r.DType == ScalarType.Float32).Select(f32 =>
            {
                var bf16 = results.Single(r => r.DType == ScalarType.BFloat16 && r.Targets == f32.Targets && r.Batch == f32.Batch);
                double a = MedianExamplesPerSecond(f32), b = MedianExamplesPerSecond(bf16);
                return (IReadOnlyList<string>)[f32.Targets, f32.Batch.ToString(CultureInfo.InvariantCulture), F(a, 1), F(b, 1), F(b / a, 2) + "x"];
            })));
        Console.WriteLine(ForwardBenchmark.PeakTable(peaksBefore, peaksAfter));
        Console.WriteLine("Model FLOPs per step count matrix products on every padded position (B sequences of padded length T, H hidden, " +
                          "I intermediate, L layers, C labels): forward = L B T (8 H^2 + 4 H I + 4 T H) + 2 B H^2 (pooler) + 2 B H C + LoRA; " +
                          "backward = activation gradients only for the frozen base: L B T (8 H^2 + 4 H I) (dX = dY W, as many as forward) " +
                          "- 6 B T H^2 (layer 0's q, k, v: the frozen embeddings need no gradient) + L B T 8 T H (both operands of q k^T and p v) " +
                          "- 2 B T^2 H unless key is adapted (layer 0's k needs none) + 2 B H^2 + 4 B H C + 2 LoRA (its weight and input gradients), " +
                          "LoRA = 2 r (in + out) per token and adapted layer. Optimizer: FlatAdamW ZeroGrad + ClipGradNorm + Step on the run's " +
                          "parameters, timed separately after the run (median of 10 x --runs), as a share of the median step.");
        return 0;
    }

    /// <summary>One configuration: a fresh model, injected and trained for <see cref="MeasuredTime"/> after warm-up.</summary>
    private static Result Train(string folder, HfTokenizer tokenizer, IReadOnlyList<Example> examples, ScalarType dtype,
        (string Name, string[] Modules) targets, int batch, BenchmarkOptions options)
    {
        string load = MachineInfo.LoadAverage().Split(' ')[0];
        int warmup = Math.Max(options.Warmup, 1);
        Console.Error.WriteLine($"training {ForwardBenchmark.DTypeName(dtype)}, targets {targets.Name}, batch {batch}: {warmup} warm-up steps + {MeasuredTime.TotalSeconds:F0} s (load {load})");
        manual_seed(0);
        var (model, _) = ModelFactory.FromPretrainedSequenceClassification(folder, NumLabels); // float32, head newly initialised
        using var disposeModel = model;
        // The product's mixed-precision path: cast the base before injection, so the adapters and the head stay float32.
        if (dtype != ScalarType.Float32) model.to(dtype);
        var peft = PeftModel.Inject(model, new LoraOptions { Rank = Rank, Alpha = Alpha, Dropout = LoraDropout, TargetModules = targets.Modules });
        var parameters = ParameterGroups.FromGroups(model, peft.ParameterGroups());
        var config = BertConfig.FromHf(model.Config);
        long padTokenId = tokenizer.PadTokenId ?? throw new InvalidOperationException("The MiniLM tokenizer has no pad token.");

        var collated = new List<(int Batch, int Width)>();
        using var stop = new CancellationTokenSource();
        var observer = new StopAfter(warmup, MeasuredTime, MinMeasuredSteps, stop);
        var trainerOptions = new TrainingOptions
        {
            BatchSize = batch,
            MaxSteps = warmup + 10_000, // a cap only: the observer cancels after MeasuredTime
            LearningRate = LearningRate,
            LengthBucketing = false,
            WarmupRatio = 0,
            Progress = observer,
            CancellationToken = stop.Token,
            LoggingSteps = 10,
        };
        var result = FineTuneTrainer.Train(new TrainingSetup
        {
            Model = model,
            Parameters = parameters,
            ExampleCount = examples.Count,
            ExampleLengths = examples.Select(e => e.Ids.Length).ToArray(),
            Options = trainerOptions,
            Log = message => Console.Error.WriteLine("  " + message),
            ComputeLoss = indices =>
            {
                var rows = indices.Select(i => examples[i]).ToList();
                var inputs = Collate.Encoder(rows.Select(r => (IReadOnlyList<long>)r.Ids).ToList(), padTokenId,
                    tokenTypeIds: rows.Select(r => (IReadOnlyList<long>)r.TokenTypeIds).ToList()); // (B, T) each
                collated.Add((rows.Count, (int)inputs.InputIds.shape[1]));
                var labels = tensor(rows.Select(r => r.Label).ToArray());                     // (B)
                var logits = model.call(inputs);                                                 // (B, C)
                return nn.functional.cross_entropy(logits.to_type(ScalarType.Float32), labels);
            },
        });
        var history = result.History.Steps;
        if (collated.Count != history.Count)
            throw new InvalidOperationException($"{collated.Count} batches were collated for {history.Count} optimizer steps; expected one per step.");
        bool keyAdapted = targets.Modules.Contains("key");
        var steps = history.Select((s, k) => (collated[k].Batch, collated[k].Width, Seconds: collated[k].Batch / s.ExamplesPerSecond,
            Flops: TrainStepFlops(config, collated[k].Batch, collated[k].Width, peft, keyAdapted))).ToList();
        Console.Error.WriteLine($"  {history.Count} steps ({result.StopReason}), last loss {history[^1].Loss:F4}");

        // The optimizer step alone, on the same parameters (the trainer's FlatAdamW is disposed by now; this one rebinds them).
        using var optimizer = new FlatAdamW(parameters, trainerOptions.WeightDecay, trainerOptions.AdamBeta1, trainerOptions.AdamBeta2, trainerOptions.AdamEpsilon);
        var optimizerTimings = Timings.Measure(() =>
        {
            optimizer.ZeroGrad();
            optimizer.ClipGradNorm(trainerOptions.MaxGradientNorm);
            optimizer.Step(LearningRate);
        }, options.Warmup + 1, 10 * options.Runs);
        return new Result(dtype, targets.Name, batch, peft.CountParameters().Trainable, warmup, steps, optimizerTimings, load);
    }

    /// <summary>
    /// Model FLOPs of one training step (forward + backward) for a frozen BERT base with LoRA adapters and a trained
    /// classifier, on B sequences padded to T. Backward computes activation gradients only, except for the adapters' and
    /// the head's weights: a frozen linear layer's dX = dY W costs what its forward costs, while both operands of the
    /// attention products (q k^T, p v) are activations and need gradients. Layer 0's q, k, v projections take the frozen
    /// embeddings, whose gradient autograd skips.
    /// </summary>
    private static double TrainStepFlops(BertConfig c, int batch, int tokens, PeftModel peft, bool keyAdapted)
    {
        double h = c.HiddenSize, i = c.IntermediateSize, layers = c.NumHiddenLayers, t = tokens, n = (double)batch * tokens;
        double forward = ForwardBenchmark.ForwardFlops(c, batch, tokens) + 2 * h * NumLabels * batch;
        // LoRA: x A^T then (.) B^T, 2 r (in + out) per row; the pooler's rows are sequences, every other layer's are tokens.
        double lora = peft.Layers.Where(l => l.Value is LoraLinear)
            .Sum(l => 2.0 * Rank * (l.Value.InFeatures + l.Value.OutFeatures) * (l.Key.Contains("pooler", StringComparison.Ordinal) ? batch : n));
        double backward = layers * n * 2 * (4 * h * h + 2 * h * i) - n * 3 * 2 * h * h
                          + 2 * layers * n * 4 * t * h - (keyAdapted ? 0 : n * 2 * t * h)
                          + 2 * h * h * batch + 2 * 2 * h * NumLabels * batch + 2 * lora;
        return forward + lora + backward;
    }

    /// <summary>Progress observer (synchronous, unlike <see cref="Progress{T}"/>): cancels training once the steps after
    /// the warm-up have taken <c>time</c> and there are at least <c>minSteps</c> of them.</summary>
    private sealed class StopAfter(int warmupSteps, TimeSpan time, int minSteps, CancellationTokenSource stop) : IProgress<TrainingProgress>
    {
        private long _start;

        public void Report(TrainingProgress value)
        {
            if (value.Step == warmupSteps) _start = Stopwatch.GetTimestamp();
            else if (value.Step >= warmupSteps + minSteps && Stopwatch.GetElapsedTime(_start) >= time) stop.Cancel();
        }
    }

    /// <summary>Examples of varied length: 1..<see cref="MaxSentencesPerExample"/> consecutive reviews of one label
    /// (seeded), tokenized with [CLS] ... [SEP] and cut at <see cref="MaxSequenceLength"/> tokens.</summary>
    private static List<Example> BuildExamples(HfTokenizer tokenizer, IReadOnlyList<(string Text, long Label)> reviews)
    {
        var byLabel = reviews.GroupBy(r => r.Label).OrderBy(g => g.Key).Select(g => (Label: g.Key, Texts: g.Select(r => r.Text).ToArray())).ToArray();
        if (byLabel.Length != NumLabels)
            throw new InvalidDataException($"{ReviewsFile} has {byLabel.Length} distinct labels; the benchmark trains a {NumLabels}-label classifier.");
        var random = new Random(7);
        var examples = new List<Example>(ExampleCount);
        for (int e = 0; e < ExampleCount; e++)
        {
            var (label, texts) = byLabel[random.Next(byLabel.Length)];
            int count = random.Next(1, MaxSentencesPerExample + 1), start = random.Next(texts.Length);
            var text = string.Join(" ", Enumerable.Range(0, count).Select(k => texts[(start + k) % texts.Length]));
            var encoding = tokenizer.Encode(text, maxLength: MaxSequenceLength);
            examples.Add(new Example(encoding.Ids.Select(x => (long)x).ToArray(), encoding.TokenTypeIds.Select(x => (long)x).ToArray(), label));
        }
        return examples;
    }

    /// <summary>The committed sample data, found by walking up from the program's folder and the working directory.</summary>
    private static string FindReviews()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var path = Path.Combine(dir.FullName, ReviewsFile);
                if (File.Exists(path)) return path;
            }
        throw new FileNotFoundException($"{ReviewsFile} was not found above {AppContext.BaseDirectory} or {Directory.GetCurrentDirectory()}; run the benchmark from the repository.");
    }

    /// <summary>Rows of a tab-separated file with a header: sentence, label (integer).</summary>
    private static List<(string Text, long Label)> ReadReviews(string path)
    {
        var rows = new List<(string, long)>();
        int lineNumber = 0;
        foreach (var line in File.ReadLines(path))
        {
            if (lineNumber++ == 0 || line.Length == 0) continue;
            var fields = line.Split('\t');
            if (fields.Length != 2 || !long.TryParse(fields[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out long label))
                throw new InvalidDataException($"{path} line {lineNumber}: expected 'sentence<TAB>label' with an integer label, got '{line}'.");
            rows.Add((fields[0], label));
        }
        if (rows.Count == 0) throw new InvalidDataException($"{path} has no rows.");
        return rows;
    }

    private static double MedianExamplesPerSecond(Result r) => Median(r.Steps.Skip(r.WarmupSteps).Select(s => s.Batch / s.Seconds));
    private static double Median(IEnumerable<double> values) => new Timings(values.ToList()).Median;
    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
