using MLNet.FineTune.Benchmarks;
using MLNet.FineTune.Runtime;
using TorchSharp;

// Benchmarks of the library on this machine, each printing a markdown table (docs/performance.md):
//   dotnet run --project benchmarks/MLNet.FineTune.Benchmarks -c Release -- <command> [--runs N] [--warmup N] [--threads N]
// A new benchmark is one file implementing IBenchmark plus one entry in this table.
IBenchmark[] benchmarks =
[
    new ForwardBenchmark(),
    new TrainBenchmark(),
    new DropoutBenchmark(),
    new DropoutTrainBenchmark(),
    new CausalTrainBenchmark(),
    new LatencyBenchmark(),
    new GpuBenchmark(),
    new QLoraBenchmark(),
];

if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
{
    PrintUsage(Console.Out);
    return args.Length == 0 ? 1 : 0;
}

var benchmark = benchmarks.FirstOrDefault(b => b.Name == args[0]);
if (benchmark is null)
{
    Console.Error.WriteLine($"Unknown command '{args[0]}'.");
    PrintUsage(Console.Error);
    return 1;
}

BenchmarkOptions options;
try
{
    options = BenchmarkOptions.Parse(args[1..]);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    PrintUsage(Console.Error);
    return 1;
}

TorchRuntime.EnsureLoaded();
// Only when asked: set_num_threads also fixes MKL's count for this thread, which libtorch otherwise takes from OpenMP's.
if (args.Contains("--threads")) torch.set_num_threads(options.Threads);
return benchmark.Run(options);

void PrintUsage(TextWriter writer)
{
    writer.WriteLine("usage: MLNet.FineTune.Benchmarks <command> [--runs N] [--warmup N] [--threads N]");
    writer.WriteLine("commands:");
    foreach (var b in benchmarks) writer.WriteLine($"  {b.Name,-10} {b.Summary}");
    writer.WriteLine(BenchmarkOptions.Help);
}
