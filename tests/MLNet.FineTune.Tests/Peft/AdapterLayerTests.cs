using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>The adapter layers against their formulas, written out here independently of the layer code.</summary>
[TestClass]
public sealed class AdapterLayerTests
{
    [ClassInitialize]
    public static void Load(TestContext _) => TorchRuntime.EnsureLoaded();

    private static BaseLinear Linear(int seed, long inFeatures = 12, long outFeatures = 10)
    {
        manual_seed(seed);
        return BaseLinear.TryCreate(nn.Linear(inFeatures, outFeatures))!;
    }

    // The same function as a Conv1D: weight stored [in, out].
    private static BaseLinear AsConv1D(BaseLinear linear)
    {
        var conv = new Conv1D(linear.InFeatures, linear.OutFeatures);
        using (no_grad())
        {
            conv.weight.copy_(linear.Weight.t());
            conv.bias.copy_(linear.Bias!);
        }
        return BaseLinear.TryCreate(conv)!;
    }

    [TestMethod]
    public void RecognisesLinearAndConv1DOnly()
    {
        var linear = Linear(1);
        Assert.IsFalse(linear.FanInFanOut);
        Assert.AreEqual(12, linear.InFeatures);
        Assert.AreEqual(10, linear.OutFeatures);
        var conv = AsConv1D(linear);
        Assert.IsTrue(conv.FanInFanOut);
        Assert.AreEqual(12, conv.InFeatures);
        Assert.AreEqual(10, conv.OutFeatures);
        Assert.IsNull(BaseLinear.TryCreate(nn.LayerNorm(4)));
        Assert.IsNull(BaseLinear.TryCreate(nn.Embedding(5, 4)));
    }

    [TestMethod]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    [DataRow(true, true)]
    public void LoraIsBasePlusScaledLowRankUpdate(bool rsLora, bool conv1D)
    {
        using var scope = NewDisposeScope();
        var linear = Linear(2);
        var w = linear.Weight.detach().clone();
        var b = linear.Bias!.detach().clone();
        var layer = new LoraLinear(conv1D ? AsConv1D(linear) : linear, rank: 4, alpha: 8, useRsLora: rsLora, init: LoraInit.Random);
        layer.eval();
        double scaling = rsLora ? 8 / Math.Sqrt(4) : 8 / 4.0;
        Assert.AreEqual(scaling, layer.Scaling, 1e-15);
        CollectionAssert.AreEqual(new long[] { 4, 12 }, layer.LoraA.shape);
        CollectionAssert.AreEqual(new long[] { 10, 4 }, layer.LoraB.shape);

        var x = Input(3, hidden: 12);
        var expected = x.matmul(w.t()) + b + x.matmul(layer.LoraA.t()).matmul(layer.LoraB.t()) * scaling;
        var error = MaxAbsDiff(layer.call(x), expected);
        Console.WriteLine($"LoRA (rsLoRA={rsLora}, Conv1D={conv1D}) vs formula: max error {error:E2}");
        Assert.IsTrue(error < 1e-5, $"{error}");
    }

    [TestMethod]
    public void DefaultInitStartsAsBaseWithKaimingA()
    {
        using var scope = NewDisposeScope();
        var linear = Linear(4, inFeatures: 256, outFeatures: 32);
        var layer = new LoraLinear(linear, rank: 64, alpha: 16);
        Assert.AreEqual(0.0, layer.LoraB.abs().max().item<float>());
        // kaiming_uniform(a = sqrt(5)) on (r, in): U(-1/sqrt(in), 1/sqrt(in)), std = 1/sqrt(3 in).
        double bound = 1 / Math.Sqrt(256), std = layer.LoraA.std().item<float>();
        Assert.IsTrue(layer.LoraA.abs().max().item<float>() <= bound + 1e-7);
        Console.WriteLine($"kaiming A: std {std:F5}, expected {1 / Math.Sqrt(3 * 256):F5}");
        Assert.AreEqual(1 / Math.Sqrt(3 * 256), std, 0.05 / Math.Sqrt(3 * 256) * 3);
        var x = Input(5, hidden: 256);
        Assert.AreEqual(0.0, MaxAbsDiff(layer.call(x), nn.functional.linear(x, linear.Weight, linear.Bias)));
    }

