using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>qlora</c>: a Llama shape of about 100M parameters with random weights, trained with LoRA over a frozen bfloat16
/// base and over the same base in NF4 with double quantization (QLoRA), one after the other in this process: base-weight
/// bytes measured from the tensors (<see cref="WeightMemory"/>), the process's peak resident memory during the training
/// steps (VmHWM, reset before the steps through /proc/self/clear_refs after malloc_trim hands setup's freed memory back), step time and their ratio, the time to quantize,
/// and the time to dequantize every 4-bit layer once (a step does it twice: forward, and backward for the input gradient).
/// </summary>
internal sealed class QLoraBenchmark : IBenchmark
{
    // ~110M parameters: 12 blocks of 768 wide, MLP 2048, 32000-token vocabulary with tied embeddings.
    private const string ConfigJson = """
        {"model_type": "llama", "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
         "num_attention_heads": 12, "num_key_value_heads": 12, "vocab_size": 32000, "max_position_embeddings": 1024,
         "rms_norm_eps": 1e-5, "tie_word_embeddings": true, "rope_theta": 10000.0}
        """;
    private const int Batch = 2, Length = 256, Rank = 16;
    private static readonly string[] Targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public string Name => "qlora";
    public string Summary => "QLoRA (NF4 + double quant) vs bf16 LoRA on a ~100M Llama: base bytes, peak memory, step time";

    /// <summary>What one run measured (a child process writes it as one JSON line).</summary>
    public sealed record RunResult(string Name, long LinearLayerBytes, long BaseBytes, long AdapterBytes, long Parameters,
        string MemoryTable, double SetupSeconds, double QuantizeSeconds, long ResidentAfterSetup, long PeakBytes,
        double[] StepMilliseconds, double FinalLoss, double DequantizeMilliseconds, int QuantizedLayers, string Device, string CpuCudaCodes);

    private const string RunVariable = "MLNET_FINETUNE_QLORA_BENCHMARK_RUN";
    private const string ResultPrefix = "QLORA-RESULT ";

