using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// How a causal language model continues a prompt, with transformers' <c>generate</c> semantics: greedy (the default)
/// or sampling with temperature / top-k / top-p, a repetition penalty, and stopping at tokens or strings.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>Upper bound on generated tokens per prompt (transformers' max_new_tokens). Default 64.</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>Sample the next token from the (warped) distribution instead of taking the argmax (do_sample).
    /// Default false: greedy decoding.</summary>
    public bool DoSample { get; init; }

    /// <summary>Divides the logits before sampling; below 1 sharpens, above 1 flattens. 0 means greedy even when
    /// <see cref="DoSample"/> is set. Default 1.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Sample only among the K most likely tokens; 0 turns the filter off. Default 50 (transformers' default).</summary>
    public int TopK { get; init; } = 50;

    /// <summary>Sample only among the most likely tokens whose probabilities add up to P (nucleus sampling); 1 turns
    /// it off. Default 1.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>
    /// Penalty for tokens already in the row (prompt and generated so far), as transformers'
    /// RepetitionPenaltyLogitsProcessor (CTRL, Keskar et al. 2019): a positive logit is divided by it, a negative one
    /// multiplied. 1 is no penalty; padding is never penalized. Default 1.
    /// </summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Seed of the sampling generator: the same seed, prompts and batching give the same text. Null draws
    /// from torch's global generator.</summary>
    public int? Seed { get; init; }

    /// <summary>Token ids that end a row, besides the model's end-of-sequence ids (kept in the output, as transformers).</summary>
    public IReadOnlyList<long> StopTokenIds { get; init; } = [];

    /// <summary>Texts that end a row once the decoded continuation contains one (transformers' stop_strings); the
    /// continuation is cut right after the stop string.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Prompts decoded together, left-padded to one width. Default 8.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Checks every setting, naming the one out of range.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "MaxNewTokens must be 0 or more.");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "Temperature must be a finite number, 0 or more (0 = greedy).");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "TopK must be 0 (off) or more.");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "TopP must be in (0, 1].");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), RepetitionPenalty, "RepetitionPenalty must be a finite number above 0 (1 = none).");
        if (BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be 1 or more.");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new ArgumentOutOfRangeException(nameof(StopStrings), "StopStrings must not contain empty strings.");
    }

    /// <summary>Whether the next token is drawn at random (sampling with a temperature above 0).</summary>
    internal bool Samples => DoSample && Temperature > 0;

    /// <summary>Equal settings, stop lists compared element by element.</summary>
    public bool Equals(GenerationOptions? other) =>
        other is not null && MaxNewTokens == other.MaxNewTokens && DoSample == other.DoSample && Temperature.Equals(other.Temperature)
        && TopK == other.TopK && TopP.Equals(other.TopP) && RepetitionPenalty.Equals(other.RepetitionPenalty) && Seed == other.Seed
        && BatchSize == other.BatchSize && StopTokenIds.SequenceEqual(other.StopTokenIds) && StopStrings.SequenceEqual(other.StopStrings);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(MaxNewTokens, DoSample, Temperature, TopK, TopP, RepetitionPenalty, Seed, BatchSize);
}

/// <summary>Why a row stopped growing.</summary>
internal enum GenerationStopReason
{
    /// <summary>It reached <see cref="GenerationOptions.MaxNewTokens"/>.</summary>
    MaxNewTokens,
    /// <summary>It produced an end-of-sequence or stop token (the last token).</summary>
    StopToken,
    /// <summary>Its decoded continuation contains a stop string.</summary>
    StopString,
}

/// <summary>One prompt's continuation.</summary>
/// <param name="Tokens">The generated tokens only (a stop token included, as transformers returns it).</param>
/// <param name="StopReason">Why generation ended for this row.</param>
/// <param name="StopStringEnd">With <see cref="GenerationStopReason.StopString"/>: the length of the decoded
/// continuation up to and including the stop string (the text to keep); otherwise null.</param>
internal sealed record GeneratedSequence(long[] Tokens, GenerationStopReason StopReason, int? StopStringEnd = null);

