using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// softmax(q k^T / sqrt(D) + mask) v with dropout on the probabilities, for every model family. In eval, in float32
/// without dropout and on accelerators it is libtorch's <c>scaled_dot_product_attention</c>, unchanged. On the CPU with
/// dropout, libtorch leaves its fused kernel for its math path with a <c>bernoulli_</c> mask (5-7x the forward time of
/// p = 0 on the development machine, docs/performance.md), and its bf16 backward is slow even without dropout; there
/// this computes the same math in the activations' dtype, as transformers' eager attention does, with
/// <see cref="InvertedDropout"/> on the probabilities (see <see cref="UseExplicitMath"/>).
/// </summary>
internal static class ScaledDotProductAttention
{
    /// <param name="query">(B, H, T, D).</param>
    /// <param name="key">(B, H, S, D).</param>
    /// <param name="value">(B, H, S, D).</param>
    /// <param name="mask">Broadcastable to (B, H, T, S): boolean (true = may attend) or additive; or null. Every query
    /// must be allowed at least one key (the families' masks are): the two paths differ on rows with none.</param>
    /// <param name="isCausal">Query t attends to keys 0..t (T == S); <paramref name="mask"/> must then be null.</param>
    /// <param name="dropout">Probability of dropping an attention probability: nonzero only in training.</param>
    /// <returns>(B, H, T, D).</returns>
    public static Tensor Compute(Tensor query, Tensor key, Tensor value, Tensor? mask, bool isCausal, double dropout)
    {
        if (!UseExplicitMath(query, key, value, dropout))
            return nn.functional.scaled_dot_product_attention(query, key, value, mask, dropout, is_casual: isCausal);

        long length = query.shape[^2], total = key.shape[^2];
        var scores = query.matmul(key.transpose(-2, -1)) * (1.0 / Math.Sqrt(query.shape[^1]));   // (B, H, T, S)
        if (isCausal)
            mask = mask is null ? ones(length, total, ScalarType.Bool, query.device).tril()     // (T, S)
                : throw new ArgumentException("A causal attention takes no explicit mask.", nameof(mask));
        if (mask is not null)
            scores = mask.dtype == ScalarType.Bool ? scores.masked_fill(mask.logical_not(), finfo(scores.dtype).min) : scores + mask;
        var probabilities = InvertedDropout.Apply(scores.softmax(-1), dropout, training: true);  // (B, H, T, S)
        return probabilities.matmul(value);                                                       // (B, H, T, D)
    }

    /// <summary>Most bytes of (B, H, T, S) probabilities one layer may keep for backward on the explicit path; longer
    /// inputs use libtorch's kernel, which keeps O(T).</summary>
    internal const long ExplicitPathMaxProbabilityBytes = 256L << 20;

    /// <summary>The explicit math on the CPU when dropout applies (libtorch's dropout path is slow there), and when a
    /// bf16 or fp16 attention will be backpropagated: libtorch's fused CPU kernel is fast forward but its half-precision
    /// backward took 4x the explicit math's (121 against 28 ms, docs/performance.md). Eval, float32 and accelerators keep
    /// libtorch's kernel.</summary>
    internal static bool UseExplicitMath(Tensor query, Tensor key, Tensor value, double dropout)
    {
        if (query.device_type != DeviceType.CPU) return false;
        if (dropout > 0) return true;
        bool halfPrecision = query.dtype is ScalarType.BFloat16 or ScalarType.Float16;
        bool backpropagated = is_grad_enabled() && (query.requires_grad || key.requires_grad || value.requires_grad);
        long probabilityBytes = query.shape[0] * query.shape[1] * query.shape[^2] * key.shape[^2] * query.element_size();
        return halfPrecision && backpropagated && probabilityBytes <= ExplicitPathMaxProbabilityBytes;
    }
}
