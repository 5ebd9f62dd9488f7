using System.Diagnostics;
using MLNet.FineTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

[TestClass]
public sealed class FlatAdamWTests
{
    [TestMethod]
    public void EqualsTorchSharpAdamWWithGroupsMultipliersAndDecay()
    {
        using var flatTask = new TinyTask(32);
        using var torchTask = new TinyTask(32);   // same seeds: identical weights and data
        const double lr = 1e-2, wd = 0.05;
        Func<string, double> multiplier = name => name == "classifier.weight" ? 4.0 : 1.0; // a LoRA+-style group

        var flatParams = ParameterGroups.FromModule(flatTask.Model, multiplier);
        using var flat = new FlatAdamW(flatParams, weightDecay: wd, beta1: 0.9, beta2: 0.999, epsilon: 1e-8);
        Console.WriteLine($"{flatParams.Count} parameters in {flat.BucketCount} buckets");
        Assert.AreEqual(3, flat.BucketCount);

        // TorchSharp's AdamW with the same three groups (lr, decay) as separate ParamGroups.
        var torchParams = ParameterGroups.FromModule(torchTask.Model, multiplier);
        var groups = torchParams.GroupBy(p => (p.LearningRateMultiplier, p.ApplyWeightDecay))
            .Select(g => (g.Key.LearningRateMultiplier, Group: new AdamW.ParamGroup(g.Select(p => p.Parameter).ToList(), lr * g.Key.LearningRateMultiplier, 0.9, 0.999, 1e-8, g.Key.ApplyWeightDecay ? wd : 0.0, false, false)))
            .ToList();
        using var reference = new AdamW(groups.Select(g => g.Group).ToList(), lr, 0.9, 0.999, 1e-8, wd, false, false);

        double[] rates = [lr, 0.5 * lr, 2 * lr, lr, 0.25 * lr, lr]; // a moving rate, as a schedule gives
        double worst = 0;
        for (int step = 0; step < rates.Length; step++)
        {
            var batch = Enumerable.Range(step * 4 % 32, 4).ToArray();
            flat.ZeroGrad();
            using (NewDisposeScope()) flatTask.Loss(batch).backward();
            flat.Step(rates[step]);

            reference.zero_grad();
            using (NewDisposeScope()) torchTask.Loss(batch).backward();
            foreach (var (m, g) in groups) g.LearningRate = rates[step] * m;
            reference.step();

            using var a = new DisposableSnapshot(flatTask.Snapshot());
            using var b = new DisposableSnapshot(torchTask.Snapshot());
            double diff = TinyTask.MaxDifference(a.Tensors, b.Tensors);
            worst = Math.Max(worst, diff);
            Console.WriteLine($"step {step + 1}: max |flat - torch AdamW| = {diff:E2}");
        }
        Assert.IsTrue(worst <= 1e-6, $"flat AdamW differs from TorchSharp's AdamW by {worst:E2}");
        Assert.AreEqual(rates.Length, flat.StepCount);
    }

    [TestMethod]
    public void ClipGradNormEqualsTorchClipGradNorm()
    {
        using var flatTask = new TinyTask(16);
        using var torchTask = new TinyTask(16);
        using var flat = new FlatAdamW(flatTask.Parameters());
        var all = Enumerable.Range(0, 16).ToArray();
        using (NewDisposeScope()) flatTask.Loss(all).mul(50).backward();
        using (NewDisposeScope()) torchTask.Loss(all).mul(50).backward();
        double ours = flat.ClipGradNorm(0.5);
        double theirs = nn.utils.clip_grad_norm_(torchTask.Model.parameters(), 0.5);
        Console.WriteLine($"global norm: flat {ours:R}, torch {theirs:R}");
        Assert.AreEqual(theirs, ours, 1e-5 * theirs);
        Assert.IsTrue(ours > 0.5, "the test must actually clip");
        double worst = flatTask.Model.named_parameters().Zip(torchTask.Model.named_parameters())
            .Max(p => (p.First.parameter.grad! - p.Second.parameter.grad!).abs().max().item<float>());
        Console.WriteLine($"max gradient difference after clipping: {worst:E2}");
        Assert.IsTrue(worst < 1e-6);
    }

    [TestMethod]
    public void ReplacedGradientIsDetectedAtTheFirstStep()
    {
        using var task = new TinyTask(8);
        using var flat = new FlatAdamW(task.Parameters());
        task.Model.zero_grad();   // sets every .grad to null: the flat buffer would silently stay zero
        using (NewDisposeScope()) task.Loss([0, 1, 2]).backward();
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => flat.Step(1e-3));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "dense.weight");
    }

    [TestMethod]
    public void FasterThanTorchSharpAdamWOn200SmallTensors()
    {
        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        // 100 LoRA pairs (r = 8, width 64): 200 tensors of 512 values, as adapters on a small model.
        List<Parameter> Make()
        {
            manual_seed(3);
            var list = new List<Parameter>();
            for (int i = 0; i < 100; i++)
            {
                list.Add(new Parameter(randn(8, 64)));
                list.Add(new Parameter(randn(64, 8)));
            }
            foreach (var p in list) p.grad = randn(p.shape);
            return list;
        }
        var ours = Make();
        var theirs = Make();
        using var flat = new FlatAdamW(ours.Select((p, i) => new TrainableParameter($"p{i}", p)), weightDecay: 0.01);
        // FlatAdamW re-points .grad at its buffer: give it the same gradients as the reference.
        using (no_grad()) for (int i = 0; i < ours.Count; i++) ours[i].grad!.copy_(theirs[i].grad!);
        using var reference = new AdamW(theirs, 1e-3, 0.9, 0.999, 1e-8, 0.01, false, false);

        // Interleaved blocks, best block per optimizer: robust to other processes sharing the machine.
        const int blocks = 5, steps = 40;
        double torchMs = double.MaxValue, flatMs = double.MaxValue;
        for (int i = 0; i < 5; i++) { reference.step(); flat.Step(1e-3); } // warm up
        for (int block = 0; block < blocks; block++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < steps; i++) reference.step();
            torchMs = Math.Min(torchMs, clock.Elapsed.TotalMilliseconds / steps);
            clock.Restart();
            for (int i = 0; i < steps; i++) flat.Step(1e-3);
            flatMs = Math.Min(flatMs, clock.Elapsed.TotalMilliseconds / steps);
        }
        double ratio = torchMs / flatMs;
        Console.WriteLine($"AdamW step over 200 tensors of 512 values: TorchSharp {torchMs:F3} ms, flat {flatMs:F3} ms, speed-up x{ratio:F1}");
        double diff = ours.Zip(theirs).Max(p => (p.First - p.Second).abs().max().item<float>());
        Console.WriteLine($"after {5 + blocks * steps} identical steps: max |flat - torch| = {diff:E2}");
        Assert.IsTrue(diff < 1e-5, $"the two optimizers diverged by {diff}");
    }

    private sealed class DisposableSnapshot(Dictionary<string, Tensor> tensors) : IDisposable
    {
        public Dictionary<string, Tensor> Tensors { get; } = tensors;
        public void Dispose() { foreach (var t in Tensors.Values) t.Dispose(); }
    }
}