    [TestMethod]
    public void GaussianInitDrawsAWithStdOneOverR()
    {
        using var scope = NewDisposeScope();
        var layer = new LoraLinear(Linear(6, inFeatures: 512, outFeatures: 8), rank: 8, alpha: 8, init: LoraInit.Gaussian);
        double std = layer.LoraA.std().item<float>();
        Console.WriteLine($"gaussian A: std {std:F5}, expected {1 / 8.0:F5}");
        Assert.AreEqual(1 / 8.0, std, 0.01);
        Assert.AreEqual(0.0, layer.LoraB.abs().max().item<float>());
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void PissaTakesPrincipalSingularVectorsAndLeavesTheResidual(bool conv1D)
    {
        using var scope = NewDisposeScope();
        var linear = Linear(7, inFeatures: 20, outFeatures: 16);
        var original = linear.Weight.detach().clone();                    // (out, in)
        var x = Input(8, hidden: 20);
        var before = nn.functional.linear(x, original, linear.Bias);
        var layer = new LoraLinear(conv1D ? AsConv1D(linear) : linear, rank: 4, alpha: 8, init: LoraInit.PiSSA);

        // Same function at the start, the update holds the rank-4 principal part, the base keeps the rest.
        var startError = MaxAbsDiff(layer.call(x), before);
        var (u, s, vh) = linalg.svd(original, fullMatrices: false);
        var principal = u[.., ..4].matmul(diag(s[..4])).matmul(vh[..4]);
        var updateError = MaxAbsDiff(layer.DeltaOutIn(ScalarType.Float32), principal);
        var residual = conv1D ? layer.Weight.t() : layer.Weight;
        var residualTop = linalg.svdvals(residual.detach())[0].item<float>();
        Console.WriteLine($"PiSSA (Conv1D={conv1D}): start error {startError:E2}, update vs principal part {updateError:E2}, residual's top singular value {residualTop:F5} vs sigma_5 {s[4].item<float>():F5}");
        Assert.IsTrue(startError < 1e-5);
        Assert.IsTrue(updateError < 1e-5);
        Assert.AreEqual(s[4].item<float>(), residualTop, 1e-4);
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void DoraMatchesItsFormulaAndMergesExactly(bool conv1D)
    {
        using var scope = NewDisposeScope();
        var linear = Linear(9);
        var w = linear.Weight.detach().clone();
        var b = linear.Bias!.detach().clone();
        var layer = new LoraLinear(conv1D ? AsConv1D(linear) : linear, rank: 4, alpha: 8, useDora: true, init: LoraInit.Random);
        layer.eval();
        var m0 = linalg.vector_norm(w + layer.DeltaOutIn(ScalarType.Float32), 2, dims: [1]);
        Assert.IsTrue(MaxAbsDiff(layer.MagnitudeVector!, m0) < 1e-6, "magnitude starts at the row norms of W + scaling B A");
        using (no_grad()) layer.MagnitudeVector!.mul_(rand(10) + 0.5);   // a trained magnitude

        // DoRA: m * (W + s B A) / ||W + s B A||_row, plus the bias.
        var x = Input(10, hidden: 12);
        var adapted = w + layer.DeltaOutIn(ScalarType.Float32);
        var direction = adapted / linalg.vector_norm(adapted, 2, dims: [1], keepdim: true);
        var expected = x.matmul((layer.MagnitudeVector!.unsqueeze(1) * direction).t()) + b;
        var output = layer.call(x).detach();
        var formulaError = MaxAbsDiff(output, expected);

        layer.Merge();
        var mergedError = MaxAbsDiff(layer.call(x), output);
        layer.Unmerge();
        var restoreError = MaxAbsDiff(conv1D ? layer.Weight.t() : layer.Weight, w);
        Console.WriteLine($"DoRA (Conv1D={conv1D}): vs formula {formulaError:E2}, merged vs unmerged {mergedError:E2}, weight after unmerge {restoreError:E2}");
        Assert.IsTrue(formulaError < 1e-5);
        Assert.IsTrue(mergedError < 1e-5);
        Assert.IsTrue(restoreError < 1e-6);
    }

    [TestMethod]
    public void DoraDropoutRecomputesTheBasePathOnTheDroppedInput()
    {
        using var scope = NewDisposeScope();
        var linear = Linear(11);
        var w = linear.Weight.detach().clone();
        var layer = new LoraLinear(linear, rank: 4, alpha: 8, dropout: 0.5, useDora: true, init: LoraInit.Random);
        layer.train();
        var x = Input(12, hidden: 12);
        manual_seed(13);
        var output = layer.call(x);
        manual_seed(13);
        var dropped = InvertedDropout.Apply(x, 0.5, training: true);   // the same mask (same generator state)
        var adapted = w + layer.DeltaOutIn(ScalarType.Float32);
        var scale = layer.MagnitudeVector! / linalg.vector_norm(adapted, 2, dims: [1]);
        var expected = nn.functional.linear(x, w, linear.Bias)
            + (scale - 1) * dropped.matmul(w.t()) + scale * dropped.matmul(layer.DeltaOutIn(ScalarType.Float32).t());
        var error = MaxAbsDiff(output, expected);
        Console.WriteLine($"DoRA with dropout (training) vs formula: {error:E2}");
        Assert.IsTrue(error < 1e-5);
    }

    [TestMethod]
    public void LoraDropoutActsOnTheAdapterInputInTrainingOnly()
    {
        using var scope = NewDisposeScope();
        var linear = Linear(14);
        var layer = new LoraLinear(linear, rank: 4, alpha: 8, dropout: 0.5, init: LoraInit.Random);
        var x = Input(15, hidden: 12);
        var baseOut = nn.functional.linear(x, linear.Weight, linear.Bias);
        layer.train();
        manual_seed(16);
        var trainOut = layer.call(x);
        manual_seed(16);
        var expected = baseOut + InvertedDropout.Apply(x, 0.5, training: true).matmul(layer.LoraA.t()).matmul(layer.LoraB.t()) * 2;
        Assert.IsTrue(MaxAbsDiff(trainOut, expected) < 1e-5);
        layer.eval();
        var evalExpected = baseOut + x.matmul(layer.LoraA.t()).matmul(layer.LoraB.t()) * 2;
        Assert.IsTrue(MaxAbsDiff(layer.call(x), evalExpected) < 1e-5);
    }

    [TestMethod]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    [DataRow(true, true)]
    public void LoraMergeAndUnmerge(bool rsLora, bool conv1D)
    {
        using var scope = NewDisposeScope();
        var linear = Linear(17);
        var original = linear.Weight.detach().clone();
        var layer = new LoraLinear(conv1D ? AsConv1D(linear) : linear, rank: 4, alpha: 16, useRsLora: rsLora, init: LoraInit.Random);
        layer.eval();
        var x = Input(18, hidden: 12);
        var unmerged = layer.call(x).detach();
        layer.Merge();
        Assert.IsTrue(layer.IsMerged);
        var mergedError = MaxAbsDiff(layer.call(x), unmerged);
        layer.Unmerge();
        var restoreError = MaxAbsDiff(conv1D ? layer.Weight.t() : layer.Weight, original);
        Console.WriteLine($"LoRA merge (rsLoRA={rsLora}, Conv1D={conv1D}): merged vs unmerged {mergedError:E2}, weight after unmerge {restoreError:E2}");
        Assert.IsTrue(mergedError < 1e-5);
        Assert.IsTrue(restoreError < 1e-6);
    }

    [TestMethod]
    [DataRow(false, false)]
    [DataRow(true, false)]
    [DataRow(false, true)]
    [DataRow(true, true)]
    public void IA3ScalesOutputsOrFeedforwardInputsAndMerges(bool feedforward, bool conv1D)
    {
        using var scope = NewDisposeScope();
        var linear = Linear(19);
        var w = linear.Weight.detach().clone();
        var b = linear.Bias!.detach().clone();
        var layer = new IA3Linear(conv1D ? AsConv1D(linear) : linear, feedforward);
        CollectionAssert.AreEqual(feedforward ? new long[] { 1, 12 } : new long[] { 10, 1 }, layer.Scale.shape);
        var x = Input(20, hidden: 12);
        Assert.IsTrue(MaxAbsDiff(layer.call(x), nn.functional.linear(x, w, b)) < 1e-6, "ones: the base function");

        using (no_grad()) layer.Scale.copy_(rand_like(layer.Scale) + 0.5);
        var l = layer.Scale.detach().flatten();
        var expected = feedforward ? nn.functional.linear(x * l, w, b) : nn.functional.linear(x, w, b) * l;
        var output = layer.call(x).detach();
        var error = MaxAbsDiff(output, expected);
        layer.Merge();
        var mergedError = MaxAbsDiff(layer.call(x), output);
        layer.Unmerge();
        var restoreError = MaxAbsDiff(conv1D ? layer.Weight.t() : layer.Weight, w);
        Console.WriteLine($"IA3 (feedforward={feedforward}, Conv1D={conv1D}): vs formula {error:E2}, merged {mergedError:E2}, unmerge {restoreError:E2}");
        Assert.IsTrue(error < 1e-6);
        Assert.IsTrue(mergedError < 1e-5);
        Assert.IsTrue(restoreError < 1e-6);
    }

    [TestMethod]
    public void BottleneckStartsAsIdentityAndFollowsItsFormula()
    {
        using var scope = NewDisposeScope();
        var linear = Linear(21, inFeatures: 12, outFeatures: 32);
        var layer = new BottleneckLinear(linear, reductionFactor: 8, nonLinearity: "relu");
        Assert.AreEqual(4, layer.BottleneckSize);
        var x = Input(22, hidden: 12);
        var h = nn.functional.linear(x, linear.Weight, linear.Bias);
        Assert.AreEqual(0.0, MaxAbsDiff(layer.call(x), h), "up-projection zero: identity");

        var p = layer.AdapterParameters().ToDictionary(a => a.Name, a => a.Parameter);
        CollectionAssert.AreEqual(new long[] { 4, 32 }, p["adapter_down.weight"].shape);
        CollectionAssert.AreEqual(new long[] { 32, 4 }, p["adapter_up.weight"].shape);
        using (no_grad()) { p["adapter_up.weight"].normal_(); p["adapter_up.bias"].normal_(); }
        var expected = h + nn.functional.linear(nn.functional.relu(nn.functional.linear(h, p["adapter_down.weight"], p["adapter_down.bias"])), p["adapter_up.weight"], p["adapter_up.bias"]);
        var error = MaxAbsDiff(layer.call(x), expected);
        Console.WriteLine($"bottleneck vs formula: {error:E2}");
        Assert.IsTrue(error < 1e-5);
        Assert.ThrowsExactly<NotSupportedException>(layer.Merge);
    }

    [TestMethod]
    public void FrozenBfloat16BaseWithFloat32AdapterComputesInTheInputDtype()
    {
        using var scope = NewDisposeScope();
        var linear = Linear(23, inFeatures: 64, outFeatures: 48);
        var w32 = linear.Weight.detach().clone();
        var b32 = linear.Bias!.detach().clone();
        var bf16Linear = nn.Linear(64, 48);
        bf16Linear.to(ScalarType.BFloat16);
        using (no_grad()) { bf16Linear.weight!.copy_(w32); bf16Linear.bias!.copy_(b32); }
        bf16Linear.weight!.requires_grad = false;
        bf16Linear.bias!.requires_grad = false;

        foreach (var useDora in new[] { false, true })
        {
            manual_seed(24);
            var layer = new LoraLinear(BaseLinear.TryCreate(bf16Linear)!, rank: 8, alpha: 16, useDora: useDora, init: LoraInit.Random, adapterDType: ScalarType.Float32);
            Assert.AreEqual(ScalarType.BFloat16, layer.Weight.dtype);
            Assert.AreEqual(ScalarType.Float32, layer.LoraA.dtype);
            var x = Input(25, hidden: 64);

            // Default: the input's dtype (bf16 activations -> bf16 matmuls, bf16 output).
            var y = layer.call(x.to_type(ScalarType.BFloat16));
            Assert.AreEqual(ScalarType.BFloat16, y.dtype);
            y.to_type(ScalarType.Float32).sum().backward();
            Assert.IsNotNull(layer.LoraA.grad);
            Assert.AreEqual(ScalarType.Float32, layer.LoraA.grad!.dtype);
            Assert.IsNull(layer.Weight.grad);

            // The same layer in float32 as the reference.
            var reference = new LoraLinear(BaseLinear.TryCreate(nn.Linear(new TorchSharp.Modules.Parameter(w32.clone()), new TorchSharp.Modules.Parameter(b32.clone())))!, rank: 8, alpha: 16, useDora: useDora, init: LoraInit.Random);
            using (no_grad())
                foreach (var ((_, mine), (_, theirs)) in layer.AdapterParameters().Zip(reference.AdapterParameters())) theirs.copy_(mine);
            var expected = reference.call(x);
            double relative = MaxAbsDiff(y, expected) / expected.abs().max().item<float>();

            // Explicit float32 compute over the bf16 base: float32 out.
            layer.ComputeDType = ScalarType.Float32;
            var y32 = layer.call(x);
            Assert.AreEqual(ScalarType.Float32, y32.dtype);
            double relative32 = MaxAbsDiff(y32, expected) / expected.abs().max().item<float>();
            Console.WriteLine($"bf16 base + fp32 adapter (DoRA={useDora}): bf16 compute relative error {relative:E2}, fp32 compute {relative32:E2} (base rounded to bf16)");
            Assert.IsTrue(relative < 3e-2);
            Assert.IsTrue(relative32 < 1e-2);
        }
    }
}
