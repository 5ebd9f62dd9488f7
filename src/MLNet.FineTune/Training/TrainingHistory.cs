using Microsoft.Data.Analysis;
using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Training;

/// <summary>Why training ended.</summary>
public enum TrainingStopReason
{
    /// <summary>All planned steps ran.</summary>
    Completed,
    /// <summary>Early stopping: the validation metric stopped improving for <c>EarlyStoppingPatience</c> evaluations.</summary>
    EarlyStopped,
    /// <summary>The cancellation token fired.</summary>
    Cancelled,
    /// <summary>A loss or gradient norm was not finite (see <see cref="NonFiniteLossException"/>).</summary>
    NonFiniteLoss,
}

/// <summary>One optimizer step.</summary>
/// <param name="Epoch">1-based epoch.</param>
/// <param name="Step">1-based optimizer step.</param>
/// <param name="Loss">Mean training loss over the step's examples (or loss items).</param>
/// <param name="LearningRate">Base learning rate the step used.</param>
/// <param name="GradNorm">Global gradient norm before clipping.</param>
/// <param name="ExamplesPerSecond">Throughput of the step (forward, backward, update).</param>
/// <param name="ValidationMetric">The metric of the evaluation run after this step, or null.</param>
public sealed record TrainingStepRecord(int Epoch, long Step, double Loss, double LearningRate, double GradNorm, double ExamplesPerSecond, double? ValidationMetric = null);

/// <summary>The curves of a run: one record per optimizer step, as a list, a <see cref="DataFrame"/> or a PNG plot.</summary>
public sealed class TrainingHistory
{
    /// <summary>Creates a history from its records.</summary>
    public TrainingHistory(IReadOnlyList<TrainingStepRecord> steps, string? validationMetricName, TrainingStopReason stopReason)
    {
        Steps = steps; ValidationMetricName = validationMetricName; StopReason = stopReason;
    }

    /// <summary>One record per optimizer step, in order.</summary>
    public IReadOnlyList<TrainingStepRecord> Steps { get; }

    /// <summary>The name of the validation metric, when evaluations ran.</summary>
    public string? ValidationMetricName { get; }

    /// <summary>Why training ended.</summary>
    public TrainingStopReason StopReason { get; }

    /// <summary>True when training was cancelled.</summary>
    public bool Cancelled => StopReason == TrainingStopReason.Cancelled;

    /// <summary>Columns Epoch (int), Step (long), Loss, LearningRate, GradNorm, ExamplesPerSecond, ValidationMetric
    /// (double; null on steps without an evaluation).</summary>
    public DataFrame ToDataFrame() => new(
        new Int32DataFrameColumn("Epoch", Steps.Select(s => s.Epoch)),
        new Int64DataFrameColumn("Step", Steps.Select(s => s.Step)),
        new DoubleDataFrameColumn("Loss", Steps.Select(s => s.Loss)),
        new DoubleDataFrameColumn("LearningRate", Steps.Select(s => s.LearningRate)),
        new DoubleDataFrameColumn("GradNorm", Steps.Select(s => s.GradNorm)),
        new DoubleDataFrameColumn("ExamplesPerSecond", Steps.Select(s => s.ExamplesPerSecond)),
        new DoubleDataFrameColumn("ValidationMetric", Steps.Select(s => s.ValidationMetric)));

    /// <summary>Writes a PNG of the training loss (left axis), the learning rate and, when present, the validation
    /// metric (right axes) against the step. Written atomically.</summary>
    /// <param name="path">The .png file.</param>
    /// <param name="width">Pixels.</param>
    /// <param name="height">Pixels.</param>
    public void SavePlot(string path, int width = 900, int height = 500)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (Steps.Count == 0) throw new InvalidOperationException("The training history is empty: there is nothing to plot.");
        var plot = new ScottPlot.Plot();
        double[] steps = Steps.Select(s => (double)s.Step).ToArray();

        var loss = plot.Add.ScatterLine(steps, Steps.Select(s => s.Loss).ToArray());
        loss.LegendText = "training loss";
        plot.Axes.Left.Label.Text = "loss";

        var lr = plot.Add.ScatterLine(steps, Steps.Select(s => s.LearningRate).ToArray());
        lr.LegendText = "learning rate";
        lr.LinePattern = ScottPlot.LinePattern.Dashed;
        lr.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Right.Label.Text = "learning rate";

        var evaluated = Steps.Where(s => s.ValidationMetric is { } v && double.IsFinite(v)).ToArray();
        if (evaluated.Length > 0)
        {
            var metricAxis = plot.Axes.AddRightAxis();
            metricAxis.LabelText = "validation " + (ValidationMetricName ?? "metric");
            var metric = plot.Add.Scatter(evaluated.Select(s => (double)s.Step).ToArray(), evaluated.Select(s => s.ValidationMetric!.Value).ToArray());
            metric.LegendText = "validation " + (ValidationMetricName ?? "metric");
            metric.MarkerSize = 7;
            metric.Axes.YAxis = metricAxis;
        }
        plot.Axes.Bottom.Label.Text = "optimizer step";
        plot.Title(StopReason == TrainingStopReason.Completed ? "Training" : $"Training ({StopReason})");
        plot.ShowLegend(ScottPlot.Edge.Right); // outside the data area: the curves fill it
        var png = plot.GetImageBytes(width, height, ScottPlot.ImageFormat.Png);
        AtomicFile.Write(path, stream => stream.Write(png));
    }
}
