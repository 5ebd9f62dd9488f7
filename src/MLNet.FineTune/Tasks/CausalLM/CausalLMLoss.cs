using MLNet.FineTune.Models;
using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>
/// transformers' ForCausalLMLoss: logits at position t are scored against label t + 1 (labels shifted left, the last
/// position has no target), cross-entropy in float32, labels of -100 ignored, averaged over the target tokens.
/// </summary>
/// <remarks>
/// With gradient accumulation the mean must be over all target tokens of the step, not a mean of micro-batch means:
/// report <see cref="CountTargets"/> through <c>TrainingSetup.CountLossItems</c> so the loop weights each micro-batch
/// by its targets (transformers' <c>num_items_in_batch</c>).
/// </remarks>
internal static class CausalLMLoss
{
    /// <summary>The label that takes no loss (PyTorch's cross_entropy ignore_index default).</summary>
    public const long IgnoreIndex = -100;

    /// <summary>Sum of the target tokens' losses and their number: logits (B, T, V), labels (B, T).</summary>
    public static (Tensor Sum, long Count) SumOverTargets(Tensor logits, Tensor labels)
    {
        CheckShapes(logits, labels);
        var (scores, targets) = Shift(logits, labels);                                       // (N, V), (N)
        var sum = nn.functional.cross_entropy(scores, targets, ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum);
        long count = targets.ne(IgnoreIndex).sum().item<long>();
        return (sum, count);
    }

    /// <summary>Mean loss over the target tokens (0 when there are none, so an all-masked batch adds nothing).</summary>
    public static Tensor MeanOverTargets(Tensor logits, Tensor labels)
    {
        var (sum, count) = SumOverTargets(logits, labels);
        return count == 0 ? sum * 0 : sum / count;
    }

    /// <summary>Target tokens of the given examples (what <c>TrainingSetup.CountLossItems</c> reports).</summary>
    public static long CountTargets(IEnumerable<CausalLMExample> examples) => examples.Sum(e => (long)e.TargetCount);

    /// <summary>(B·(T−1), V) float32 scores and (B·(T−1)) targets: position t against label t + 1.</summary>
    internal static (Tensor Scores, Tensor Targets) Shift(Tensor logits, Tensor labels)
    {
        long t = logits.shape[1];
        var scores = logits.narrow(1, 0, t - 1).to_type(ScalarType.Float32).reshape(-1, logits.shape[2]);   // (B(T-1), V)
        var targets = labels.narrow(1, 1, t - 1).reshape(-1);                                                // (B(T-1))
        return (scores, targets);
    }

    private static void CheckShapes(Tensor logits, Tensor labels)
    {
        if (logits.dim() != 3 || labels.dim() != 2 || logits.shape[0] != labels.shape[0] || logits.shape[1] != labels.shape[1])
            throw new ArgumentException($"Expected logits (B, T, V) and labels (B, T); got [{string.Join(", ", logits.shape)}] and [{string.Join(", ", labels.shape)}].");
        if (logits.shape[1] < 2)
            throw new ArgumentException("A causal LM loss needs at least 2 positions (one to read, one to predict).");
    }
}

/// <summary>A right-padded batch of <see cref="CausalLMExample"/>s: model inputs and labels (padding labelled -100).</summary>
/// <param name="Inputs">Token ids (B, T) padded with the pad id, and the attention mask.</param>
/// <param name="Labels">(B, T) int64, -100 on padding.</param>
internal sealed record CausalLMBatch(CausalLMInputs Inputs, Tensor Labels)
{
    /// <summary>Collates examples with dynamic padding to the longest row.</summary>
    /// <param name="examples">The rows.</param>
    /// <param name="padTokenId">Id fed in padding positions (masked; any valid id).</param>
    /// <param name="device">Where the tensors are created (CPU when null).</param>
    public static CausalLMBatch Collate(IReadOnlyList<CausalLMExample> examples, long padTokenId, Device? device = null)
    {
        var ids = Training.Collate.PadRows(examples.Select(e => (IReadOnlyList<long>)e.InputIds).ToList(), padTokenId, PaddingSide.Right, device: device);   // (B, T)
        var mask = Training.Collate.AttentionMask(examples.Select(e => e.InputIds.Length).ToList(), (int)ids.shape[1], PaddingSide.Right, device);          // (B, T)
        var labels = Training.Collate.PadRows(examples.Select(e => (IReadOnlyList<long>)e.Labels).ToList(), CausalLMLoss.IgnoreIndex, PaddingSide.Right, device: device);
        return new CausalLMBatch(new CausalLMInputs(ids, mask), labels);
    }
}
