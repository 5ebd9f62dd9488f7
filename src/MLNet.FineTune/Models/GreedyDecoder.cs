using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Greedy decoding (argmax at every step), as transformers' <c>generate(do_sample=False)</c>: prompts are left-padded
/// into one batch, positions come from the mask, and a <see cref="KvCache"/> makes each step feed one token.
/// A shorthand for <see cref="TextGenerator"/> with default <see cref="GenerationOptions"/> that returns prompt + continuation.
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
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        var options = new GenerationOptions { MaxNewTokens = maxNewTokens, BatchSize = Math.Max(1, prompts.Count) };
        var generated = TextGenerator.Generate(model, prompts, options, eosTokenIds, padTokenId, useCache: useCache);
        return prompts.Select((p, r) => p.Concat(generated[r].Tokens).ToArray()).ToArray();
    }
}
