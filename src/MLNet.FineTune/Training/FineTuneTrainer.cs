using System.Diagnostics;
using System.Globalization;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Training;

/// <summary>What a task hands to the training loop.</summary>
/// <remarks>
/// Build <see cref="Parameters"/> after the model has its final dtype and device and its adapters are injected
/// (TorchSharp's <c>Module.to</c> replaces parameter objects). For a frozen base in bfloat16 with float32 adapters, cast
/// the base before injecting; the adapters cast inside their forward, and the loop casts the loss to float32 (bf16 needs
/// no loss scaling).
/// </remarks>
public sealed class TrainingSetup
{
    /// <summary>The model; the loop switches it between train() and eval() around evaluations.</summary>
    public required nn.Module Model { get; init; }

    /// <summary>The parameters to train, with their weight-decay flag and learning-rate multiplier
    /// (<see cref="ParameterGroups.FromModule"/> builds the usual list; PEFT's LoRA+ supplies its own).</summary>
    public required IReadOnlyList<TrainableParameter> Parameters { get; init; }

    /// <summary>Number of training examples; the loss callback receives indices in [0, ExampleCount).</summary>
    public required int ExampleCount { get; init; }

    /// <summary>Token length of each example; needed for <see cref="TrainingOptions.LengthBucketing"/>.</summary>
    public IReadOnlyList<int>? ExampleLengths { get; init; }

    /// <summary>Collates the given examples, runs the model and returns the mean loss of the batch as a scalar tensor.
    /// Called inside a dispose scope; the loop does backward, accumulation and the optimizer step.</summary>
    public required Func<IReadOnlyList<int>, Tensor> ComputeLoss { get; init; }

    /// <summary>How many items the batch's mean loss averages over (e.g. target tokens for causal language
    /// modelling). The micro-batches of a step are weighted by it, so that accumulation equals one big batch whose loss
    /// is the mean over all items (transformers' <c>num_items_in_batch</c>). Null: the number of examples.</summary>
    public Func<IReadOnlyList<int>, long>? CountLossItems { get; init; }

    /// <summary>Scores the model on validation data; called in eval mode under no_grad inside a dispose scope.
    /// Null disables evaluation (and with it early stopping and best-weight restore).</summary>
    public Func<EvaluationResult>? Evaluate { get; init; }

    /// <summary>What identifies the run besides its data order, by name (e.g. "base model": a hash of the base
    /// weights; "method": the adapter's config; "task": the labels). Written into every checkpoint and compared on
    /// resume: a checkpoint whose fingerprint differs is refused, naming what differs, before anything is loaded.
    /// Null records nothing (and accepts only checkpoints that recorded nothing).</summary>
    public IReadOnlyDictionary<string, string>? RunFingerprint { get; init; }

    /// <summary>The loop's options (a task's options are these: they derive from <see cref="TrainingOptions"/>).</summary>
    public TrainingOptions Options { get; init; } = new();

    /// <summary>The values decided when the run started (learning rate, seed); null decides them from
    /// <see cref="Options"/> alone (<see cref="ResolvedTraining.From"/>).</summary>
    public ResolvedTraining? Resolved { get; init; }

