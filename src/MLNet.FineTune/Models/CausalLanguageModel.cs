using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>One forward call of a causal language model.</summary>
/// <param name="InputIds">(B, T) int64: the new tokens (the whole sequence, or only the tokens after the cache).</param>
/// <param name="AttentionMask">
/// (B, past + T) int64 or bool, 1 for real tokens and 0 for padding, covering the cached tokens too (as in Hugging Face);
/// null when nothing is padded. Left padding is what batched generation uses.
/// </param>
/// <param name="Cache">Keys and values of earlier tokens; the call appends this call's. Null for a plain forward.</param>
/// <param name="PositionIds">
/// (B, T) int64 positions. When null they come from the mask as Hugging Face's <c>generate</c> computes them
/// (cumulative sum of the mask minus one, so a left-padded row starts at 0), or count from the cache length.
/// </param>
internal sealed record CausalLMInputs(Tensor InputIds, Tensor? AttentionMask = null, KvCache? Cache = null, Tensor? PositionIds = null);

/// <summary>
/// A decoder-only language model (GPT-2, Llama, Mistral, Qwen2) with Hugging Face's state-dict names:
/// <c>call(inputs)</c> returns next-token logits (B, T, V) in the model's dtype.
/// </summary>
internal abstract class CausalLanguageModel : nn.Module<CausalLMInputs, Tensor>, IPretrainedModel
{
    private readonly ModelFamily _family;   // no module fields here: subclasses' RegisterComponents would register them

    /// <summary>Names the module and takes the family's model_type and base_model_prefix from <see cref="ModelRegistry"/>.</summary>
    /// <param name="name">Module name (transformers' class name).</param>
    /// <param name="config">The config the model is built from.</param>
    /// <param name="modelType">The family's model_type.</param>
    /// <param name="vocabSize">V, the last dimension of the logits.</param>
    /// <param name="numLayers">Decoder layers (one cache entry each).</param>
    protected CausalLanguageModel(string name, HfConfig config, string modelType, int vocabSize, int numLayers) : base(name) =>
        (Config, _family, VocabSize, NumLayers) = (config, ModelRegistry.Get(modelType), vocabSize, numLayers);

    /// <summary>The output projection <c>lm_head</c> (C -> V, no bias), or null with tied embeddings (then the state
    /// dict has no <c>lm_head.weight</c>, as the checkpoint files have none).</summary>
    protected static nn.Module<Tensor, Tensor>? OutputProjection(long hiddenSize, long vocabSize, bool tieWordEmbeddings) =>
        tieWordEmbeddings ? null : nn.Linear(hiddenSize, vocabSize, hasBias: false);

    /// <summary>Logits (B, T, V) from hidden states (B, T, C): <paramref name="lmHead"/>, or the token embedding's
    /// weight when it is null (tied).</summary>
    protected static Tensor Logits(Tensor hidden, nn.Module<Tensor, Tensor>? lmHead, Embedding tokenEmbedding) =>
        lmHead is null ? nn.functional.linear(hidden, tokenEmbedding.weight!) : lmHead.call(hidden);

    /// <inheritdoc/>
    public HfConfig Config { get; }

    /// <inheritdoc/>
    public string ModelType => _family.ModelType;

    /// <inheritdoc/>
    public string BaseModelPrefix => _family.BaseModelPrefix;

    /// <summary>None: PEFT's CAUSAL_LM task saves no head (the LM head is the frozen or tied embedding).</summary>
    public IReadOnlyList<string> HeadModuleNames => [];

    /// <summary>Size of the vocabulary, the last dimension of the logits.</summary>
    public int VocabSize { get; }

    /// <summary>Number of decoder layers (one cache entry each).</summary>
    public int NumLayers { get; }

    /// <summary>True when the output projection reuses the input embedding (no <c>lm_head.weight</c> in the state dict).</summary>
    public abstract bool TiedWordEmbeddings { get; }

    /// <summary>Logits (B, T, V) for <paramref name="inputIds"/> (B, T); see <see cref="CausalLMInputs"/>.</summary>
    public Tensor call(Tensor inputIds, Tensor? attentionMask = null, KvCache? cache = null) =>
        call(new CausalLMInputs(inputIds, attentionMask, cache));

