using MLNet.FineTune.Models;
using MLNet.FineTune.Tasks.CausalLM;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Tasks.CausalLM;

/// <summary>transformers' causal LM loss (shift, -100 ignored, mean over target tokens) and the metrics built on it.</summary>
[TestClass]
public sealed class CausalLMLossTests
{
    // Two rows, T = 3, V = 3. Row A: position 0 uniform (p = 1/3 each), position 1 logits (0, ln 2, 0) -> p = (1/4, 1/2, 1/4).
    // Row B: position 0 logits (0, ln 3, 0) -> p = (1/5, 3/5, 1/5). Position 2 never predicts anything.
    private static Tensor HandLogits() => tensor(new float[]
    {
        0, 0, 0,   0, MathF.Log(2), 0,   5, 5, 5,
        0, MathF.Log(3), 0,   0, 0, 0,   5, 5, 5,
    }, [2, 3, 3]);

    // Row A's targets: label[1] = 1 (p 1/3 -> ln 3), label[2] = 1 (p 1/2 -> ln 2). Row B: label[1] = 0 (p 1/5 -> ln 5),
    // label[2] = -100 (ignored). label[0] is never a target.
    private static Tensor HandLabels() => tensor(new long[] { 2, 1, 1, 2, 0, -100 }, [2, 3]);

    [TestMethod]
    public void MaskedLossIsTheMeanOverTargetTokensOnAHandWorkedCase()
    {
        using var scope = NewDisposeScope();
        var loss = CausalLMLoss.MeanOverTargets(HandLogits(), HandLabels()).item<float>();
        double expected = (Math.Log(3) + Math.Log(2) + Math.Log(5)) / 3;               // ln 30 / 3 over the 3 targets
        double meanOfRowMeans = ((Math.Log(3) + Math.Log(2)) / 2 + Math.Log(5)) / 2;   // what a per-row mean would give
        Console.WriteLine($"masked loss {loss:F6}; by hand ln(30)/3 = {expected:F6} (a mean of row means would be {meanOfRowMeans:F6})");
        Assert.AreEqual(expected, loss, 1e-6);

        // transformers' definition literally: cross_entropy(sum, ignore_index=-100) / num_items_in_batch.
        var (sum, count) = CausalLMLoss.SumOverTargets(HandLogits(), HandLabels());
        Assert.AreEqual(3, count);
        Assert.AreEqual(Math.Log(30), sum.item<float>(), 1e-5);

        // Micro-batches weighted by their targets (what CountLossItems feeds the loop) equal the one big batch.
        var rowA = CausalLMLoss.MeanOverTargets(HandLogits().narrow(0, 0, 1), HandLabels().narrow(0, 0, 1)).item<float>();
        var rowB = CausalLMLoss.MeanOverTargets(HandLogits().narrow(0, 1, 1), HandLabels().narrow(0, 1, 1)).item<float>();
        Assert.AreEqual(expected, (rowA * 2 + rowB * 1) / 3, 1e-6);
        Assert.AreEqual(3, CausalLMLoss.CountTargets([new CausalLMExample([2, 1, 1], [2, 1, 1]), new CausalLMExample([2, 0, 7], [2, 0, -100])]));

        var metrics = new CausalLMMetricsAccumulator();
        metrics.Add(HandLogits(), HandLabels());
        var result = metrics.Result();
        // Argmax: A pos 0 -> 0 (first of equal logits) vs 1 wrong; A pos 1 -> 1 right; B pos 0 -> 1 vs 0 wrong.
        Console.WriteLine($"metrics: {result}");
        Assert.AreEqual(3, result.TokenCount);
        Assert.AreEqual(expected, result.MeanTokenLoss, 1e-6);
        Assert.AreEqual(Math.Pow(30, 1.0 / 3), result.Perplexity, 1e-5);
        Assert.AreEqual(1.0 / 3, result.TokenAccuracy, 1e-12);
    }