    /// <summary>Receives the progress reports instead of <see cref="TrainingOptions.Progress"/> (the ML.NET layer's
    /// channel, which forwards to the options' own); null reports to the options'.</summary>
    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>Receives human-readable log lines (the ML.NET layer connects its channel here).</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>What training produced. The model passed in holds the final weights (the best evaluated ones when
/// <see cref="BestWeightsRestored"/>), is back in the train/eval mode it had, and has no gradients attached.</summary>
public sealed class TrainingResult
{
    internal TrainingResult(TrainingHistory history, long stepsCompleted, long totalSteps, EvaluationResult? best, long? bestStep, bool bestWeightsRestored)
    {
        History = history; StepsCompleted = stepsCompleted; TotalSteps = totalSteps; BestEvaluation = best; BestStep = bestStep; BestWeightsRestored = bestWeightsRestored;
    }

    /// <summary>One record per optimizer step.</summary>
    public TrainingHistory History { get; }
    /// <summary>Why training ended.</summary>
    public TrainingStopReason StopReason => History.StopReason;
    /// <summary>True when the cancellation token stopped training.</summary>
    public bool Cancelled => History.Cancelled;
    /// <summary>Optimizer steps completed (including those before a resume).</summary>
    public long StepsCompleted { get; }
    /// <summary>Optimizer steps planned.</summary>
    public long TotalSteps { get; }
    /// <summary>The best evaluation, when evaluations ran.</summary>
    public EvaluationResult? BestEvaluation { get; }
    /// <summary>The step of the best evaluation.</summary>
    public long? BestStep { get; }
    /// <summary>True when the trainable weights were reset to those of <see cref="BestStep"/>.</summary>
    public bool BestWeightsRestored { get; }
}

/// <summary>
/// The training loop every task shares: seeded data order with optional length bucketing, gradient accumulation,
/// clipping by global norm, a multi-tensor AdamW (<see cref="FlatAdamW"/>) with no-decay groups and learning-rate
/// multipliers, warmup schedules as transformers defines them, evaluation with early stopping (Hugging Face's
/// EarlyStoppingCallback semantics) and best-weight restore, progress, cancellation, non-finite loss detection and
/// exact resume from checkpoints.
/// </summary>
public static class FineTuneTrainer
{
    /// <summary>Trains <see cref="TrainingSetup.Model"/> in place.</summary>
    /// <exception cref="ArgumentException">An option or the setup is invalid (the message names it).</exception>
    /// <exception cref="NonFiniteLossException">A loss or gradient norm was NaN or infinite; the model keeps the weights
    /// of the last good step.</exception>
    public static TrainingResult Train(TrainingSetup setup)
    {
        ArgumentNullException.ThrowIfNull(setup);
        setup.Options.Validate();
        if (setup.ExampleCount < 1) throw new ArgumentException($"TrainingSetup.ExampleCount must be at least 1 (got {setup.ExampleCount}).", nameof(setup));
        if (setup.Parameters is null || setup.Parameters.Count == 0) throw new ArgumentException("TrainingSetup.Parameters is empty: nothing would be trained.", nameof(setup));
        if (setup.Options.EarlyStoppingPatience is not null && setup.Evaluate is null)
            throw new ArgumentException($"{setup.Options.GetType().Name}.EarlyStoppingPatience needs an evaluation callback (TrainingSetup.Evaluate).", nameof(setup));
        if (setup.Options.LengthBucketing && setup.ExampleLengths is null)
            throw new ArgumentException($"{setup.Options.GetType().Name}.LengthBucketing needs TrainingSetup.ExampleLengths.", nameof(setup));
        TorchRuntime.EnsureLoaded();
        return new TrainingRun(setup).Execute();
    }

    /// <summary>The newest complete checkpoint folder in <paramref name="directory"/>, or null when there is none (to
    /// resume only when a previous run left one).</summary>
    public static string? LatestCheckpoint(string directory) =>
        TrainingCheckpoint.List(directory) is { Count: > 0 } all ? all[^1].Folder : null;

    /// <summary>Optimizer steps a run of these options makes over <paramref name="exampleCount"/> examples.</summary>
    public static long PlannedSteps(TrainingOptions options, int exampleCount)
    {
        int batches = (exampleCount + options.BatchSize - 1) / options.BatchSize;
        long perEpoch = (batches + options.GradientAccumulationSteps - 1) / options.GradientAccumulationSteps;
        return options.MaxSteps ?? options.Epochs * perEpoch;
    }

    /// <summary>One run's mutable state.</summary>
    private sealed class TrainingRun(TrainingSetup setup)
    {
        private readonly TrainingOptions _o = setup.Options;
        private readonly IProgress<TrainingProgress>? _progress = setup.Progress ?? setup.Options.Progress;
        private readonly ResolvedTraining _resolved = setup.Resolved ?? ResolvedTraining.From(setup.Options);

        // Evaluations run when there is something to evaluate: every EvaluateEverySteps steps, else after each epoch.
        private readonly EvaluationStrategy _evaluation = setup.Evaluate is null ? EvaluationStrategy.None
            : setup.Options.EvaluateEverySteps is null ? EvaluationStrategy.Epoch : EvaluationStrategy.Steps;
        private readonly List<TrainingStepRecord> _history = [];
        private EarlyStoppingTracker _tracker = new(setup.Options.EarlyStoppingPatience, setup.Options.EarlyStoppingThreshold);
        private FlatAdamW _optimizer = null!;
        private IReadOnlyList<Tensor>? _bestWeights;
        private EvaluationResult? _bestEvaluation;
        private long _globalStep, _totalSteps, _warmupSteps;
        private int _epoch, _nextBatch;

        public TrainingResult Execute()
        {
            var sampler = new BatchSampler(setup.ExampleCount, _o.BatchSize, _resolved.Seed, setup.ExampleLengths, _o.LengthBucketing, _o.LengthBucketingMegaBatches);
            _totalSteps = PlannedSteps(_o, setup.ExampleCount);
            _warmupSteps = LearningRateSchedules.WarmupSteps(_o.WarmupSteps, _o.WarmupRatio, _totalSteps);
            manual_seed(_resolved.Seed);
            if (cuda.is_available()) cuda.manual_seed_all(_resolved.Seed);

            var model = setup.Model;
            bool wasTraining = model.training;
            var stopReason = TrainingStopReason.Completed;
            using (_optimizer = new FlatAdamW(setup.Parameters, _o.WeightDecay, _o.AdamBeta1, _o.AdamBeta2, _o.AdamEpsilon))
            {
                try
                {
                    if (_o.ResumeFromCheckpoint is not null) Resume(_o.ResumeFromCheckpoint);
                    LogStart(sampler.BatchesPerEpoch);
                    model.train();
                    while (_globalStep < _totalSteps && stopReason == TrainingStopReason.Completed)
                    {
                        var batches = sampler.Epoch(_epoch);
                        int epochNumber = _epoch + 1;
                        while (_epoch == epochNumber - 1 && _globalStep < _totalSteps)
                        {
                            int start = _nextBatch, end = Math.Min(start + _o.GradientAccumulationSteps, batches.Count);
                            if (!RunStep(batches, start, end, epochNumber)) { stopReason = TrainingStopReason.Cancelled; break; }
                            bool epochEnd = end == batches.Count;
                            (_epoch, _nextBatch) = epochEnd ? (_epoch + 1, 0) : (_epoch, end);
                            bool stop = false;
                            if (setup.Evaluate is not null && (_evaluation == EvaluationStrategy.Epoch && epochEnd
                                || _evaluation == EvaluationStrategy.Steps && _globalStep % _o.EvaluateEverySteps == 0))
                                stop = Evaluate(epochNumber);
                            if (_o.CheckpointEverySteps is int every && _globalStep % every == 0) SaveCheckpoint();
                            if (stop) { stopReason = TrainingStopReason.EarlyStopped; break; }
                        }
                    }
                    if (stopReason == TrainingStopReason.Cancelled) Log($"Training cancelled after step {_globalStep} of {_totalSteps}.");

                    bool restored = false;
                    if (_o.RestoreBestWeights && _bestWeights is not null)
                    {
                        _optimizer.RestoreWeights(_bestWeights);
                        restored = true;
                        Log($"Restored the weights of step {_tracker.BestStep} (best {_tracker.MetricName} = {Format(_tracker.Best!.Value)}).");
                    }
                    return new TrainingResult(new TrainingHistory(_history.ToList(), _tracker.MetricName, stopReason), _globalStep, _totalSteps,
                        _bestEvaluation, _tracker.BestStep, restored);
                }
                finally
                {
                    if (_bestWeights is not null) foreach (var t in _bestWeights) t.Dispose();
                    model.train(wasTraining);
                }
            }
        }

        /// <summary>Forward/backward over micro-batches [start, end) and one optimizer step; false when cancelled
        /// (the partial gradients are dropped and no step is made).</summary>
        private bool RunStep(IReadOnlyList<int[]> batches, int start, int end, int epochNumber)
        {
            var clock = Stopwatch.StartNew();
            int examples = 0;
            var items = new double[end - start];
            for (int i = start; i < end; i++)
            {
                examples += batches[i].Length;
                items[i - start] = setup.CountLossItems?.Invoke(batches[i]) ?? batches[i].Length;
                if (!(items[i - start] >= 0)) throw new InvalidOperationException($"TrainingSetup.CountLossItems returned {items[i - start]} for a batch; it must be 0 or more.");
            }
            double totalItems = items.Sum();
            if (totalItems <= 0) throw new InvalidOperationException($"TrainingSetup.CountLossItems counted no items in the micro-batches of step {_globalStep + 1}.");
            _optimizer.ZeroGrad();
            double loss;
            using (var stepScope = NewDisposeScope())
            {
                var device = setup.Parameters[0].Parameter.device;
                var lossSum = zeros(Array.Empty<long>(), ScalarType.Float32, device); // () weighted mean over the step's examples
                for (int i = start; i < end; i++)
                {
                    if (_o.CancellationToken.IsCancellationRequested) { _optimizer.ZeroGrad(); return false; }
                    using var microScope = NewDisposeScope();
                    var batchLoss = setup.ComputeLoss(batches[i]) ?? throw new InvalidOperationException("TrainingSetup.ComputeLoss returned null.");
                    if (batchLoss.numel() != 1)
                        throw new InvalidOperationException($"TrainingSetup.ComputeLoss must return a scalar loss; it returned shape [{string.Join(", ", batchLoss.shape)}].");
                    if (!batchLoss.requires_grad)
                        throw new InvalidOperationException("The loss from TrainingSetup.ComputeLoss does not depend on any parameter that requires grad: nothing would train.");
                    var loss32 = batchLoss.reshape([]).to_type(ScalarType.Float32); // bf16 models: backward and logging in float32
                    // Weight each micro-batch by its share of the step's items (examples unless counted otherwise): the
                    // accumulated gradient is then the gradient of the mean loss over all of them, as one big batch gives.
                    double weight = items[i - start] / totalItems;
                    loss32.mul(weight).backward();
                    lossSum.add_(loss32.detach(), alpha: weight);
                }
                loss = lossSum.cpu().item<float>();
            }
            if (!double.IsFinite(loss)) Diverged("loss", loss, epochNumber, batches.Take(end).Skip(start));
            double gradNorm = _optimizer.ClipGradNorm(_o.MaxGradientNorm);
            if (!double.IsFinite(gradNorm)) Diverged("gradient norm", gradNorm, epochNumber, batches.Take(end).Skip(start));

            double lr = _resolved.LearningRate * LearningRateSchedules.Multiplier(_o.Schedule, _globalStep, _warmupSteps, _totalSteps);
            _optimizer.Step(lr);
            _globalStep++;
            double examplesPerSecond = examples / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
            _history.Add(new TrainingStepRecord(epochNumber, _globalStep, loss, lr, gradNorm, examplesPerSecond));
            _progress?.Report(new TrainingProgress(epochNumber, _globalStep, _totalSteps, loss, lr, gradNorm, examplesPerSecond));
            if (_globalStep % _o.LoggingSteps == 0 || _globalStep == _totalSteps)
                Log($"epoch {epochNumber} step {_globalStep}/{_totalSteps}: loss {Format(loss)}, lr {lr:G4}, grad norm {Format(gradNorm)}, {examplesPerSecond:F1} examples/s");
            return true;
        }

        /// <summary>Throws for a non-finite loss or gradient norm, naming the step's examples (its micro-batches).</summary>
        private void Diverged(string quantity, double value, int epochNumber, IEnumerable<int[]> microBatches)
        {
            _optimizer.ZeroGrad(); // the bad gradients are never applied
            throw new NonFiniteLossException(quantity, value, _globalStep + 1, epochNumber,
                new TrainingHistory(_history.ToList(), _tracker.MetricName, TrainingStopReason.NonFiniteLoss), microBatches.SelectMany(b => b).ToArray());
        }

        /// <summary>Runs the task's evaluation; true when early stopping says stop.</summary>
        private bool Evaluate(int epochNumber)
        {
            EvaluationResult result;
            setup.Model.eval();
            try
            {
                using var scope = NewDisposeScope();
                using var noGrad = no_grad();
                result = setup.Evaluate!() ?? throw new InvalidOperationException("TrainingSetup.Evaluate returned null.");
            }
            finally { setup.Model.train(); }

            var (newBest, stop) = _tracker.Observe(result, _globalStep);
            if (newBest)
            {
                _bestEvaluation = result;
                if (_o.RestoreBestWeights)
                {
                    if (_bestWeights is not null) foreach (var t in _bestWeights) t.Dispose();
                    _bestWeights = _optimizer.CloneWeights();
                }
            }
            _history[^1] = _history[^1] with { ValidationMetric = result.Value };
            var last = _history[^1];
            _progress?.Report(new TrainingProgress(epochNumber, _globalStep, _totalSteps, last.Loss, last.LearningRate, last.GradNorm, last.ExamplesPerSecond, result));
            var others = result.OtherMetrics is { Count: > 0 } o ? " (" + string.Join(", ", o.Select(p => $"{p.Key} {Format(p.Value)}")) + ")" : "";
            Log($"evaluation at step {_globalStep}: {result.MetricName} {Format(result.Value)}{others}; best {Format(_tracker.Best ?? double.NaN)} at step {_tracker.BestStep}"
                + (_o.EarlyStoppingPatience is int p ? $"; {_tracker.Counter}/{p} evaluations without improvement" : ""));
            if (stop) Log($"Early stopping at step {_globalStep}: no improvement above {_o.EarlyStoppingThreshold} for {_tracker.Counter} evaluations.");
            return stop;
        }

        private void SaveCheckpoint()
        {
            var state = new CheckpointState
            {
                GlobalStep = _globalStep, Epoch = _epoch, NextBatchInEpoch = _nextBatch, TotalSteps = _totalSteps,
                Seed = _resolved.Seed, ExampleCount = setup.ExampleCount, BatchSize = _o.BatchSize, GradientAccumulationSteps = _o.GradientAccumulationSteps,
                LengthBucketing = _o.LengthBucketing, LengthBucketingMegaBatches = _o.LengthBucketingMegaBatches,
                MetricName = _tracker.MetricName, HigherIsBetter = _tracker.HigherIsBetter, BestMetric = _tracker.Best,
                BestStep = _tracker.BestStep, PatienceCounter = _tracker.Counter, History = _history.ToList(),
                RunFingerprint = setup.RunFingerprint?.OrderBy(p => p.Key, StringComparer.Ordinal).ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal),
            };
            var folder = TrainingCheckpoint.Write(_o.CheckpointDirectory!, state, _optimizer, _bestWeights, _o.CheckpointsToKeep);
            Log($"Checkpoint written: {folder}");
        }

        // The options' type names the option in errors (TextClassificationOptions.BatchSize, TrainingOptions.BatchSize).
        private string Type => _o.GetType().Name;

        private void Resume(string path)
        {
            var folder = TrainingCheckpoint.Resolve(path);
            var state = TrainingCheckpoint.ReadState(folder);
            // Everything is checked before anything is loaded: a refused checkpoint leaves the model as it was.
            TrainingCheckpoint.CheckSameRun(folder, state.RunFingerprint, setup.RunFingerprint);
            void Same<T>(string option, T inCheckpoint, T now)
            {
                if (!EqualityComparer<T>.Default.Equals(inCheckpoint, now))
                    throw new ArgumentException($"Cannot resume from {folder}: it was written with {option} = {inCheckpoint}, but the current value is {now}; the data order would differ.");
            }
            Same($"{Type}.Seed", state.Seed, _resolved.Seed);
            Same("TrainingSetup.ExampleCount", state.ExampleCount, setup.ExampleCount);
            Same($"{Type}.BatchSize", state.BatchSize, _o.BatchSize);
            Same($"{Type}.GradientAccumulationSteps", state.GradientAccumulationSteps, _o.GradientAccumulationSteps);
            Same($"{Type}.LengthBucketing", state.LengthBucketing, _o.LengthBucketing);
            if (_o.LengthBucketing) Same($"{Type}.LengthBucketingMegaBatches", state.LengthBucketingMegaBatches, _o.LengthBucketingMegaBatches);

            _bestWeights = TrainingCheckpoint.LoadTensors(folder, _optimizer);
            _globalStep = state.GlobalStep; _epoch = state.Epoch; _nextBatch = state.NextBatchInEpoch;
            _history.AddRange(state.History);
            _tracker = new EarlyStoppingTracker(_o.EarlyStoppingPatience, _o.EarlyStoppingThreshold);
            _tracker.Restore(state.MetricName, state.HigherIsBetter, state.BestMetric, state.BestStep, state.PatienceCounter);
            if (state.MetricName is not null && state.BestMetric is double best)
                _bestEvaluation = new EvaluationResult(state.MetricName, best, state.HigherIsBetter);
            if (setup.Parameters[0].Parameter.device.type != DeviceType.CPU)
                Log("Note: only the CPU random generator is restored on resume; dropout on the accelerator will draw different masks than the uninterrupted run.");
            Log($"Resumed from {folder} at step {_globalStep} (epoch {_epoch + 1}, batch {_nextBatch}).");
        }

        private void LogStart(int batchesPerEpoch)
        {
            if (setup.Log is null) return;
            long elements = setup.Parameters.Sum(p => p.Parameter.numel());
            int noDecay = setup.Parameters.Count(p => !p.ApplyWeightDecay);
            Log($"Training {setup.ExampleCount} examples: {batchesPerEpoch} batches of {_o.BatchSize} per epoch, accumulation {_o.GradientAccumulationSteps}, " +
                $"{_totalSteps} optimizer steps ({_warmupSteps} warmup, {_o.Schedule} schedule, peak lr {_resolved.LearningRate:G4}, weight decay {_o.WeightDecay}).");
            Log($"{setup.Parameters.Count} trainable tensors ({elements:N0} values, {noDecay} without weight decay) in {_optimizer.BucketCount} flat AdamW buckets.");
            var listed = setup.Parameters.Select(p => p.Parameter.Handle).ToHashSet();
            int stray = setup.Model.parameters().Count(p => p.requires_grad && !listed.Contains(p.Handle));
            if (stray > 0)
                Log($"Warning: {stray} model parameters require grad but are not in TrainingSetup.Parameters: they get gradients but are never updated. Freeze them to save memory and time.");
        }

        private void Log(string message) => setup.Log?.Invoke(message);

        private static string Format(double value) => value.ToString("G5", CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// Early stopping as Hugging Face's EarlyStoppingCallback: an evaluation resets the patience counter when it beats the
/// best metric so far by more than the threshold, and otherwise increments it; training stops when the counter
/// reaches the patience. The best metric (and the weights kept for restore) is updated on any strict improvement, as
/// the Trainer's best-model tracking does; the comparison is against the best before this evaluation.
/// </summary>
internal sealed class EarlyStoppingTracker(int? patience, double threshold)
{
    public string? MetricName { get; private set; }
    public bool HigherIsBetter { get; private set; }
    public double? Best { get; private set; }
    public long? BestStep { get; private set; }
    public int Counter { get; private set; }

    /// <summary>Records an evaluation; returns whether it is the new best and whether to stop.</summary>
    public (bool NewBest, bool Stop) Observe(EvaluationResult result, long step)
    {
        if (string.IsNullOrWhiteSpace(result.MetricName)) throw new InvalidOperationException("TrainingSetup.Evaluate returned a result without a MetricName.");
        if (MetricName is null) { MetricName = result.MetricName; HigherIsBetter = result.HigherIsBetter; }
        else if (MetricName != result.MetricName || HigherIsBetter != result.HigherIsBetter)
            throw new InvalidOperationException($"TrainingSetup.Evaluate changed its metric from '{MetricName}' (higher is better: {HigherIsBetter}) to '{result.MetricName}' ({result.HigherIsBetter}).");

        double value = result.Value;
        // NaN never improves; comparisons with NaN are false.
        bool better = !double.IsNaN(value) && (Best is not double best || (HigherIsBetter ? value > best : value < best));
        bool significantlyBetter = better && (Best is not double b || Math.Abs(value - b) > threshold);
        Counter = significantlyBetter ? 0 : Counter + 1;
        if (better) { Best = value; BestStep = step; }
        return (better, patience is int p && Counter >= p);
    }

    public void Restore(string? metricName, bool higherIsBetter, double? best, long? bestStep, int counter)
    {
        MetricName = metricName; HigherIsBetter = higherIsBetter; Best = best; BestStep = bestStep; Counter = counter;
    }
}
