using System.Globalization;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>causal-train</c>: LoRA training throughput of causal LMs through the library's path (ModelFactory -> base
/// cast -> PeftModel.Inject -> FineTuneTrainer with the causal LM loss and its target-token count), on stories260K
/// (../shared/models/stories260K, real weights) and on a ~110M-parameter Llama shape with random weights; float32 and a
/// frozen bfloat16 base with float32 adapters. Full-length rows of random token ids (every token a target), so tokens
/// per step are exact. Also: model FLOP/s as a fraction of the square-matmul peak measured in the same run.
/// </summary>
internal sealed class CausalTrainBenchmark : IBenchmark
{
    private const int Rank = 8;
    private const double Alpha = 16, LearningRate = 1e-3;
    private static readonly string[] Targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    private static readonly TimeSpan MeasuredTime = TimeSpan.FromSeconds(20);
    private const int MinMeasuredSteps = 3;

    // Llama-style ~110M: GPT-2-small width and depth, Llama's SwiGLU MLP and a 32,000-token vocabulary (tied).
    private const string Llama110M = """
        {"model_type": "llama", "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
         "num_attention_heads": 12, "num_key_value_heads": 12, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "tie_word_embeddings": true, "hidden_act": "silu"}
        """;

    public string Name => "causal-train";
    public string Summary => "LoRA training of causal LMs (stories260K, a 110M Llama): tokens/s, float32 vs bfloat16 base, % of matmul peak";

    private sealed record Shape(string Name, Func<CausalLanguageModel> Create, int Batch, int Tokens);

    private sealed record Result(Shape Shape, ScalarType DType, long Parameters, long Trainable, IReadOnlyList<double> StepSeconds, double StepFlops, string Load);

