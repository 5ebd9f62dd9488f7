using Microsoft.ML.Runtime;
using MLNet.FineTune.Training;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// Connects the training loop's progress to ML.NET's progress channel (what MLContext's log and tools that poll
/// progress see) and to the user's <see cref="TrainingOptions.Progress"/>, synchronously and in order.
/// </summary>
internal sealed class TrainingProgressChannel : IProgress<TrainingProgress>, IDisposable
{
    private readonly IProgressChannel _channel;
    private readonly IProgress<TrainingProgress>? _user;
    private TrainingProgress? _last;

    public TrainingProgressChannel(IHost host, string name, IProgress<TrainingProgress>? user)
    {
        _user = user;
        _channel = host.StartProgressChannel(name);
        _channel.SetHeader(new ProgressHeader(["Loss", "Learning rate", "Examples/s"], ["Steps"]), entry =>
        {
            if (_last is not { } p) return;
            entry.SetProgress(0, p.Step, p.TotalSteps);
            entry.SetMetric(0, p.Loss);
            entry.SetMetric(1, p.LearningRate);
            entry.SetMetric(2, p.ExamplesPerSecond);
        });
    }

    public void Report(TrainingProgress value)
    {
        _last = value;
        _user?.Report(value);
    }

    public void Dispose() => _channel.Dispose();
}