    /// <summary>An empty cache for incremental decoding with this model.</summary>
    public KvCache CreateCache() => new(NumLayers);
}

/// <summary>How one attention call masks: a boolean mask (true = may attend), or SDPA's own causal flag, or nothing.</summary>
internal readonly record struct AttentionMasking(Tensor? Mask, bool IsCausal);

/// <summary>Masks, positions and head repetition shared by the decoder families.</summary>
internal static class CausalAttention
{
    /// <summary>
    /// Positions (B, T) of the new tokens. From the mask: cumsum - 1, padding set to 1 (what Hugging Face's generate
    /// passes), so left padding does not shift the real tokens' positions. Without a mask: past .. past + T - 1.
    /// </summary>
    public static Tensor PositionIds(CausalLMInputs inputs, long past)
    {
        var (batch, length) = (inputs.InputIds.shape[0], inputs.InputIds.shape[1]);
        if (inputs.PositionIds is not null) return inputs.PositionIds;
        var device = inputs.InputIds.device;
        if (inputs.AttentionMask is null)
            return arange(past, past + length, ScalarType.Int64, device).unsqueeze(0).expand(batch, length);
        var mask = inputs.AttentionMask.to_type(ScalarType.Int64);
        var positions = mask.cumsum(-1) - 1;                          // (B, past + T)
        positions = positions.masked_fill(mask.eq(0), 1);
        return positions.narrow(1, positions.shape[1] - length, length);
    }

    /// <summary>
    /// The masking for queries at cache positions past .. past + T - 1 over keys 0 .. past + T - 1: causal, padding keys
    /// removed, and with <paramref name="slidingWindow"/> only the last W keys (q - k &lt; W, as transformers).
    /// Each query may always attend to itself, so no row is empty (a padding query's output is then finite but
    /// meaningless, as it is in transformers; losses ignore padding).
    /// </summary>
    public static AttentionMasking Build(Tensor? attentionMask, long batch, long length, long past, int? slidingWindow, Device device)
    {
        long total = past + length;
        if (attentionMask is not null && attentionMask.shape[1] != total)
            throw new ArgumentException(
                $"attention_mask has {attentionMask.shape[1]} columns but past ({past}) + new tokens ({length}) = {total}: " +
                "the mask must cover the cached tokens too.", nameof(attentionMask));
        bool padded = attentionMask is not null && !attentionMask.to_type(ScalarType.Bool).all().item<bool>();
        bool windowed = slidingWindow is int w && total > w;
        if (!padded && !windowed)
        {
            if (past == 0) return new(null, length > 1);   // SDPA's causal path (top-left aligned: T == S here)
            if (length == 1) return new(null, false);     // one new token sees the whole cache
        }
        var queryIndex = arange(past, total, ScalarType.Int64, device).unsqueeze(1);   // (T, 1)
        var keyIndex = arange(0, total, ScalarType.Int64, device).unsqueeze(0);        // (1, S)
        var allowed = keyIndex.le(queryIndex);                                          // (T, S)
        if (windowed) allowed = allowed.logical_and(keyIndex.gt(queryIndex - slidingWindow!.Value));
        var mask = allowed.unsqueeze(0).unsqueeze(0);                                   // (1, 1, T, S)
        if (padded)
        {
            var keyIsReal = attentionMask!.to_type(ScalarType.Bool).unsqueeze(1).unsqueeze(1);   // (B, 1, 1, S)
            mask = mask.logical_and(keyIsReal).logical_or(keyIndex.eq(queryIndex).unsqueeze(0).unsqueeze(0));
        }
        return new(mask.expand(batch, 1, length, total), false);
    }

    /// <summary>Scaled dot-product attention over (B, H, T, D) queries and (B, H, S, D) keys/values.</summary>
    public static Tensor Attend(Tensor query, Tensor key, Tensor value, AttentionMasking masking, double dropout) =>
        ScaledDotProductAttention.Compute(query, key, value, masking.Mask, masking.IsCausal, dropout);

    /// <summary>Grouped-query attention: each of the Hkv key/value heads serves <paramref name="groups"/> query heads.</summary>
    public static Tensor RepeatKeyValueHeads(Tensor x, int groups) =>   // (B, Hkv, S, D) -> (B, Hkv * groups, S, D)
        groups == 1 ? x : x.repeat_interleave(groups, dim: 1);
}
