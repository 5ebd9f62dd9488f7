namespace MLNet.FineTune.Benchmarks;

/// <summary>One command of the benchmark program: measures something on this machine and prints markdown.</summary>
internal interface IBenchmark
{
    /// <summary>The command name on the command line (e.g. "forward").</summary>
    string Name { get; }

    /// <summary>One line for the usage text.</summary>
    string Summary { get; }

    /// <summary>Runs the benchmark; progress goes to stderr, the results (markdown) to stdout.</summary>
    /// <returns>The process exit code.</returns>
    int Run(BenchmarkOptions options);
}

/// <summary>Options every benchmark understands.</summary>
/// <param name="Runs">Timed repetitions; the median is reported.</param>
/// <param name="Warmup">Untimed repetitions first (allocator, kernel selection, JIT).</param>
/// <param name="Threads">TorchSharp intra-op threads (default: Environment.ProcessorCount).</param>
/// <param name="Tiny">Small shapes, so that a GPU benchmark can be tested on the CPU.</param>
/// <param name="Only">Run only the named part (a benchmark's child process).</param>
internal sealed record BenchmarkOptions(int Runs, int Warmup, int Threads, bool Tiny = false, string? Only = null)
{
    public const string Help = "options: --runs N (timed repetitions, median reported; default 10), --warmup N (default 2), " +
                               "--threads N (torch threads; default Environment.ProcessorCount), --tiny (small shapes on the CPU, gpu), " +
                               "--only NAME (one workload, gpu)";

    /// <exception cref="ArgumentException">An unknown option or a value that is not a positive integer (names it).</exception>
    public static BenchmarkOptions Parse(IReadOnlyList<string> args)
    {
        var options = new BenchmarkOptions(Runs: 10, Warmup: 2, Threads: Environment.ProcessorCount);
        for (int i = 0; i < args.Count; i += 2)
        {
            string name = args[i];
            if (name == "--tiny")
            {
                options = options with { Tiny = true };
                i--; // a flag takes no value
                continue;
            }
            if (name == "--only")
            {
                if (i + 1 >= args.Count) throw new ArgumentException("Option --only needs a workload name.");
                options = options with { Only = args[i + 1] };
                continue;
            }
            if (name is not ("--runs" or "--warmup" or "--threads")) throw new ArgumentException($"Unknown option '{name}'.");
            int least = name == "--warmup" ? 0 : 1;
            if (i + 1 >= args.Count || !int.TryParse(args[i + 1], out int value) || value < least)
                throw new ArgumentException($"Option {name} needs an integer >= {least}, got '{(i + 1 < args.Count ? args[i + 1] : "")}'.");
            options = name switch
            {
                "--runs" => options with { Runs = value },
                "--warmup" => options with { Warmup = value },
                _ => options with { Threads = value },
            };
        }
        return options;
    }
}
