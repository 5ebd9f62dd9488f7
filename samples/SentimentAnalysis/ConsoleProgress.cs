using System.Diagnostics;
using System.Globalization;
using MLNet.FineTune.Training;

namespace SentimentAnalysis;

/// <summary>
/// Prints one compact line per logging interval (about 20 lines per run, whatever its length) and one per evaluation.
/// Reports arrive synchronously on the training thread, so this implements <see cref="IProgress{T}"/> itself rather
/// than using <see cref="Progress{T}"/>, which would post them to the thread pool and print them out of order.
/// </summary>
public sealed class ConsoleProgress : IProgress<TrainingProgress>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly int _linesPerRun;
    private double _lossSum;
    private int _lossCount;

    public ConsoleProgress(int linesPerRun = 20) => _linesPerRun = Math.Max(1, linesPerRun);

    public void Report(TrainingProgress p)
    {
        var c = CultureInfo.InvariantCulture;
        if (p.Validation is { } v)
        {
            Console.WriteLine(string.Create(c, $"  epoch {p.Epoch} step {p.Step}/{p.TotalSteps}  validation {v.MetricName} {v.Value:F4}"));
            return;
        }
        _lossSum += p.Loss;
        _lossCount++;
        long interval = Math.Max(1, p.TotalSteps / _linesPerRun);
        if (p.Step % interval != 0 && p.Step != p.TotalSteps) return;
        double elapsed = _clock.Elapsed.TotalSeconds;
        double eta = elapsed / p.Step * (p.TotalSteps - p.Step);
        Console.WriteLine(string.Create(c,
            $"  epoch {p.Epoch} step {p.Step,4}/{p.TotalSteps}  loss {_lossSum / _lossCount:F4}  lr {p.LearningRate:E2}  {p.ExamplesPerSecond,5:F1} ex/s  {elapsed,5:F0} s elapsed, ~{eta:F0} s left"));
        _lossSum = 0;
        _lossCount = 0;
    }
}