/// <summary>
/// Generation for causal language models, as transformers' <c>generate</c>: prompts left-padded into batches
/// (positions from the mask, so padding changes nothing), a <see cref="KvCache"/> so each step feeds one token, the
/// logits processors (repetition penalty) then warpers (temperature, top-k, top-p) in transformers' order, and
/// greedy or seeded sampling.
/// </summary>
internal static class TextGenerator
{
    /// <summary>Continues each prompt.</summary>
    /// <param name="model">The model; put in evaluation mode for the call and restored afterwards.</param>
    /// <param name="prompts">Token ids, at least one per prompt (e.g. BOS).</param>
    /// <param name="options">Decoding settings.</param>
    /// <param name="eosTokenIds">The model's end-of-sequence ids (generation_config / tokenizer), joined with
    /// <see cref="GenerationOptions.StopTokenIds"/>.</param>
    /// <param name="padTokenId">Id fed in padding positions; masked out, so any valid id works.</param>
    /// <param name="decode">Turns generated ids into text; needed for <see cref="GenerationOptions.StopStrings"/>.</param>
    /// <param name="useCache">False recomputes the whole sequence at every step (slow; for checking the cache).</param>
    /// <returns>Per prompt, in order: its generated tokens and why it stopped.</returns>
    /// <exception cref="ArgumentException">A prompt is empty, or stop strings are given without a decoder.</exception>
    public static GeneratedSequence[] Generate(CausalLanguageModel model, IReadOnlyList<IReadOnlyList<long>> prompts, GenerationOptions options,
        IReadOnlyCollection<long>? eosTokenIds = null, long padTokenId = 0, Func<IReadOnlyList<long>, string>? decode = null, bool useCache = true)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (prompts.Count == 0) throw new ArgumentException("No prompts to continue.", nameof(prompts));
        for (int r = 0; r < prompts.Count; r++)
            if (prompts[r] is null || prompts[r].Count == 0)
                throw new ArgumentException($"Prompt {r} is empty: generation needs at least one token (e.g. BOS).", nameof(prompts));
        if (options.StopStrings.Count > 0 && decode is null)
            throw new ArgumentException("GenerationOptions.StopStrings needs a decoder (decode) to read the generated text.", nameof(decode));

        var stopTokens = new HashSet<long>(options.StopTokenIds);
        if (eosTokenIds is not null) stopTokens.UnionWith(eosTokenIds);
        using var generator = options.Samples && options.Seed is int seed ? new Generator((ulong)seed) : null;

