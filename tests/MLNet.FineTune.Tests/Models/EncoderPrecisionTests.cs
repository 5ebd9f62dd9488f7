using System.Diagnostics;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// Reduced-precision forward passes on the CPU against float32. Stated tolerance: after loading the same checkpoint in
/// bfloat16 (8-bit mantissa, unit roundoff 2^-8 = 0.0039) or float16, every output agrees with float32 to
/// max |diff| &lt;= 0.05 * max(1, max |float32 output|) (two layers of roundoff on LayerNorm-scale values), and is finite.
/// </summary>
[TestClass]
public sealed class EncoderPrecisionTests
{
    [ClassInitialize] public static void LoadTorch(TestContext _) => MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();

    private const double RelativeTolerance = 0.05;

    [TestMethod]
    [DataRow("bert-tiny", ScalarType.BFloat16)]
    [DataRow("bert-tiny-cls", ScalarType.BFloat16)]
    [DataRow("bert-tiny-qa", ScalarType.BFloat16)]
    [DataRow("roberta-tiny", ScalarType.BFloat16)]
    [DataRow("distilbert-tiny", ScalarType.BFloat16)]
    [DataRow("bert-tiny", ScalarType.Float16)]
    [DataRow("roberta-tiny", ScalarType.Float16)]
    [DataRow("distilbert-tiny", ScalarType.Float16)]
    public void ReducedPrecisionAgreesWithFloat32(string folder, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load(folder);
        var full = Outputs(fixture, ScalarType.Float32);
        var reduced = Outputs(fixture, dtype);
        foreach (var (name, reference) in full)
        {
            Assert.AreEqual(dtype, reduced[name].dtype, $"{name} computed in {dtype}");
            var ours = reduced[name].to_type(ScalarType.Float32);
            Assert.IsTrue(ours.isfinite().all().item<bool>(), $"{folder} {name}: non-finite values in {dtype}");
            double error = Parity.MaxAbsError(ours, reference, name);
            double bound = RelativeTolerance * Math.Max(1.0, reference.abs().max().item<float>());
            Console.WriteLine($"{folder} {name}: {dtype} vs float32 max |diff| {error:E3} (bound {bound:E2}); float32 vs transformers {Parity.MaxAbsError(reference, fixture.Expected[name], name):E3}");
            Assert.IsTrue(error <= bound, $"{folder} {name}: {dtype} differs from float32 by {error:E3} > {bound:E2}");
        }
    }

    [TestMethod]
    public void MiniLmSizedModelAgreesInBFloat16AndPrintsTimings()
    {
        // all-MiniLM-L6-v2's shape with random transformers-style weights: 6 layers, H 384, 12 heads, FFN 1536; batch 4 x 128.
        using var scope = NewDisposeScope();
        manual_seed(11);
        var config = HfConfig.Parse("""
            {"model_type":"bert","vocab_size":30522,"hidden_size":384,"num_hidden_layers":6,"num_attention_heads":12,
             "intermediate_size":1536,"max_position_embeddings":512,"hidden_act":"gelu"}
            """);
        var model = ModelFactory.CreateBaseModel(config);
        model.eval();
        var ids = randint(1000, 30000, [4, 128], dtype: ScalarType.Int64);
        var mask = ones(4, 128, ScalarType.Int64);
        mask[.., 100..] = zeros(4, 28, ScalarType.Int64);                                   // right padding on every row
        var inputs = new EncoderInputs(ids, mask);

        using var _ = no_grad();
        var (full, fullMs) = Timed(() => model.forward(inputs).LastHiddenState);
        model.to(ScalarType.BFloat16);
        var (half, halfMs) = Timed(() => model.forward(inputs).LastHiddenState);

        var diff = (half.to_type(ScalarType.Float32) - full).abs();
        double maxDiff = diff.max().item<float>(), meanDiff = diff.mean().item<float>();
        double relative = ((half.to_type(ScalarType.Float32) - full).norm() / full.norm()).item<float>();
        Console.WriteLine($"MiniLM-shaped BERT, batch 4 x 128, 2 threads: float32 forward {fullMs:F0} ms, bfloat16 {halfMs:F0} ms (best of 2; timing only, not asserted)");
        Console.WriteLine($"bfloat16 vs float32 last_hidden_state: max |diff| {maxDiff:E3}, mean |diff| {meanDiff:E3}, relative L2 {relative:E3}");
        Assert.IsTrue(half.isfinite().all().item<bool>());
        Assert.IsTrue(relative <= 0.02, $"relative L2 difference {relative:E3} > 0.02");
        Assert.IsTrue(maxDiff <= RelativeTolerance * Math.Max(1.0, full.abs().max().item<float>()), $"max |diff| {maxDiff:E3}");
    }

    private static Dictionary<string, Tensor> Outputs(EncoderFixture fixture, ScalarType dtype)
    {
        var arch = fixture.Config.Architectures[0];
        var inputs = fixture.Inputs();
        if (arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal))
        {
            var (model, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, (int)fixture.Expected["logits"].shape[1], dtype);
            return new() { ["logits"] = model.forward(inputs) };
        }
        if (arch.EndsWith("ForQuestionAnswering", StringComparison.Ordinal))
        {
            var (model, _) = ModelFactory.FromPretrainedQuestionAnswering(fixture.Folder, dtype);
            var (start, end) = model.forward(inputs);
            return new() { ["start_logits"] = start, ["end_logits"] = end };
        }
        var (encoder, _) = ModelFactory.FromPretrainedBaseModel(fixture.Folder, dtype);
        var output = encoder.forward(inputs);
        var result = new Dictionary<string, Tensor> { ["last_hidden_state"] = output.LastHiddenState };
        if (fixture.Expected.ContainsKey("pooler_output")) result["pooler_output"] = output.PooledOutput!;
        return result;
    }

    private static (Tensor Result, double BestMs) Timed(Func<Tensor> run)
    {
        run();                                                                              // warm-up
        Tensor result = null!;
        double best = double.MaxValue;
        for (int i = 0; i < 2; i++)
        {
            var watch = Stopwatch.StartNew();
            result = run();
            best = Math.Min(best, watch.Elapsed.TotalMilliseconds);
        }
        return (result, best);
    }
}