    [TestMethod]
    public void PromptTokensGetNoGradientAndTheirLabelsDoNotMatter()
    {
        using var model = ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", "llama-tiny"));
        model.train();
        long[] ids = [5, 17, 99, 230, 41, 8, 77, 300, 12, 13];
        const int promptLength = 6;
        var masked = CausalLMFeaturizer.MaskPrompt(ids, promptLength);
        // Other "prompt labels" (what an unmasked row would ask the model to predict there), masked the same way.
        var otherPrompt = CausalLMFeaturizer.MaskPrompt([400, 401, 402, 403, 404, 405, 77, 300, 12, 13], promptLength);
        CollectionAssert.AreEqual(masked, otherPrompt);

        using var scope = NewDisposeScope();
        var input = tensor(ids, [1, ids.Length]);
        var logits = model.call(input).detach().requires_grad_(true);                       // (1, T, V) leaf
        var loss = CausalLMLoss.MeanOverTargets(logits, tensor(masked, [1, ids.Length]));
        loss.backward();
        var gradNorms = Enumerable.Range(0, ids.Length).Select(t => logits.grad!.select(1, t).abs().sum().item<float>()).ToArray();
        Console.WriteLine($"masked loss {loss.item<float>():F6}; |d loss / d logits| per position: {string.Join(", ", gradNorms.Select(g => g.ToString("E2")))}");
        // Position t predicts label t + 1: positions 0..promptLength-2 predict prompt tokens and get exactly zero gradient;
        // the last position predicts nothing.
        for (int t = 0; t < promptLength - 1; t++) Assert.AreEqual(0f, gradNorms[t], $"position {t} predicts a prompt token");
        for (int t = promptLength - 1; t < ids.Length - 1; t++) Assert.IsTrue(gradNorms[t] > 0, $"position {t} predicts a completion token");
        Assert.AreEqual(0f, gradNorms[^1]);

        // The loss is the completion tokens' alone: equal to cross-entropy over positions promptLength-1 .. T-2 by hand,
        // and different from the unmasked (text-mode) loss.
        using var noGrad = no_grad();
        var completionScores = logits.select(0, 0).narrow(0, promptLength - 1, ids.Length - promptLength);   // (C, V)
        var byHand = nn.functional.cross_entropy(completionScores, tensor(ids[promptLength..])).item<float>();
        var unmasked = CausalLMLoss.MeanOverTargets(logits, tensor(ids, [1, ids.Length])).item<float>();
        Console.WriteLine($"completion-only by hand {byHand:F6}; unmasked {unmasked:F6}");
        Assert.AreEqual(byHand, loss.item<float>(), 1e-6);
        Assert.AreNotEqual(unmasked, loss.item<float>());
    }

    [TestMethod]
    public void EvaluationOverBatchesEqualsOneBatchAndIgnoresPadding()
    {
        using var model = ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", "gpt2-tiny"));
        CausalLMExample[] examples =
        [
            new([5, 17, 99, 230, 41], [5, 17, 99, 230, 41]),
            new([12, 13, 14], CausalLMFeaturizer.MaskPrompt([12, 13, 14], 2)),
            new([400, 3, 77, 250, 9, 8, 1], [400, 3, 77, 250, 9, 8, 1]),
        ];
        var together = CausalLMEvaluation.Evaluate(model, examples, batchSize: 3, padTokenId: 0);
        var oneByOne = CausalLMEvaluation.Evaluate(model, examples, batchSize: 1, padTokenId: 0);
        var otherPad = CausalLMEvaluation.Evaluate(model, examples, batchSize: 3, padTokenId: 311);
        Console.WriteLine($"batched {together}\none by one {oneByOne}\npad 311 {otherPad}");
        Assert.AreEqual(4 + 1 + 6, together.TokenCount);
        Assert.AreEqual(oneByOne.MeanTokenLoss, together.MeanTokenLoss, 1e-5);
        Assert.AreEqual(oneByOne.TokenAccuracy, together.TokenAccuracy, 1e-12);
        Assert.AreEqual(together.MeanTokenLoss, otherPad.MeanTokenLoss, 1e-5);
        NamedErrors.Expect<InvalidOperationException>(() => new CausalLMMetricsAccumulator().Result(), "No target tokens");
    }
}