        var results = new GeneratedSequence[prompts.Count];
        bool wasTraining = model.training;
        model.eval();
        try
        {
            for (int start = 0; start < prompts.Count; start += options.BatchSize)
            {
                int count = Math.Min(options.BatchSize, prompts.Count - start);
                var batch = GenerateBatch(model, prompts.Skip(start).Take(count).ToArray(), options, stopTokens, padTokenId, decode, useCache, generator);
                batch.CopyTo(results, start);
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return results;
    }

    private static GeneratedSequence[] GenerateBatch(CausalLanguageModel model, IReadOnlyList<long>[] prompts, GenerationOptions options,
        HashSet<long> stopTokens, long padTokenId, Func<IReadOnlyList<long>, string>? decode, bool useCache, Generator? generator)
    {
        var device = model.parameters().First().device;
        int rows = prompts.Length;
        var generated = Enumerable.Range(0, rows).Select(_ => new List<long>()).ToArray();
        var reasons = new GenerationStopReason?[rows];
        var stopStringEnds = new int?[rows];
        // Tokens each row has seen (prompt, then generated) for the repetition penalty; padding is not among them.
        var seen = prompts.Select(p => new HashSet<long>(p)).ToArray();
        int promptWidth = prompts.Max(p => p.Count);
        // Every row of the running batch has the same width: left padding, then prompt, then one token per step.
        var batchTokens = prompts.Select(p => Enumerable.Repeat(padTokenId, promptWidth - p.Count).Concat(p).ToList()).ToArray();
        var batchMask = prompts.Select(p => Enumerable.Repeat(0L, promptWidth - p.Count).Concat(Enumerable.Repeat(1L, p.Count)).ToList()).ToArray();

        using var cache = useCache ? model.CreateCache() : null;
        using var noGrad = no_grad();
        for (int step = 0; step < options.MaxNewTokens && reasons.Any(r => r is null); step++)
        {
            using var scope = NewDisposeScope();
            int width = batchTokens[0].Count;
            int fed = cache is null || step == 0 ? width : 1;      // with a cache, only the newest token after step 0
            var ids = tensor(batchTokens.SelectMany(t => t.Skip(width - fed)).ToArray(), [rows, fed], device: device);
            var mask = tensor(batchMask.SelectMany(m => m).ToArray(), [rows, width], device: device);
            var logits = model.call(new CausalLMInputs(ids, mask, cache));                        // (B, fed, V)
            var scores = logits.select(1, fed - 1).to(ScalarType.Float32).to(CPU);                 // (B, V)
            var next = NextTokens(scores, options, seen, generator);                               // (B)
            for (int r = 0; r < rows; r++)
            {
                bool finished = reasons[r] is not null;
                long token = finished ? padTokenId : next[r];
                batchTokens[r].Add(token);
                batchMask[r].Add(1);   // transformers keeps attending to tokens after a row's end; they never matter
                if (finished) continue;
                generated[r].Add(token);
                seen[r].Add(token);
                if (stopTokens.Contains(token)) reasons[r] = GenerationStopReason.StopToken;
                else if (options.StopStrings.Count > 0 && FindStopString(decode!(generated[r]), options.StopStrings) is int end)
                {
                    reasons[r] = GenerationStopReason.StopString;
                    stopStringEnds[r] = end;
                }
            }
        }
        return Enumerable.Range(0, rows)
            .Select(r => new GeneratedSequence(generated[r].ToArray(), reasons[r] ?? GenerationStopReason.MaxNewTokens, stopStringEnds[r]))
            .ToArray();
    }

    /// <summary>The end (exclusive) of the earliest stop string in <paramref name="text"/>, or null.</summary>
    private static int? FindStopString(string text, IReadOnlyList<string> stopStrings)
    {
        int? best = null;
        foreach (var stop in stopStrings)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best is null || at + stop.Length < best)) best = at + stop.Length;
        }
        return best;
    }

    /// <summary>Next token per row from last-position scores (B, V) float32: processors, warpers, then argmax or a draw.</summary>
    internal static long[] NextTokens(Tensor scores, GenerationOptions options, IReadOnlyList<HashSet<long>>? seen, Generator? generator)
    {
        if (options.RepetitionPenalty != 1.0 && seen is not null) scores = PenalizeRepetition(scores, seen, options.RepetitionPenalty);
        if (!options.Samples) return scores.argmax(-1).data<long>().ToArray();
        scores = WarpForSampling(scores, options);
        var probabilities = scores.softmax(-1);                                                  // (B, V)
        return probabilities.multinomial(1, generator: generator).squeeze(1).data<long>().ToArray();
    }

    /// <summary>transformers' RepetitionPenaltyLogitsProcessor on each row's seen tokens: s &lt; 0 ? s * p : s / p.</summary>
    internal static Tensor PenalizeRepetition(Tensor scores, IReadOnlyList<HashSet<long>> seen, double penalty)
    {
        scores = scores.clone();
        for (int r = 0; r < seen.Count; r++)
        {
            if (seen[r].Count == 0) continue;
            var index = tensor(seen[r].ToArray());                                                // (S)
            var row = scores[r];                                                                  // (V) view
            var picked = row.gather(0, index);
            row.scatter_(0, index, where(picked.lt(0), picked * penalty, picked / penalty));
        }
        return scores;
    }

    /// <summary>Temperature, then top-k, then top-p (transformers' warper order); removed tokens get -inf.</summary>
    internal static Tensor WarpForSampling(Tensor scores, GenerationOptions options)
    {
        if (options.Temperature != 1.0) scores = scores / options.Temperature;
        long vocab = scores.shape[^1];
        if (options.TopK > 0 && options.TopK < vocab)
        {
            var kth = scores.topk(options.TopK, dim: -1).values.narrow(-1, options.TopK - 1, 1);   // (B, 1)
            scores = scores.masked_fill(scores.lt(kth), float.NegativeInfinity);
        }
        if (options.TopP < 1.0)
        {
            var (sorted, order) = scores.sort(-1, descending: false);                              // ascending, as transformers
            var cumulative = sorted.softmax(-1).cumsum(-1);
            var removeSorted = cumulative.le(1 - options.TopP);
            removeSorted.index_fill_(-1, tensor(new long[] { vocab - 1 }), false);                  // always keep the most likely
            var remove = removeSorted.scatter(-1, order, removeSorted);
            scores = scores.masked_fill(remove, float.NegativeInfinity);
        }
        return scores;
    }
}