    public int Run(BenchmarkOptions options)
    {
        string loadBefore = MachineInfo.LoadAverage();
        var shapes = new List<Shape>();
        var stories = FindStories();
        if (stories is null) Console.Error.WriteLine("../shared/models/stories260K not found: measuring the 110M shape only.");
        else shapes.Add(new Shape("stories260K", () => ModelFactory.FromPretrainedCausalLM(stories), 8, 256));
        shapes.Add(new Shape("Llama 110M (random weights)", () => { manual_seed(0); return ModelFactory.CreateCausalLM(HfConfig.Parse(Llama110M)); }, 4, 256));

        var peaksBefore = ForwardBenchmark.MeasurePeaks(options);
        var results = new List<Result>();
        foreach (var shape in shapes)
            foreach (var dtype in ForwardBenchmark.DTypes)
                results.Add(Train(shape, dtype, options));
        var peaksAfter = ForwardBenchmark.MeasurePeaks(options);
        var peaks = ForwardBenchmark.BestPeaks(peaksBefore, peaksAfter);

        Console.WriteLine($"### Causal LM LoRA training (`causal-train`): {MeasuredTime.TotalSeconds:F0} s (at least {MinMeasuredSteps} steps) per configuration after {Math.Max(options.Warmup, 1)} warm-up steps, median of the steps");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, MachineInfo.LoadAverage()));
        Console.WriteLine();
        Console.WriteLine($"LoRA r = {Rank}, alpha = {Alpha}, no dropout, on {string.Join(", ", Targets)}; rows of B x T random token ids, every token a target " +
                          $"(transformers' causal LM loss); FineTuneTrainer defaults (AdamW lr {LearningRate} without warm-up, weight decay 0.01, clipping at 1.0).");
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(
            ["model", "params", "base dtype", "trainable params", "batch x tokens", "steps", "ms/step (min..max)", "tokens/s", "GFLOP/s", "% of matmul peak", "load (1 min)"],
            results.Select(r =>
            {
                double stepSeconds = Median(r.StepSeconds);
                double gflops = r.StepFlops / stepSeconds / 1e9;
                return (IReadOnlyList<string>)[r.Shape.Name, r.Parameters.ToString("N0", CultureInfo.InvariantCulture), ForwardBenchmark.DTypeName(r.DType),
                    r.Trainable.ToString("N0", CultureInfo.InvariantCulture), $"{r.Shape.Batch} x {r.Shape.Tokens}", r.StepSeconds.Count.ToString(CultureInfo.InvariantCulture),
                    $"{F(stepSeconds * 1e3, 0)} ({F(r.StepSeconds.Min() * 1e3, 0)}..{F(r.StepSeconds.Max() * 1e3, 0)})",
                    F(r.Shape.Batch * r.Shape.Tokens / stepSeconds, 0), F(gflops, 1), F(100 * gflops / peaks[r.DType].GigaflopsPerSecond, 0) + "%", r.Load];
            })));
        Console.WriteLine(ForwardBenchmark.PeakTable(peaksBefore, peaksAfter));
        Console.WriteLine("Model FLOPs per step (N = weights of every linear layer and the LM head, L layers, T tokens, d = heads x head_dim): " +
                          "forward 2 N + 4 L T d per token; backward for a frozen base computes activation gradients only: 2 N + 8 L T d per token; " +
                          "LoRA adds 2 r (in + out) per adapted layer and token forward and twice that backward. Attention is counted over the full " +
                          "T x T products (the causal half is not subtracted).");
        return 0;
    }

    private static Result Train(Shape shape, ScalarType dtype, BenchmarkOptions options)
    {
        string load = MachineInfo.LoadAverage().Split(' ')[0];
        int warmup = Math.Max(options.Warmup, 1);
        Console.Error.WriteLine($"training {shape.Name}, {ForwardBenchmark.DTypeName(dtype)}: {warmup} warm-up steps + {MeasuredTime.TotalSeconds:F0} s (load {load})");
        using var model = shape.Create();
        long parameters = model.parameters().Sum(p => p.numel());
        // The product's mixed-precision path: cast the base before injection, so the adapters stay float32.
        if (dtype != ScalarType.Float32) model.to(dtype);
        var peft = PeftModel.Inject(model, new LoraOptions { Rank = Rank, Alpha = Alpha, Dropout = 0, TargetModules = Targets, TaskType = PeftTaskType.CausalLM });
        var trainable = ParameterGroups.FromGroups(model, peft.ParameterGroups());

        var random = new Random(1);
        var examples = Enumerable.Range(0, 64).Select(_ =>
        {
            var ids = Enumerable.Range(0, shape.Tokens).Select(_ => (long)random.Next(3, model.VocabSize)).ToArray();
            return new CausalLMExample(ids, ids);
        }).ToList();

        using var stop = new CancellationTokenSource();
        var result = FineTuneTrainer.Train(new TrainingSetup
        {
            Model = model,
            Parameters = trainable,
            ExampleCount = examples.Count,
            ExampleLengths = examples.Select(e => e.InputIds.Length).ToArray(),
            ComputeLoss = batch =>
            {
                var collated = CausalLMBatch.Collate(batch.Select(i => examples[i]).ToList(), padTokenId: 0);
                return CausalLMLoss.MeanOverTargets(model.call(collated.Inputs), collated.Labels);
            },
            CountLossItems = batch => batch.Sum(i => (long)examples[i].TargetCount),
            Options = new TrainingOptions
            {
                BatchSize = shape.Batch,
                MaxSteps = warmup + 10_000, // a cap only: the observer cancels after MeasuredTime
                LearningRate = LearningRate,
                LengthBucketing = false,
                WarmupRatio = 0,
                Progress = new TrainBenchmark.StopAfter(warmup, MeasuredTime, MinMeasuredSteps, stop),
                CancellationToken = stop.Token,
                LoggingSteps = 5,
            },
            Log = message => Console.Error.WriteLine("  " + message),
        });
        var steps = result.History.Steps.Skip(warmup).Select(s => shape.Batch / s.ExamplesPerSecond).ToList();
        Console.Error.WriteLine($"  {result.History.Steps.Count} steps ({result.StopReason}), last loss {result.History.Steps[^1].Loss:F4}");
        return new Result(shape, dtype, parameters, peft.CountParameters().Trainable, steps, StepFlops(model, peft, shape), load);
    }

    /// <summary>Matrix-product FLOPs of one training step with a frozen base (see the note printed under the table).</summary>
    private static double StepFlops(CausalLanguageModel model, PeftModel peft, Shape shape)
    {
        var llama = LlamaConfig.FromHf(model.Config);
        double d = llama.NumAttentionHeads * llama.HeadDim, t = shape.Tokens, layers = model.NumLayers;
        // Every linear layer's base weight (2-D weights but the embedding and the adapters' own) plus the LM head, which
        // tied models compute with the embedding matrix.
        double linear = model.named_parameters()
            .Where(p => p.parameter.dim() == 2 && !p.name.Contains("embed_tokens", StringComparison.Ordinal) && !p.name.Contains("lora_", StringComparison.Ordinal))
            .Sum(p => (double)p.parameter.numel())
            + (model.TiedWordEmbeddings ? (double)model.VocabSize * llama.HiddenSize : 0);
        double lora = peft.Layers.Values.Where(l => l is LoraLinear).Sum(l => 2.0 * Rank * (l.InFeatures + l.OutFeatures));
        double perToken = (2 * linear + 4 * layers * t * d) + (2 * linear + 8 * layers * t * d) + 3 * lora;
        return perToken * shape.Batch * t;
    }

    private static string? FindStories()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "models", "stories260K");
            if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
        }
        return null;
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    private static string F(double value, int decimals) => value.ToString("F" + decimals, CultureInfo.InvariantCulture);
}
