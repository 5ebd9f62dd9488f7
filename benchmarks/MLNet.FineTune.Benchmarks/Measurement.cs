using System.Diagnostics;
using System.Text;
using TorchSharp;

namespace MLNet.FineTune.Benchmarks;

/// <summary>Wall-clock timings of a repeated action: warm-up runs are discarded, the median is reported.</summary>
/// <param name="Milliseconds">The timed runs, in order.</param>
internal sealed record Timings(IReadOnlyList<double> Milliseconds)
{
    public double Median
    {
        get
        {
            var sorted = Milliseconds.Order().ToArray();
            int mid = sorted.Length / 2;
            return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
        }
    }

    public double Min => Milliseconds.Min();
    public double Max => Milliseconds.Max();

    /// <summary>Runs <paramref name="action"/> <paramref name="warmup"/> times untimed, then <paramref name="runs"/> times timed.</summary>
    public static Timings Measure(Action action, int warmup, int runs)
    {
        for (int i = 0; i < warmup; i++) action();
        var times = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            long start = Stopwatch.GetTimestamp();
            action();
            times[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }
        return new Timings(times);
    }
}

/// <summary>What the numbers were measured on; benchmark results are meaningless without it.</summary>
internal static class MachineInfo
{
    /// <summary>The CPU's model name (Linux /proc/cpuinfo), else the architecture.</summary>
    public static string Cpu()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line is not null) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>The 1, 5 and 15 minute load averages (Linux /proc/loadavg), or "n/a" elsewhere: other work on the machine slows every number.</summary>
    public static string LoadAverage()
    {
        try { return string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)); }
        catch (IOException) { return "n/a"; }
        catch (UnauthorizedAccessException) { return "n/a"; }
    }

    /// <summary>One markdown line: CPU, cores, threads, versions.</summary>
    public static string Describe() =>
        $"CPU: {Cpu()}, {Environment.ProcessorCount} logical cores; torch threads {torch.get_num_threads()}; " +
        $"OpenMP wait policy {MLNet.FineTune.Runtime.TorchRuntime.ThreadWaitPolicy}; " +
        $"TorchSharp {typeof(torch).Assembly.GetName().Version} (libtorch {torch.__version__}); .NET {Environment.Version}; " +
        $"{DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC";

    /// <summary><see cref="Describe"/>, OpenMP's wait policy (it decides how libtorch's threads behave when other
    /// processes share the cores) and the load averages around the run.</summary>
    public static string DescribeRun(string loadBefore, string loadAfter) =>
        Describe() + $"; load average before {loadBefore}, after {loadAfter}";
}

/// <summary>Markdown tables for stdout.</summary>
internal static class Markdown
{
    public static string Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        var text = new StringBuilder();
        text.AppendLine("| " + string.Join(" | ", headers) + " |");
        text.AppendLine("|" + string.Concat(headers.Select(_ => "---|")));
        foreach (var row in rows) text.AppendLine("| " + string.Join(" | ", row) + " |");
        return text.ToString();
    }
}
