using System.Diagnostics;
using System.Globalization;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>gpu</c>: training-step time and inference rate of the model shapes Hugging Face + PEFT was measured on (the peers'
/// numbers in shared/gpu/README.md, same H200): BERT-base sequence classification and QA, MiniLM, and a Llama-3.2-1B
/// shaped causal LM, each with random weights built from a config (the shapes decide the speed, not the values), a
/// bfloat16 frozen base with float32 LoRA adapters, trained through the library's FineTuneTrainer (FlatAdamW, clipping
/// at 1.0). Each workload runs in its own child process so that its GPU memory (nvidia-smi's memory.used, after minus
/// before, which includes the caching allocator's reserve) is its own. On CUDA when available; <c>--tiny</c> runs
/// small shapes on the CPU to test the program.
/// </summary>
internal sealed class GpuBenchmark : IBenchmark
{
    public string Name => "gpu";
    public string Summary => "BERT-base / QA / MiniLM LoRA steps, encoder inference, Llama-1B LoRA tokens/s on CUDA vs the HF+PEFT peers (--tiny: CPU)";

    private const string ResultPrefix = "RESULT\t";

    /// <summary>One measured workload. <paramref name="Peer"/>: Hugging Face + PEFT on the same H200 (shared/gpu/README.md).</summary>
    private sealed record Workload(string Name, string Description, string Peer, Func<Device, bool, int, int, WorkloadResult> Run);

    private sealed record WorkloadResult(string Measure, double Median, double Min, double Max, string Rate, string Extra);

    private static readonly Workload[] Workloads =
    [
        new("minilm", "MiniLM-L6-H384 seq-cls, LoRA r=8 q,v, batch 32 x 128", "19.8 ms/step (1,620 samples/s), 0.5 GB",
            (d, tiny, w, r) => EncoderStep(d, tiny ? Tiny : MiniLm, tiny ? 4 : 32, tiny ? 16 : 128, qa: false, w, r)),
        new("bert", "BERT-base seq-cls, LoRA r=8 q,v, batch 32 x 128", "27.3 ms/step (1,173 samples/s), 1.86 GB; torch.compile 26.1 ms",
            (d, tiny, w, r) => EncoderStep(d, tiny ? Tiny : BertBase, tiny ? 4 : 32, tiny ? 16 : 128, qa: false, w, r)),
        new("bert-qa", "BERT-base QA, LoRA r=8 q,v, batch 32 x 384", "36.6 ms/step (874 samples/s), 4.24 GB",
            (d, tiny, w, r) => EncoderStep(d, tiny ? Tiny : BertBase, tiny ? 4 : 32, tiny ? 24 : 384, qa: true, w, r)),
        new("minilm-infer", "MiniLM-L6-H384 inference (eval, no grad), batch 32 x 128", "n/a",
            (d, tiny, w, r) => EncoderInference(d, tiny ? Tiny : MiniLm, tiny ? 4 : 32, tiny ? 16 : 128, qa: false, w, r)),
        new("bert-infer", "BERT-base seq-cls inference, batch 32 x 128", "n/a",
            (d, tiny, w, r) => EncoderInference(d, tiny ? Tiny : BertBase, tiny ? 4 : 32, tiny ? 16 : 128, qa: false, w, r)),
        new("bert-qa-infer", "BERT-base QA inference, batch 32 x 384", "n/a",
            (d, tiny, w, r) => EncoderInference(d, tiny ? Tiny : BertBase, tiny ? 4 : 32, tiny ? 24 : 384, qa: true, w, r)),
        new("bert-infer-f32", "BERT-base seq-cls inference, base in float32 (batch-invariant scoring), batch 32 x 128", "n/a",
            (d, tiny, w, r) => EncoderInference(d, tiny ? Tiny : BertBase, tiny ? 4 : 32, tiny ? 16 : 128, qa: false, w, r, ScalarType.Float32)),
        new("api", "Public API on the device: MiniLM-shape LoRA classifier fitted, saved, reloaded; PredictionEngine p50 on a short sentence vs Transform rows/s", "n/a",
            (d, tiny, w, r) => PublicApi(d, tiny ? Tiny : MiniLm, w, r)),
        new("llama", "Llama-3.2-1B shape causal LM, LoRA r=16 all linear, batch 8 x 1024", "46,529 tokens/s, 28.6 GB; torch.compile 72,213 tokens/s",
            (d, tiny, w, r) => CausalStep(d, tiny ? TinyLlama : Llama1B, tiny ? 2 : 8, tiny ? 32 : 1024, w, r)),
    ];

    // Shapes (random weights): what the peers ran.
    private const string BertBase = """{"model_type":"bert","hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,"intermediate_size":3072,"vocab_size":30522,"max_position_embeddings":512,"type_vocab_size":2,"hidden_act":"gelu"}""";
    private const string MiniLm = """{"model_type":"bert","hidden_size":384,"num_hidden_layers":6,"num_attention_heads":12,"intermediate_size":1536,"vocab_size":30522,"max_position_embeddings":512,"type_vocab_size":2,"hidden_act":"gelu"}""";
    private const string Tiny = """{"model_type":"bert","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128,"vocab_size":1000,"max_position_embeddings":512,"type_vocab_size":2,"hidden_act":"gelu"}""";
    private const string Llama1B = """{"model_type":"llama","hidden_size":2048,"num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,"intermediate_size":8192,"vocab_size":128256,"tie_word_embeddings":true,"rms_norm_eps":1e-5,"rope_theta":500000.0,"max_position_embeddings":131072,"hidden_act":"silu","head_dim":64}""";
    private const string TinyLlama = """{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,"vocab_size":1000,"tie_word_embeddings":true,"rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":2048,"hidden_act":"silu"}""";

    public int Run(BenchmarkOptions options)
    {
        bool cuda = torch.cuda.is_available();
        if (!cuda && !options.Tiny)
        {
            Console.Error.WriteLine("CUDA is not available (this build carries the CPU backend, or there is no GPU); run with --tiny to test the program on the CPU.");
            return 2;
        }
        var device = cuda ? CUDA : CPU;
        int warmup = Math.Max(options.Warmup, 3), runs = Math.Max(options.Runs, 10);
        if (options.Only is { } only) return RunChild(Workloads.Single(w => w.Name == only), device, options.Tiny, warmup, runs);

        string loadBefore = MachineInfo.LoadAverage();
        var rows = new List<IReadOnlyList<string>>();
        foreach (var workload in Workloads)
        {
            Console.Error.WriteLine($"== {workload.Name}: {workload.Description}");
            var result = RunInChildProcess(workload, options);
            rows.Add([workload.Description + (options.Tiny ? " (tiny shape)" : ""), result?.Measure ?? "failed", result is null ? "" : $"{F(result.Median, 2)} ({F(result.Min, 2)}..{F(result.Max, 2)})",
                result?.Rate ?? "", result?.Extra ?? "", workload.Peer]);
        }
        string gpu = cuda ? GpuName() : "none (--tiny on the CPU)";
        var text = new System.Text.StringBuilder();
        text.AppendLine($"### GPU (`gpu{(options.Tiny ? " --tiny" : "")}`): LoRA training steps and inference, medians of {runs} after {warmup} warm-up");
        text.AppendLine();
        text.AppendLine($"GPU: {gpu}. {MachineInfo.DescribeRun(loadBefore, MachineInfo.LoadAverage())}");
        text.AppendLine();
        text.AppendLine("Ours: random weights from the config, frozen base in bfloat16, LoRA adapters and heads in float32, FineTuneTrainer " +
                        "(FlatAdamW lr 1e-4, clipping at 1.0, the loss read back every step), full-length rows (no padding). " +
                        "Step time = wall time between consecutive steps' progress reports. Peers: Hugging Face + PEFT, bf16 autocast, AdamW.");
        text.AppendLine();
        text.AppendLine(Markdown.Table(["workload", "measure", "ours median (min..max)", "ours rate", "GPU memory (nvidia-smi memory.used after - before); notes", "Hugging Face + PEFT (same H200)"], rows));
        Console.WriteLine(text);
        if (Environment.GetEnvironmentVariable("OUT") is { Length: > 0 } outFolder)
            File.WriteAllText(Path.Combine(outFolder, "gpu-table.md"), text.ToString());
        return rows.Any(r => r[1] == "failed") ? 1 : 0;
    }

    /// <summary>Runs one workload in a fresh process (its own GPU memory), returning its result line, or null when it failed.</summary>
    private static WorkloadResult? RunInChildProcess(Workload workload, BenchmarkOptions options)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        string entry = typeof(GpuBenchmark).Assembly.Location;
        if (!Path.GetFileName(Environment.ProcessPath!).StartsWith("MLNet.FineTune.Benchmarks", StringComparison.Ordinal)) start.ArgumentList.Add(entry);
        foreach (var a in new[] { "gpu", "--only", workload.Name, "--runs", options.Runs.ToString(CultureInfo.InvariantCulture),
                     "--warmup", options.Warmup.ToString(CultureInfo.InvariantCulture), "--threads", options.Threads.ToString(CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(a);
        if (options.Tiny) start.ArgumentList.Add("--tiny");
        using var child = Process.Start(start)!;
        WorkloadResult? result = null;
        string? line;
        while ((line = child.StandardOutput.ReadLine()) is not null)
        {
            if (line.StartsWith(ResultPrefix, StringComparison.Ordinal))
            {
                var f = line[ResultPrefix.Length..].Split('\t');
                result = new WorkloadResult(f[0], double.Parse(f[1], CultureInfo.InvariantCulture), double.Parse(f[2], CultureInfo.InvariantCulture),
                    double.Parse(f[3], CultureInfo.InvariantCulture), f[4], f[5]);
            }
            else Console.Error.WriteLine("  " + line);
        }
        child.WaitForExit();
        if (child.ExitCode != 0) Console.Error.WriteLine($"  {workload.Name} exited with {child.ExitCode}");
        return child.ExitCode == 0 ? result : null;
    }

    private static int RunChild(Workload workload, Device device, bool tiny, int warmup, int runs)
    {
        if (device.type == DeviceType.CUDA) using (ones(1, device: device)) synchronize(device); // CUDA context first: not the workload's memory
        double before = GpuMemoryUsedMiB();
        var result = workload.Run(device, tiny, warmup, runs);
        double after = GpuMemoryUsedMiB();
        string memory = double.IsNaN(before) || double.IsNaN(after) ? "not available" : $"{F((after - before) / 1024, 2)} GB";
        Console.WriteLine(ResultPrefix + string.Join('\t', result.Measure, R(result.Median), R(result.Min), R(result.Max), result.Rate,
            string.IsNullOrEmpty(result.Extra) ? memory : $"{memory}; {result.Extra}"));
        return 0;
    }

    /// <summary>One LoRA training step of a BERT-shaped encoder (seq-cls: 2 labels; QA: start/end) on random tokens.</summary>
    private static WorkloadResult EncoderStep(Device device, string configJson, int batch, int tokens, bool qa, int warmup, int runs)
    {
        manual_seed(0);
        var config = HfConfig.Parse(configJson, "benchmark config");
        nn.Module model = qa ? ModelFactory.CreateQuestionAnswering(config) : ModelFactory.CreateSequenceClassification(config, 2);
        using var disposeModel = model;
        model.to(ScalarType.BFloat16); // frozen base in bf16; the adapters and the head are injected in float32
        var peft = PeftModel.Inject(model, new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0.1, TargetModules = ["query", "value"] });
        model.to(device);
        int vocab = config.GetInt("vocab_size");
        var ids = randint(vocab, [batch, tokens], ScalarType.Int64, device);          // (B, T)
        var mask = ones([batch, tokens], ScalarType.Int64, device);                     // (B, T)
        var inputs = new EncoderInputs(ids, mask, zeros([batch, tokens], ScalarType.Int64, device));
        var labels = randint(2, [batch], ScalarType.Int64, device);                     // (B)
        var starts = randint(tokens, [batch], ScalarType.Int64, device);                // (B)
        var ends = randint(tokens, [batch], ScalarType.Int64, device);                  // (B)
        Func<Tensor> loss = qa
            ? () =>
            {
                var (start, end) = ((QuestionAnsweringModel)model).call(inputs);          // (B, T) each
                return (nn.functional.cross_entropy(start.to_type(ScalarType.Float32), starts) + nn.functional.cross_entropy(end.to_type(ScalarType.Float32), ends)) / 2;
            }
            : () => nn.functional.cross_entropy(((SequenceClassificationModel)model).call(inputs).to_type(ScalarType.Float32), labels);
        var steps = TrainSteps(model, peft, loss, warmup, runs, device);
        double median = Median(steps);
        return new WorkloadResult("ms/step", median, steps.Min(), steps.Max(), $"{F(batch / (median / 1e3), 0)} samples/s",
            $"without per-step read-backs {F(LastUnsyncedStepMs, 2)} ms/step");
    }

    /// <summary>Forward passes of the same encoder in eval mode without gradients; rows/s.</summary>
    private static WorkloadResult EncoderInference(Device device, string configJson, int batch, int tokens, bool qa, int warmup, int runs,
        ScalarType baseDType = ScalarType.BFloat16)
    {
        manual_seed(0);
        var config = HfConfig.Parse(configJson, "benchmark config");
        nn.Module model = qa ? ModelFactory.CreateQuestionAnswering(config) : ModelFactory.CreateSequenceClassification(config, 2);
        using var disposeModel = model;
        model.to(baseDType);
        PeftModel.Inject(model, new LoraOptions { Rank = 8, Alpha = 16, TargetModules = ["query", "value"] });
        model.to(device);
        model.eval();
        int vocab = config.GetInt("vocab_size");
        var inputs = new EncoderInputs(randint(vocab, [batch, tokens], ScalarType.Int64, device), ones([batch, tokens], ScalarType.Int64, device),
            zeros([batch, tokens], ScalarType.Int64, device));
        var times = Timings.Measure(() =>
        {
            using var noGrad = no_grad();
            using var scope = NewDisposeScope();
            if (qa) ((QuestionAnsweringModel)model).call(inputs);
            else ((SequenceClassificationModel)model).call(inputs);
            synchronize(device);
        }, warmup, runs);
        return new WorkloadResult("ms/forward", times.Median, times.Min, times.Max, $"{F(batch / (times.Median / 1e3), 0)} rows/s", "");
    }

    /// <summary>The public API with MLContext.GpuDeviceId (FallbackToCpu off, so a CPU run on a CUDA machine would fail):
    /// a random-weight encoder folder with a vocabulary of the sample reviews' words, fitted, saved, reloaded and scored.</summary>
    private static WorkloadResult PublicApi(Device device, string configJson, int warmup, int runs)
    {
        string folder = RandomEncoderFolder(configJson);
        try
        {
            var ml = new Microsoft.ML.MLContext(seed: 1);
            if (device.type == DeviceType.CUDA) { ml.GpuDeviceId = 0; ml.FallbackToCpu = false; }
            var serving = LatencyBenchmark.MeasureServing(ml, folder, Math.Max(warmup, 20), Math.Max(runs, 100));
            return new WorkloadResult("PredictionEngine ms", serving.P(0.5), serving.Single.Min, serving.P(0.99),
                $"engine {F(serving.EngineRate, 0)} rows/s, Transform {F(serving.TransformRate, 0)} rows/s ({F(serving.TransformRate / serving.EngineRate, 1)}x)",
                $"p90 {F(serving.P(0.9), 2)} ms, max shown is p99");
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>A Hugging Face BERT folder with random weights of <paramref name="configJson"/>'s shape and a WordPiece
    /// vocabulary of the sample reviews' lower-case words (plus single characters), so real text tokenizes.</summary>
    private static string RandomEncoderFolder(string configJson)
    {
        var folder = Directory.CreateTempSubdirectory("mlnet-finetune-gpu-model-").FullName;
        var words = TrainBenchmark.ReadReviews(TrainBenchmark.FindReviews())
            .SelectMany(r => System.Text.RegularExpressions.Regex.Split(r.Text.ToLowerInvariant(), @"[^a-z']+"))
            .Where(w => w.Length > 0).Distinct().Order(StringComparer.Ordinal);
        var characters = Enumerable.Range(33, 94).Select(c => ((char)c).ToString());
        var vocab = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        vocab.AddRange(characters.Concat(characters.Select(c => "##" + c)).Concat(words).Distinct());
        var config = System.Text.Json.Nodes.JsonNode.Parse(configJson)!.AsObject();
        int vocabSize = config["vocab_size"]!.GetValue<int>();
        for (int i = vocab.Count; i < vocabSize; i++) vocab.Add($"[unused{i}]");
        File.WriteAllLines(Path.Combine(folder, "vocab.txt"), vocab.Take(Math.Max(vocabSize, vocab.Count)));
        config["vocab_size"] = Math.Max(vocabSize, vocab.Count);
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJsonString());
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"do_lower_case": true, "model_max_length": 512}""");
        manual_seed(0);
        using var model = ModelFactory.CreateBaseModel(HfConfig.Load(folder));
        SafeTensors.Save(Path.Combine(folder, "model.safetensors"), model.state_dict());
        return folder;
    }

    /// <summary>One LoRA training step of a Llama-shaped causal LM on random tokens: shifted cross-entropy, tokens/s.</summary>
    private static WorkloadResult CausalStep(Device device, string configJson, int batch, int tokens, int warmup, int runs)
    {
        manual_seed(0);
        var config = HfConfig.Parse(configJson, "benchmark config");
        var clock = Stopwatch.StartNew();
        var model = ModelFactory.CreateCausalLM(config);
        using var disposeModel = model;
        model.to(ScalarType.BFloat16);
        var peft = PeftModel.Inject(model, new LoraOptions
        {
            Rank = 16, Alpha = 32, Dropout = 0.05,
            TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        });
        model.to(device);
        Console.Error.WriteLine($"  built and moved in {clock.Elapsed.TotalSeconds:F1} s: {peft.CountParameters()}");
        var ids = randint(model.VocabSize, [batch, tokens], ScalarType.Int64, device); // (B, T)
        var targets = ids.narrow(1, 1, tokens - 1).reshape(-1);                        // (B (T-1))
        Tensor Loss()
        {
            var logits = model.call(ids);                                               // (B, T, V) bf16
            var shifted = logits.narrow(1, 0, tokens - 1).reshape(-1, model.VocabSize);  // (B (T-1), V)
            return nn.functional.cross_entropy(shifted.to_type(ScalarType.Float32), targets);
        }
        var steps = TrainSteps(model, peft, Loss, warmup, runs, device);
        double median = Median(steps);
        return new WorkloadResult("ms/step", median, steps.Min(), steps.Max(), $"{F(batch * tokens / (median / 1e3), 0)} tokens/s",
            $"without per-step read-backs {F(batch * tokens / (LastUnsyncedStepMs / 1e3), 0)} tokens/s");
    }

    /// <summary>Trains with FineTuneTrainer for warm-up + measured steps; returns the measured steps' wall times (ms),
    /// taken between consecutive progress reports (each follows the step's loss read-back, so a step's queued GPU
    /// work is inside one interval).</summary>
    private static List<double> TrainSteps(nn.Module model, PeftModel peft, Func<Tensor> loss, int warmup, int runs, Device device)
    {
        var parameters = ParameterGroups.FromGroups(model, peft.ParameterGroups());
        var stamps = new List<long>();
        var result = FineTuneTrainer.Train(new TrainingSetup
        {
            Model = model,
            Parameters = parameters,
            ExampleCount = 1,
            ExampleLengths = [1],
            Options = new TrainingOptions
            {
                BatchSize = 1,
                MaxSteps = warmup + runs + 1,
                LearningRate = 1e-4,
                WarmupRatio = 0,
                Progress = new Stamps(stamps),
                LoggingSteps = 1000,
            },
            Log = _ => { },
            ComputeLoss = _ => loss(),
        });
        synchronize(device);
        var steps = stamps.Zip(stamps.Skip(1), (a, b) => (b - a) * 1e3 / Stopwatch.Frequency).Skip(warmup).ToList();

        // The same step without the trainer's two read-backs per step (loss, gradient norm) and without clipping:
        // FlatAdamW's ZeroGrad, backward and Step queued back to back, synchronised once at the end.
        using var optimizer = new FlatAdamW(parameters, 0.01, 0.9, 0.999, 1e-8);
        void Step()
        {
            using var scope = NewDisposeScope();
            optimizer.ZeroGrad();
            loss().backward();
            optimizer.Step(1e-4);
        }
        for (int i = 0; i < warmup; i++) Step();
        synchronize(device);
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < runs; i++) Step();
        synchronize(device);
        LastUnsyncedStepMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds / runs;
        return steps;
    }

    /// <summary>Mean ms of the last <see cref="TrainSteps"/>' steps without per-step read-backs.</summary>
    private static double LastUnsyncedStepMs;

    private sealed class Stamps(List<long> stamps) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => stamps.Add(Stopwatch.GetTimestamp());
    }

    private static void synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }

    /// <summary>nvidia-smi's memory.used of GPU 0 in MiB, or NaN without nvidia-smi.</summary>
    private static double GpuMemoryUsedMiB()
    {
        string? text = RunTool("nvidia-smi", "--query-gpu=memory.used --format=csv,noheader,nounits -i 0");
        return text is not null && double.TryParse(text.Trim(), CultureInfo.InvariantCulture, out double mib) ? mib : double.NaN;
    }

    private static string GpuName() => RunTool("nvidia-smi", "--query-gpu=name,memory.total,driver_version --format=csv,noheader -i 0")?.Trim() ?? "unknown";

    private static string? RunTool(string file, string arguments)
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, UseShellExecute = false });
            string text = process!.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? text : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }

    private static double Median(List<double> values) => new Timings(values).Median;
    private static string R(double value) => value.ToString("R", CultureInfo.InvariantCulture);
    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
