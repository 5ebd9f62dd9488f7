using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Greedy decoding (argmax at every step), as transformers' <c>generate(do_sample=False)</c>: prompts are left-padded
/// into one batch, positions come from the mask, and a <see cref="KvCache"/> makes each step feed one token.
/// </summary>
internal static class GreedyDecoder
{
    /// <summary>Continues one prompt by up to <paramref name="maxNewTokens"/> tokens.</summary>
    /// <returns>The prompt followed by the generated tokens (ending with the end-of-sequence token if one was produced).</returns>
    public static long[] Generate(CausalLanguageModel model, IReadOnlyList<long> prompt, int maxNewTokens,
        IReadOnlyCollection<long>? eosTokenIds = null, bool useCache = true) =>
        Generate(model, [prompt], maxNewTokens, eosTokenIds, padTokenId: 0, useCache)[0];

    /// <summary>Continues a batch of prompts of any lengths (left-padded with <paramref name="padTokenId"/>).</summary>
    /// <param name="model">The model; put in evaluation mode for the call and restored afterwards.</param>
    /// <param name="prompts">Token ids, at least one per prompt.</param>
    /// <param name="maxNewTokens">Upper bound on generated tokens per prompt.</param>
    /// <param name="eosTokenIds">Tokens that end a row (it stops growing; the batch stops when every row has ended).</param>
    /// <param name="padTokenId">Id fed in padding positions; masked out, so any valid id works.</param>
    /// <param name="useCache">False recomputes the whole sequence at every step (slow; for checking the cache).</param>
    /// <returns>Per prompt: the prompt followed by its generated tokens.</returns>
    public static long[][] Generate(CausalLanguageModel model, IReadOnlyList<IReadOnlyList<long>> prompts, int maxNewTokens,
        IReadOnlyCollection<long>? eosTokenIds = null, long padTokenId = 0, bool useCache = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        if (prompts.Count == 0) throw new ArgumentException("No prompts to continue.", nameof(prompts));
        for (int r = 0; r < prompts.Count; r++)
            if (prompts[r].Count == 0) throw new ArgumentException($"Prompt {r} is empty: greedy decoding needs at least one token (e.g. BOS).", nameof(prompts));

        var device = model.parameters().First().device;
        var rows = prompts.Select(p => p.ToList()).ToArray();
        var finished = new bool[rows.Length];
        int promptWidth = rows.Max(r => r.Count);
        // Every row of the running batch has the same width: left padding, then prompt, then one token per step.
        var batchTokens = rows.Select(r => Enumerable.Repeat(padTokenId, promptWidth - r.Count).Concat(r).ToList()).ToArray();
        var batchMask = rows.Select(r => Enumerable.Repeat(0L, promptWidth - r.Count).Concat(Enumerable.Repeat(1L, r.Count)).ToList()).ToArray();
        var stop = eosTokenIds is null ? new HashSet<long>() : eosTokenIds.ToHashSet();

        bool wasTraining = model.training;
        model.eval();
        using var cache = useCache ? model.CreateCache() : null;
        try
        {
            using var noGrad = no_grad();
            for (int step = 0; step < maxNewTokens && !finished.All(f => f); step++)
            {
                using var scope = NewDisposeScope();
                int width = batchTokens[0].Count;
                int fed = cache is null || step == 0 ? width : 1;      // with a cache, only the newest token after step 0
                var ids = tensor(batchTokens.SelectMany(t => t.Skip(width - fed)).ToArray(), [rows.Length, fed], device: device);
                var mask = tensor(batchMask.SelectMany(m => m).ToArray(), [rows.Length, width], device: device);
                var logits = model.call(new CausalLMInputs(ids, mask, cache));                      // (B, fed, V)
                var next = logits.select(1, fed - 1).argmax(-1).to(CPU).data<long>().ToArray();     // (B)
                for (int r = 0; r < rows.Length; r++)
                {
                    long token = finished[r] ? padTokenId : next[r];
                    batchTokens[r].Add(token);
                    batchMask[r].Add(1);   // transformers keeps attending to tokens after a row's end; they never matter
                    if (finished[r]) continue;
                    rows[r].Add(token);
                    finished[r] = stop.Contains(token);
                }
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return rows.Select(r => r.ToArray()).ToArray();
    }
}