    public int Run(BenchmarkOptions options)
    {
        int runs = Math.Max(options.Runs, 3);
        if (Environment.GetEnvironmentVariable(RunVariable) is { } which)
        {
            var result = Train(which == "nf4", runs, options.Warmup);
            Console.WriteLine(ResultPrefix + JsonSerializer.Serialize(result));
            return 0;
        }

        // Each run in its own process: a process's resident memory keeps what an earlier run freed (the allocator
        // holds on to it), which would blur the peak of the run after it.
        string loadBefore = MachineInfo.LoadAverage();
        var bf16 = RunChild("bf16", options);
        var qlora = RunChild("nf4", options);
        string loadAfter = MachineInfo.LoadAverage();
        var both = new[] { bf16, qlora };

        Console.WriteLine($"### QLoRA vs bf16 LoRA (`qlora`): Llama shape, {bf16.Parameters / 1e6:F1}M parameters, random weights, batch {Batch} x {Length} tokens, " +
                          $"LoRA r = {Rank} on {string.Join(", ", Targets)}, AdamW; median of {runs} steps after {options.Warmup} warm-up steps; each run in a fresh process");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter) + $"; device {qlora.Device}");
        if (qlora.CpuCudaCodes != "") Console.WriteLine($"{Environment.NewLine}4-bit codes quantized on CUDA vs on the CPU: {qlora.CpuCudaCodes}.");
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(["run", "linear layers of the blocks", "whole base (embeddings, norms too)", "adapter"],
            both.Select(r => (IReadOnlyList<string>)[r.Name, MiB(r.LinearLayerBytes), MiB(r.BaseBytes), MiB(r.AdapterBytes)])));
        Console.WriteLine($"Base weights measured from the tensors, 4-bit / bf16: linear layers {F((double)qlora.LinearLayerBytes / bf16.LinearLayerBytes, 3)}x, " +
                          $"whole base {F((double)qlora.BaseBytes / bf16.BaseBytes, 3)}x (the 32000 x 768 tied embedding stays bf16, as bitsandbytes keeps it).");
        Console.WriteLine();
        Console.WriteLine("QLoRA model by storage kind (`WeightMemory.Measure(model)`):");
        Console.WriteLine();
        Console.WriteLine(qlora.MemoryTable);
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(["run", "setup s (build, cast, quantize, inject)", "resident after setup", "peak resident during the steps", "ms/step median (min..max)", "loss after the steps"],
            both.Select(r => (IReadOnlyList<string>)[r.Name, F(r.SetupSeconds, 1) + (r.QuantizeSeconds > 0 ? $" (quantize {F(r.QuantizeSeconds, 1)})" : ""),
                MiB(r.ResidentAfterSetup), MiB(r.PeakBytes),
                $"{F(Median(r.StepMilliseconds), 0)} ({F(r.StepMilliseconds.Min(), 0)}..{F(r.StepMilliseconds.Max(), 0)})", F(r.FinalLoss, 3)])));
        double difference = Median(qlora.StepMilliseconds) - Median(bf16.StepMilliseconds);
        Console.WriteLine($"Step time QLoRA / bf16 LoRA: {F(Median(qlora.StepMilliseconds) / Median(bf16.StepMilliseconds), 2)}x. Dequantizing all {qlora.QuantizedLayers} " +
                          $"4-bit layers to bf16 once takes {F(qlora.DequantizeMilliseconds, 0)} ms (median of {runs}); a step does it twice (forward, and " +
                          $"backward for the input gradient): {F(2 * qlora.DequantizeMilliseconds, 0)} ms against a measured difference of {F(difference, 0)} ms.");
        return 0;
    }

    private static RunResult RunChild(string which, BenchmarkOptions options)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { "qlora", "--runs", options.Runs.ToString(CultureInfo.InvariantCulture), "--warmup", options.Warmup.ToString(CultureInfo.InvariantCulture),
                     "--threads", options.Threads.ToString(CultureInfo.InvariantCulture) })
            start.ArgumentList.Add(a);
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") start.ArgumentList.Insert(0, typeof(QLoraBenchmark).Assembly.Location);
        start.Environment[RunVariable] = which;
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {start.FileName}.");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        var line = output.Split('\n').FirstOrDefault(l => l.StartsWith(ResultPrefix, StringComparison.Ordinal))
            ?? throw new InvalidOperationException($"The {which} run (exit code {process.ExitCode}) printed no result:\n{output}");
        return JsonSerializer.Deserialize<RunResult>(line[ResultPrefix.Length..])!;
    }

    private static RunResult Train(bool quantize, int runs, int warmup)
    {
        string name = quantize ? "QLoRA (NF4, double quant)" : "bf16 LoRA";
        var config = HfConfig.Parse(ConfigJson, "qlora benchmark config");
        Console.Error.WriteLine($"{name}: building the model");
        var setup = Stopwatch.StartNew();
        manual_seed(1234);
        var device = cuda.is_available() ? CUDA : CPU;
        var model = ModelFactory.CreateCausalLM(config);
        model.to(ScalarType.BFloat16);
        string cpuCudaCodes = "";
        if (quantize && device.type == DeviceType.CUDA) cpuCudaCodes = CompareCpuAndCuda(model);
        model.to(device);
        IReadOnlyList<string> quantizedPaths = [];
        double quantizeSeconds = 0;
        if (quantize)
        {
            var quantizeClock = Stopwatch.StartNew();
            quantizedPaths = BaseQuantizer.Quantize(model, new FourBitQuantization());
            quantizeSeconds = quantizeClock.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"{name}: quantized {quantizedPaths.Count} layers in {quantizeSeconds:F1} s");
        }
        long linearBytes = model.named_modules().Where(m => m.name.Contains(".layers.") && BaseLinear.TryCreate(m.module) is not null).Sum(m => LayerBytes(m.module));
        var peft = PeftModel.Inject(model, new LoraOptions { Rank = Rank, Alpha = 2 * Rank, Dropout = 0.05, TargetModules = Targets });
        var memory = WeightMemory.Measure(model);
        var trainable = peft.TrainableParameters().Select(p => p.Parameter).ToList();
        var optimizer = optim.AdamW(trainable, lr: 2e-4);
        setup.Stop();

        double dequantizeMs = 0;
        var states = model.modules().OfType<AdaptedLinear>().Where(l => l.QuantState is not null).Select(l => (l.Weight, State: l.QuantState!))
            .Concat(model.modules().OfType<Linear4Bit>().Select(l => (l.Weight, l.State))).ToList();
        if (states.Count > 0)
            dequantizeMs = Timings.Measure(() =>
            {
                using var scope = NewDisposeScope();
                foreach (var (packed, state) in states) state.Dequantize(packed, ScalarType.BFloat16).Dispose();
                if (device.type == DeviceType.CUDA) cuda.synchronize();
            }, 1, runs).Median;

        var inputs = randint(0, config.GetInt("vocab_size"), [Batch, Length + 1], generator: new Generator(99)).to(device);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        ProcessMemory.ReturnFreedMemory();
        long resident = ProcessMemory.Resident();
        ProcessMemory.ResetPeak();
        model.train();
        double loss = 0;
        var steps = Timings.Measure(() => { loss = Step(model, optimizer, inputs); if (device.type == DeviceType.CUDA) cuda.synchronize(); }, warmup, runs);
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        long peak = ProcessMemory.Peak();
        Console.Error.WriteLine($"{name}: median step {steps.Median:F0} ms, peak {peak / 1048576.0:F0} MiB");
        long parameters = memory.BaseRows.Where(r => !r.Kind.EndsWith(" state", StringComparison.Ordinal)).Sum(r => r.Values);
        return new RunResult(name, linearBytes, memory.BaseBytes, memory.Adapter.Bytes, parameters, memory.ToString(), setup.Elapsed.TotalSeconds,
            quantizeSeconds, resident, peak, [.. steps.Milliseconds], loss, dequantizeMs, states.Count, device.ToString(), cpuCudaCodes);
    }

    // Quantizes every block linear weight on both devices and compares the packed bytes and the block maxima.
    private static string CompareCpuAndCuda(nn.Module model)
    {
        int identical = 0, total = 0;
        long differentBytes = 0;
        foreach (var (name, module) in model.named_modules().Where(m => m.name.Contains(".layers.") && BaseLinear.TryCreate(m.module) is not null))
        {
            using var scope = NewDisposeScope();
            var weight = BaseLinear.TryCreate(module)!.Weight;
            var (cpuPacked, cpuState) = Quantized4BitState.Quantize(weight, new FourBitQuantization());
            var (gpuPacked, gpuState) = Quantized4BitState.Quantize(weight.to(CUDA), new FourBitQuantization());
            long diff = cpuPacked.ne(gpuPacked.cpu()).sum().item<long>();
            bool same = diff == 0 && cpuState.BlockAbsmax().eq(gpuState.BlockAbsmax().cpu()).all().item<bool>();
            differentBytes += diff;
            if (same) identical++;
            total++;
            cpuPacked.Dispose(); gpuPacked.Dispose(); cpuState.Dispose(); gpuState.Dispose();
        }
        return $"{identical} of {total} layers bit-identical (codes and double-quantized maxima), {differentBytes} packed bytes differ";
    }

    private static double Median(IReadOnlyList<double> values) => new Timings(values).Median;

    // One step: next-token cross-entropy on the batch, backward, AdamW.
    private static double Step(CausalLanguageModel model, optim.Optimizer optimizer, Tensor inputs)
    {
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        var ids = inputs[.., ..^1];
        var targets = inputs[.., 1..];
        var logits = model.call(ids);                                                  // (B, T, V)
        var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]).to(ScalarType.Float32), targets.reshape(-1));
        loss.backward();
        optimizer.step();
        return loss.item<float>();
    }

    // Bytes of a linear layer's weight: the bf16 parameter, or the packed codes plus the quantization state.
    private static long LayerBytes(nn.Module layer) =>
        layer.state_dict().Where(p => p.Key == "weight" || p.Key.StartsWith("weight.", StringComparison.Ordinal))
            .Sum(p => p.Value.numel() * p.Value.element_size());

    private static string MiB(long bytes) => F(bytes / 1048576.0, 1) + " MiB";
    private static string F(double value, int digits) => value.ToString("F" + digits, CultureInfo.InvariantCulture);
}

/// <summary>The process's resident memory from /proc/self/status (Linux); 0 elsewhere.</summary>
internal static class ProcessMemory
{
    /// <summary>VmRSS in bytes.</summary>
    public static long Resident() => Read("VmRSS:");

    /// <summary>VmHWM (peak resident since start or the last <see cref="ResetPeak"/>) in bytes.</summary>
    public static long Peak() => Read("VmHWM:");

    /// <summary>Hands freed heap memory back to the system (glibc's malloc_trim), so that what setup freed (the float32
    /// model built before the cast, quantization's temporaries) does not count as resident.</summary>
    public static void ReturnFreedMemory()
    {
        if (!OperatingSystem.IsLinux()) return;
        try { MallocTrim(UIntPtr.Zero); }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "malloc_trim")]
    private static extern int MallocTrim(UIntPtr pad);

    /// <summary>Resets VmHWM to the current resident size (writing 5 to /proc/self/clear_refs, Linux 4.0+).</summary>
    public static void ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private static long Read(string key)
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        }
        catch (IOException) { return 0; }
    }
}
