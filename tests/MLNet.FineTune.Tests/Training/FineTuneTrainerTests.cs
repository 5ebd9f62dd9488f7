using MLNet.FineTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

[TestClass]
public sealed class FineTuneTrainerTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-train-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static readonly TrainingOptions Base = new()
    {
        Epochs = 2, BatchSize = 4, LearningRate = 1e-2, WeightDecay = 0.01, WarmupSteps = 2, Seed = 7,
        LengthBucketing = false, WarmupRatio = 0,
    };

    [TestMethod]
    public void AccumulatedMicroBatchesEqualOneBatchOfTheirTotalSize()
    {
        // 30 examples: micro-batches of 4 in groups of 2 give steps of 8, 8, 8 and (4 + 2); one batch of 8 gives 8, 8, 8, 6.
        using var accumulated = new TinyTask(30);
        using var whole = new TinyTask(30);
        var a = FineTuneTrainer.Train(accumulated.Setup(Base with { BatchSize = 4, GradientAccumulationSteps = 2 }));
        var b = FineTuneTrainer.Train(whole.Setup(Base with { BatchSize = 8 }));
        Assert.AreEqual(8, a.StepsCompleted);
        Assert.AreEqual(8, b.StepsCompleted);
        double lossDiff = a.History.Steps.Zip(b.History.Steps).Max(p => Math.Abs(p.First.Loss - p.Second.Loss));
        double normDiff = a.History.Steps.Zip(b.History.Steps).Max(p => Math.Abs(p.First.GradNorm - p.Second.GradNorm));
        using var wa = new Weights(accumulated.Snapshot());
        using var wb = new Weights(whole.Snapshot());
        double weightDiff = TinyTask.MaxDifference(wa.Map, wb.Map);
        Console.WriteLine($"2 x 4 accumulated vs 8 at once over 8 steps: max loss diff {lossDiff:E2}, grad-norm diff {normDiff:E2}, weight diff {weightDiff:E2}");
        Assert.IsTrue(lossDiff < 1e-5 && normDiff < 1e-5 && weightDiff < 1e-5);
    }

    [TestMethod]
    public void TokenLevelLossesAccumulateByItemCount()
    {
        // A causal-LM-like loss: example i stands for 1 + i % 5 target tokens and the batch loss is the mean over tokens.
        static long Tokens(int i) => 1 + i % 5;
        static Func<IReadOnlyList<int>, Tensor> TokenMean(TinyTask task) => indices =>
        {
            using var idx = tensor(indices.Select(i => (long)i).ToArray());
            using var counts = tensor(indices.Select(i => (float)Tokens(i)).ToArray());
            var perExample = nn.functional.cross_entropy(task.Model.forward(task.X.index_select(0, idx)), task.Y.index_select(0, idx), reduction: nn.Reduction.None);
            return (perExample * counts).sum() / counts.sum();
        };
        TrainingResult Run(int batch, int accumulation, bool countItems, out Dictionary<string, Tensor> weights)
        {
            using var task = new TinyTask(32);
            var setup = task.Setup(Base with { BatchSize = batch, GradientAccumulationSteps = accumulation }, loss: TokenMean(task));
            var result = FineTuneTrainer.Train(countItems ? new TrainingSetup
            {
                Model = setup.Model, Parameters = setup.Parameters, ExampleCount = setup.ExampleCount, ComputeLoss = setup.ComputeLoss,
                Options = setup.Options, CountLossItems = indices => indices.Sum(Tokens),
            } : setup);
            weights = task.Snapshot();
            return result;
        }
        var whole = Run(8, 1, false, out var wholeWeights);
        var counted = Run(4, 2, true, out var countedWeights);
        var byExamples = Run(4, 2, false, out var byExampleWeights);
        double countedDiff = TinyTask.MaxDifference(wholeWeights, countedWeights);
        double byExampleDiff = TinyTask.MaxDifference(wholeWeights, byExampleWeights);
        double lossDiff = whole.History.Steps.Zip(counted.History.Steps).Max(p => Math.Abs(p.First.Loss - p.Second.Loss));
        Console.WriteLine($"2 x 4 vs 8 with token-mean losses: weights differ by {countedDiff:E2} when weighted by tokens (loss diff {lossDiff:E2}), by {byExampleDiff:E2} when weighted by examples");
        Assert.IsTrue(countedDiff < 1e-5 && lossDiff < 1e-5);
        Assert.IsTrue(byExampleDiff > 1e-4, "the check must be sensitive to the weighting");
        foreach (var t in wholeWeights.Values.Concat(countedWeights.Values).Concat(byExampleWeights.Values)) t.Dispose();
    }

    [TestMethod]
    public void SameSeedGivesTheSameLossTraceWithDropout()
    {
        long[] Trace(int seed, out TrainingResult result, List<TrainingProgress> reports, List<string> log)
        {
            using var task = new TinyTask(40, dropout: 0.2);
            result = FineTuneTrainer.Train(task.Setup(Base with
            {
                Seed = seed, Progress = new SyncProgress<TrainingProgress>(reports.Add), LoggingSteps = 5,
            }, log: log.Add));
            return result.History.Steps.Select(s => BitConverter.DoubleToInt64Bits(s.Loss)).ToArray();
        }
        var reports = new List<TrainingProgress>();
        var log = new List<string>();
        var first = Trace(7, out var r1, reports, log);
        var second = Trace(7, out _, [], []);
        var other = Trace(8, out _, [], []);
        Console.WriteLine("seed 7 losses: " + string.Join(", ", r1.History.Steps.Select(s => s.Loss.ToString("F6"))));
        CollectionAssert.AreEqual(first, second, "same seed must give a bit-identical loss trace");
        CollectionAssert.AreNotEqual(first, other, "another seed must change the trace");

        Assert.AreEqual(20, first.Length);
        Assert.AreEqual(20, reports.Count);
        Assert.IsTrue(reports.All(p => p.TotalSteps == 20 && p.ExamplesPerSecond > 0));
        CollectionAssert.AreEqual(Enumerable.Range(1, 20).Select(i => (long)i).ToArray(), reports.Select(p => p.Step).ToArray());
        Assert.IsTrue(log.Count(l => l.StartsWith("epoch")) == 4, string.Join("\n", log));
        foreach (var line in log) Console.WriteLine(line);
    }

    [TestMethod]
    public void LearningRateFollowsTheScheduleStepByStep()
    {
        using var task = new TinyTask(40);
        var options = Base with { Schedule = LearningRateSchedule.Cosine, WarmupSteps = 0, WarmupRatio = 0.25, Epochs = 3 };
        var result = FineTuneTrainer.Train(task.Setup(options));
        long total = 30, warmup = 8; // ceil(30 * 0.25)
        Assert.AreEqual(total, result.TotalSteps);
        foreach (var s in result.History.Steps)
            Assert.AreEqual(options.LearningRate!.Value * LearningRateSchedules.Multiplier(LearningRateSchedule.Cosine, s.Step - 1, warmup, total), s.LearningRate, 1e-15);
        Assert.AreEqual(0.0, result.History.Steps[0].LearningRate, "with warmup the first step has rate 0, as in transformers");
        Assert.AreEqual(options.LearningRate!.Value, result.History.Steps[(int)warmup].LearningRate, 1e-15);
    }

    [TestMethod]
    public void EarlyStoppingFollowsHuggingFaceSemanticsAndRestoresTheBestWeights()
    {
        // Scripted metrics (higher is better, threshold 0.1, patience 3): 0.55 is a new best but not by more than the
        // threshold, so it counts as no improvement; 0.70 resets the counter; three evaluations later training stops.
        double[] script = [0.50, 0.55, 0.54, 0.70, 0.69, 0.68, 0.67, 0.99, 0.99];
        using var task = new TinyTask(64);
        var snapshots = new List<Dictionary<string, Tensor>>();
        int calls = 0;
        EvaluationResult Evaluate()
        {
            snapshots.Add(task.Snapshot());
            return new EvaluationResult("accuracy", script[calls++], HigherIsBetter: true);
        }
        var result = FineTuneTrainer.Train(task.Setup(Base with
        {
            EvaluateEverySteps = 1, EarlyStoppingPatience = 3, EarlyStoppingThreshold = 0.1,
        }, Evaluate));
        Console.WriteLine($"stopped: {result.StopReason} after {calls} evaluations at step {result.StepsCompleted}; best {result.BestEvaluation?.Value} at step {result.BestStep}");
        Assert.AreEqual(TrainingStopReason.EarlyStopped, result.StopReason);
        Assert.AreEqual(7, calls);
        Assert.AreEqual(7, result.StepsCompleted);
        Assert.AreEqual(4L, result.BestStep);
        Assert.AreEqual(0.70, result.BestEvaluation!.Value);
        Assert.IsTrue(result.BestWeightsRestored);
        using var final = new Weights(task.Snapshot());
        double fromBest = TinyTask.MaxDifference(final.Map, snapshots[3]);
        double fromLast = TinyTask.MaxDifference(final.Map, snapshots[6]);
        Console.WriteLine($"final weights vs evaluation-4 weights: {fromBest:E2}; vs the last evaluated weights: {fromLast:E2}");
        Assert.AreEqual(0.0, fromBest, "the returned weights must be those of the best evaluation");
        Assert.IsTrue(fromLast > 1e-4, "training moved on after the best evaluation");
        CollectionAssert.AreEqual(script.Take(7).ToArray(), result.History.Steps.Select(s => s.ValidationMetric!.Value).ToArray());
        foreach (var s in snapshots.SelectMany(d => d.Values)) s.Dispose();
    }

    [TestMethod]
    public void EarlyStoppingOnARealMetricReturnsWeightsThatReproduceTheBestMetric()
    {
        // The validation labels are the training labels shifted by one class: fitting the training set worsens the
        // validation loss, so early stopping must trigger and hand back an early model.
        using var task = new TinyTask(64);
        using var validation = new TinyTask(64, shiftLabels: true);
        var seen = new List<double>();
        var result = FineTuneTrainer.Train(task.Setup(Base with
        {
            Epochs = 5, EvaluateEverySteps = 2, EarlyStoppingPatience = 2, LearningRate = 3e-2,
        }, () => { var v = task.LossOn(validation); seen.Add(v); return new EvaluationResult("validation_loss", v, HigherIsBetter: false); }));
        double recomputed = task.LossOn(validation);
        Console.WriteLine($"validation losses: {string.Join(", ", seen.Select(v => v.ToString("F5")))}");
        Console.WriteLine($"{result.StopReason} at step {result.StepsCompleted}/{result.TotalSteps}; best {result.BestEvaluation!.Value:F6} at step {result.BestStep}; recomputed on the returned model {recomputed:F6}");
        Assert.AreEqual(TrainingStopReason.EarlyStopped, result.StopReason);
        Assert.IsTrue(result.StepsCompleted < result.TotalSteps);
        Assert.AreEqual(seen.Min(), result.BestEvaluation.Value);
        Assert.AreEqual(result.BestEvaluation.Value, recomputed, 1e-7, "the restored weights must reproduce the best metric");
        Assert.AreNotEqual(seen[^1], recomputed, "the last evaluated model was not the best one");
    }

    [TestMethod]
    public void CancellationReturnsWithinOneStepWithAUsableModel()
    {
        using var task = new TinyTask(64, dropout: 0.1);
        using var cancel = new CancellationTokenSource();
        Dictionary<string, Tensor>? afterStep3 = null;
        int lossCalls = 0;
        var options = Base with
        {
            GradientAccumulationSteps = 2, CancellationToken = cancel.Token,
            Progress = new SyncProgress<TrainingProgress>(p => { if (p.Step == 3) afterStep3 = task.Snapshot(); }),
        };
        var result = FineTuneTrainer.Train(task.Setup(options, loss: indices =>
        {
            if (++lossCalls == 7) cancel.Cancel(); // first micro-batch of step 4
            return task.Loss(indices);
        }));
        Console.WriteLine($"{result.StopReason}: {result.StepsCompleted} of {result.TotalSteps} steps, {lossCalls} loss calls, history rows {result.History.Steps.Count}");
        Assert.IsTrue(result.Cancelled);
        Assert.AreEqual(3, result.StepsCompleted);
        Assert.AreEqual(7, lossCalls, "no micro-batch may run after the one during which cancellation came");
        Assert.AreEqual(3, result.History.Steps.Count);
        using var final = new Weights(task.Snapshot());
        Assert.AreEqual(0.0, TinyTask.MaxDifference(final.Map, afterStep3!), "the half-accumulated step 4 must not be applied");
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            task.Model.eval();
            var logits = task.Model.forward(task.X);
            Assert.IsTrue(logits.isfinite().all().item<bool>(), "the model must be usable");
        }
        Assert.IsTrue(task.Model.parameters().All(p => p.grad is null), "gradients are released");
        // And trainable again.
        var again = FineTuneTrainer.Train(task.Setup(Base with { MaxSteps = 2 }));
        Assert.AreEqual(2, again.StepsCompleted);
        foreach (var t in afterStep3!.Values) t.Dispose();
    }

    [TestMethod]
    public void NonFiniteLossRaisesANamedErrorAndKeepsTheLastGoodWeights()
    {
        using var task = new TinyTask(64);
        Dictionary<string, Tensor>? afterStep3 = null;
        int calls = 0;
        IReadOnlyList<int>? nanBatch = null;
        var options = Base with { Progress = new SyncProgress<TrainingProgress>(p => { if (p.Step == 3) afterStep3 = task.Snapshot(); }) };
        var e = Assert.ThrowsExactly<NonFiniteLossException>(() => FineTuneTrainer.Train(task.Setup(options, loss: indices =>
        {
            var loss = task.Loss(indices);
            if (++calls != 4) return loss;
            nanBatch = indices.ToList();
            return loss * double.NaN;
        })));
        Console.WriteLine(e.Message);
        Assert.AreEqual(4, e.Step);
        Assert.AreEqual("loss", e.Quantity);
        StringAssert.Contains(e.Message, "step 4");
        // The error names the step's examples, so the data behind it can be found.
        CollectionAssert.AreEqual(nanBatch!.Order().ToArray(), e.ExampleIndices.ToArray());
        StringAssert.Contains(e.Message, "The step's examples: " + string.Join(", ", nanBatch!.Order()));
        Assert.AreEqual(3, e.History.Steps.Count);
        Assert.AreEqual(TrainingStopReason.NonFiniteLoss, e.History.StopReason);
        using var final = new Weights(task.Snapshot());
        double diff = TinyTask.MaxDifference(final.Map, afterStep3!);
        Console.WriteLine($"weights after the error vs after step 3: {diff:E2}");
        Assert.AreEqual(0.0, diff);
        Assert.IsTrue(final.Map.Values.All(t => t.isfinite().all().item<bool>()));
        foreach (var t in afterStep3!.Values) t.Dispose();
    }

    [TestMethod]
    public void NonFiniteGradientWithAFiniteLossIsCaughtToo()
    {
        using var task = new TinyTask(32);
        int calls = 0;
        var e = Assert.ThrowsExactly<NonFiniteLossException>(() => FineTuneTrainer.Train(task.Setup(Base, loss: indices =>
        {
            var loss = task.Loss(indices);
            if (++calls != 2) return loss;
            // sqrt at 0 has an infinite derivative: the value stays finite, the gradient becomes NaN.
            var dense = task.Model.named_parameters().First().parameter;
            return loss + (dense.sum() * 0).sqrt();
        })));
        Console.WriteLine(e.Message);
        Assert.AreEqual(2, e.Step);
        Assert.AreEqual("gradient norm", e.Quantity);
    }

    [TestMethod]
    public void ResumingFromACheckpointReproducesTheUninterruptedRun()
    {
        // 40 examples, batches of 8: 5 steps per epoch, 10 in all; checkpoints at 3, 6, 9 (6 is mid-epoch 2).
        var checkpoints = Path.Combine(_dir, "run");
        var options = Base with
        {
            BatchSize = 8, Epochs = 2, CheckpointEverySteps = 3, CheckpointDirectory = checkpoints, CheckpointsToKeep = 2,
            EarlyStoppingPatience = 5,
        };
        TrainingResult Run(TrainingOptions o, out Dictionary<string, Tensor> weights)
        {
            using var task = new TinyTask(40, dropout: 0.2);
            using var validation = new TinyTask(40, shiftLabels: true);
            var result = FineTuneTrainer.Train(task.Setup(o, () => new EvaluationResult("validation_loss", task.LossOn(validation), false)));
            weights = task.Snapshot();
            return result;
        }
        var full = Run(options, out var fullWeights);
        var kept = Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order().ToArray();
        Console.WriteLine("checkpoint folders: " + string.Join(", ", kept));
        CollectionAssert.AreEqual(new[] { "checkpoint-6", "checkpoint-9" }, kept, "older checkpoints pruned, no temporary folders left");
        Assert.AreEqual(Path.Combine(checkpoints, "checkpoint-9"), FineTuneTrainer.LatestCheckpoint(checkpoints));
        Assert.IsNull(FineTuneTrainer.LatestCheckpoint(Path.Combine(_dir, "none")));
        CollectionAssert.AreEquivalent(new[] { "best.safetensors", "optimizer.safetensors", "rng_state.safetensors", "trainable.safetensors", "trainer_state.json" },
            Directory.GetFiles(Path.Combine(checkpoints, "checkpoint-6")).Select(Path.GetFileName).ToArray());

        var resumed = Run(options with { ResumeFromCheckpoint = Path.Combine(checkpoints, "checkpoint-6"), CheckpointDirectory = Path.Combine(_dir, "resumed") }, out var resumedWeights);
        var newest = Run(options with { ResumeFromCheckpoint = checkpoints, CheckpointDirectory = Path.Combine(_dir, "resumed2") }, out var newestWeights);

        Console.WriteLine("full:    " + string.Join(", ", full.History.Steps.Select(s => s.Loss.ToString("F7"))));
        Console.WriteLine("resumed: " + string.Join(", ", resumed.History.Steps.Select(s => s.Loss.ToString("F7"))));
        foreach (var other in new[] { resumed, newest })
        {
            CollectionAssert.AreEqual(full.History.Steps.ToArray(), other.History.Steps.Select((s, i) => s with { ExamplesPerSecond = full.History.Steps[i].ExamplesPerSecond }).ToArray(),
                "loss, learning rate, gradient norm and validation metric of every step must be identical");
            Assert.AreEqual(full.BestStep, other.BestStep);
        }
        double diff = Math.Max(TinyTask.MaxDifference(fullWeights, resumedWeights), TinyTask.MaxDifference(fullWeights, newestWeights));
        Console.WriteLine($"final weights, uninterrupted vs resumed: max diff {diff:E2}");
        Assert.AreEqual(0.0, diff);
        foreach (var t in fullWeights.Values.Concat(resumedWeights.Values).Concat(newestWeights.Values)) t.Dispose();
    }

    [TestMethod]
    public void ARerunPastTheSameStepReplacesItsCheckpointWhole()
    {
        // The first run tracks the best weights (best.safetensors); the rerun, a different model, does not.
        var checkpoints = Path.Combine(_dir, "run");
        using (var first = new TinyTask(24))
        {
            using var validation = new TinyTask(24, shiftLabels: true);
            FineTuneTrainer.Train(first.Setup(Base with
            {
                CheckpointEverySteps = 2, CheckpointDirectory = checkpoints, MaxSteps = 2,
                EvaluateEverySteps = 1, EarlyStoppingPatience = 5,
            }, () => new EvaluationResult("validation_loss", first.LossOn(validation), false)));
        }
        var folder = Path.Combine(checkpoints, "checkpoint-2");
        Assert.IsTrue(File.Exists(Path.Combine(folder, "best.safetensors")), "the first run's checkpoint holds best weights");

        using var rerun = new TinyTask(24, modelSeed: 2);
        FineTuneTrainer.Train(rerun.Setup(Base with { CheckpointEverySteps = 2, CheckpointDirectory = checkpoints, MaxSteps = 2 }));
        using var expected = new Weights(rerun.Snapshot());
        using var saved = new Weights(MLNet.FineTune.Checkpoints.SafeTensors.Load(Path.Combine(folder, "trainable.safetensors")));
        var entries = Directory.GetFileSystemEntries(checkpoints).Select(Path.GetFileName).ToArray();
        var files = Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        double diff = TinyTask.MaxDifference(expected.Map, saved.Map);
        Console.WriteLine($"checkpoint directory: {string.Join(", ", entries)}; checkpoint-2: {string.Join(", ", files)}; saved vs rerun weights: max diff {diff:E2}");
        CollectionAssert.AreEqual(new[] { "checkpoint-2" }, entries, "no temporary or set-aside folder left");
        CollectionAssert.AreEqual(new[] { "optimizer.safetensors", "rng_state.safetensors", "trainable.safetensors", "trainer_state.json" }, files,
            "the rerun's checkpoint replaces the old folder whole: no stale best.safetensors");
        Assert.AreEqual(0.0, diff, "the checkpoint holds the rerun's weights");
    }

    [TestMethod]
    public void ResumeRefusesACheckpointWithAnotherDataOrder()
    {
        var checkpoints = Path.Combine(_dir, "run");
        using (var task = new TinyTask(24))
            FineTuneTrainer.Train(task.Setup(Base with { CheckpointEverySteps = 2, CheckpointDirectory = checkpoints, MaxSteps = 2 }));
        using var again = new TinyTask(24);
        var e = Assert.ThrowsExactly<ArgumentException>(() => FineTuneTrainer.Train(again.Setup(Base with { BatchSize = 6, ResumeFromCheckpoint = checkpoints })));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "TrainingOptions.BatchSize");
    }

    [TestMethod]
    public void ResumeRefusesAnotherRunsCheckpointNamingWhatDiffersAndKeepsTheWeights()
    {
        var checkpoints = Path.Combine(_dir, "run");
        var written = new Dictionary<string, string> { ["base model"] = "abc123", ["method"] = """{"peft_type":"LORA","r":4,"lora_alpha":8}""", ["task"] = """{"labels":["neg","pos"]}""" };
        using (var task = new TinyTask(24))
            FineTuneTrainer.Train(task.Setup(Base with { CheckpointEverySteps = 2, CheckpointDirectory = checkpoints, MaxSteps = 2 }, fingerprint: written));

        // Same shapes, same data order: only the fingerprint tells these runs apart.
        var other = new Dictionary<string, string>(written) { ["method"] = """{"peft_type":"LORA","r":8,"lora_alpha":8}""", ["task"] = """{"labels":["bad","good"]}""" };
        using var again = new TinyTask(24, modelSeed: 2);
        using var before = new Weights(again.Snapshot());
        var e = NamedErrors.Expect<ArgumentException>(() => FineTuneTrainer.Train(again.Setup(Base with { ResumeFromCheckpoint = checkpoints }, fingerprint: other)),
            "method: r 4 in the checkpoint, 8 now", """task: labels ["neg","pos"] in the checkpoint, ["bad","good"] now""");
        using var after = new Weights(again.Snapshot());
        double changed = TinyTask.MaxDifference(before.Map, after.Map);
        Console.WriteLine($"weights changed by the refused resume: max {changed:E2}");
        Assert.DoesNotContain("base model:", e.Message, "the base model agrees and must not be named");
        Assert.AreEqual(0.0, changed);

        NamedErrors.Expect<ArgumentException>(() => FineTuneTrainer.Train(again.Setup(Base with { ResumeFromCheckpoint = checkpoints })),
            "base model (recorded in the checkpoint as abc123; this run has none)");

        using var same = new TinyTask(24);
        var resumed = FineTuneTrainer.Train(same.Setup(Base with { ResumeFromCheckpoint = checkpoints, MaxSteps = 3 }, fingerprint: written));
        Assert.AreEqual(3L, resumed.StepsCompleted, "the run that wrote the checkpoint resumes");
    }

    [TestMethod]
    public void ACheckpointThatDoesNotFitTheOptimizerLeavesTheWeightsAsTheyWere()
    {
        // Same parameter names and shapes (the weights file fits), but the second run gives the classifier its own
        // learning rate: another bucket layout, which the optimizer state does not fit.
        var checkpoints = Path.Combine(_dir, "run");
        using (var task = new TinyTask(24))
            FineTuneTrainer.Train(task.Setup(Base with { CheckpointEverySteps = 2, CheckpointDirectory = checkpoints, MaxSteps = 2 }));
        using var again = new TinyTask(24, modelSeed: 2);
        using var before = new Weights(again.Snapshot());
        var setup = again.Setup(Base with { ResumeFromCheckpoint = checkpoints },
            parameters: again.Parameters().Select(p => p.Name.StartsWith("classifier", StringComparison.Ordinal) ? p with { LearningRateMultiplier = 2 } : p).ToList());
        NamedErrors.Expect<InvalidDataException>(() => FineTuneTrainer.Train(setup), "optimizer.safetensors");
        using var after = new Weights(again.Snapshot());
        double changed = TinyTask.MaxDifference(before.Map, after.Map);
        Console.WriteLine($"weights changed by the refused resume: max {changed:E2}");
        Assert.AreEqual(0.0, changed, "the checkpoint's weights were copied in before its optimizer state was refused");
    }

    /// <summary>A frozen bfloat16 base with a float32 adapter that casts inside forward, as the PEFT wrappers do.</summary>
    private sealed class Bf16BaseWithAdapter : nn.Module<Tensor, Tensor>
    {
        private readonly Linear @base;
        private readonly Linear adapter;
        public Bf16BaseWithAdapter() : base("Bf16BaseWithAdapter")
        {
            @base = nn.Linear(TinyTask.Inputs, TinyTask.Classes);
            adapter = nn.Linear(TinyTask.Inputs, TinyTask.Classes, hasBias: false);
            RegisterComponents();
            @base.to(ScalarType.BFloat16);
            foreach (var p in @base.parameters()) p.requires_grad = false;
        }
        public override Tensor forward(Tensor x) // (B, 6) float32 -> (B, 3) bfloat16
            => @base.forward(x.to_type(ScalarType.BFloat16)) + adapter.forward(x).to_type(ScalarType.BFloat16);
    }

    [TestMethod]
    public void TrainsFloat32AdaptersOnAFrozenBFloat16Base()
    {
        using var data = new TinyTask(48);
        manual_seed(2);
        using var model = new Bf16BaseWithAdapter();
        var frozenBefore = model.named_parameters().Where(p => !p.parameter.requires_grad).ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var setup = new TrainingSetup
        {
            Model = model, Parameters = ParameterGroups.FromModule(model), ExampleCount = data.Count,
            ComputeLoss = idx =>
            {
                using var i = tensor(idx.Select(x => (long)x).ToArray());
                var logits = model.forward(data.X.index_select(0, i));
                Assert.AreEqual(ScalarType.BFloat16, logits.dtype);
                return nn.functional.cross_entropy(logits, data.Y.index_select(0, i)); // a bfloat16 loss
            },
            Options = Base with { Epochs = 4, LearningRate = 5e-2, WarmupSteps = 0 },
        };
        var result = FineTuneTrainer.Train(setup);
        var losses = result.History.Steps.Select(s => s.Loss).ToArray();
        Console.WriteLine($"bf16 base + fp32 adapter: loss {losses.Take(6).Average():F4} (first 6 steps) -> {losses.TakeLast(6).Average():F4} (last 6)");
        Assert.AreEqual(1, setup.Parameters.Count);
        Assert.AreEqual(ScalarType.Float32, setup.Parameters[0].Parameter.dtype);
        Assert.IsTrue(losses.TakeLast(6).Average() < losses.Take(6).Average() - 0.05, "the adapter must learn");
        foreach (var (name, before) in frozenBefore)
        {
            var now = model.named_parameters().Single(p => p.name == name).parameter;
            Assert.AreEqual(ScalarType.BFloat16, now.dtype);
            Assert.IsTrue(now.Equals(before), $"frozen {name} changed");
        }
    }

    [TestMethod]
    public void HistoryBecomesADataFrameAndAPlot()
    {
        using var task = new TinyTask(32);
        using var validation = new TinyTask(32, shiftLabels: true);
        var result = FineTuneTrainer.Train(task.Setup(Base with { Epochs = 3 },
            () => new EvaluationResult("validation_loss", task.LossOn(validation), false)));
        var frame = result.History.ToDataFrame();
        Console.WriteLine(frame.ToString());
        CollectionAssert.AreEqual(new[] { "Epoch", "Step", "Loss", "LearningRate", "GradNorm", "ExamplesPerSecond", "ValidationMetric" },
            frame.Columns.Select(c => c.Name).ToArray());
        Assert.AreEqual(24L, frame.Rows.Count);
        Assert.AreEqual(3L, frame.Columns["ValidationMetric"].Length - frame.Columns["ValidationMetric"].NullCount, "one evaluation per epoch");
        Assert.AreEqual(result.History.Steps[7].ValidationMetric, (double?)frame.Columns["ValidationMetric"][7]);
        Assert.AreEqual(3, (int)frame.Columns["Epoch"][23]!);

        var png = Path.Combine(_dir, "curves.png");
        result.History.SavePlot(png);
        var bytes = File.ReadAllBytes(png);
        Console.WriteLine($"plot: {bytes.Length} bytes");
        CollectionAssert.AreEqual(new byte[] { 0x89, 0x50, 0x4E, 0x47 }, bytes.Take(4).ToArray(), "a PNG file");
        Assert.IsTrue(bytes.Length > 5_000);
    }

    [TestMethod]
    public void InvalidOptionsAreNamed()
    {
        using var task = new TinyTask(8);
        var e1 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => FineTuneTrainer.Train(task.Setup(Base with { BatchSize = 0 })));
        StringAssert.Contains(e1.Message, "TrainingOptions.BatchSize");
        var e2 = Assert.ThrowsExactly<ArgumentException>(() => FineTuneTrainer.Train(task.Setup(Base with { EarlyStoppingPatience = 2 })));
        StringAssert.Contains(e2.Message, "TrainingSetup.Evaluate");
        var e3 = Assert.ThrowsExactly<ArgumentException>(() => FineTuneTrainer.Train(task.Setup(Base with { CheckpointEverySteps = 5 })));
        StringAssert.Contains(e3.Message, "TrainingOptions.CheckpointDirectory");
    }

    private sealed class Weights(Dictionary<string, Tensor> map) : IDisposable
    {
        public Dictionary<string, Tensor> Map { get; } = map;
        public void Dispose() { foreach (var t in Map.Values) t.Dispose(); }
    }
}
