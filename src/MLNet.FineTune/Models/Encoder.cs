using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>What an encoder backbone computes for a batch.</summary>
/// <param name="LastHiddenState">(B, T, H) final hidden states, every position (padding positions included, as transformers returns them).</param>
/// <param name="PooledOutput">(B, H) tanh(dense(first token)) for families with a pooler (BERT, RoBERTa), else null.</param>
internal sealed record EncoderOutput(Tensor LastHiddenState, Tensor? PooledOutput);

/// <summary>An encoder backbone (BertModel, RobertaModel, DistilBertModel): Hugging Face state-dict keys, no head.</summary>
internal abstract class EncoderModel : nn.Module<EncoderInputs, EncoderOutput>, IPretrainedModel
{
    private readonly ModelFamily _family;

    /// <summary>Names the module and takes the family's model_type and base_model_prefix from <see cref="ModelRegistry"/>.</summary>
    protected EncoderModel(string name, HfConfig config, string modelType) : base(name) =>
        (Config, _family) = (config, ModelRegistry.Get(modelType));

    /// <inheritdoc/>
    public HfConfig Config { get; }
    /// <inheritdoc/>
    public string ModelType => _family.ModelType;
    /// <inheritdoc/>
    public string BaseModelPrefix => _family.BaseModelPrefix;
    /// <summary>A backbone has no task head.</summary>
    public IReadOnlyList<string> HeadModuleNames => [];
    /// <summary>Width of the hidden states (H).</summary>
    public abstract int HiddenSize { get; }
}

/// <summary>Attention pieces every encoder family shares: the padding mask and multi-head scaled dot-product attention.</summary>
internal static class EncoderAttention
{
    /// <summary>(B, T) mask, 1/true for real tokens (padding on either side) -> (B, 1, 1, T) additive mask in
    /// <paramref name="dtype"/>: 0 where a key may be attended, the dtype's minimum where it is padding (as transformers).</summary>
    public static Tensor PaddingMask(Tensor attentionMask, ScalarType dtype)
    {
        if (attentionMask.dim() != 2)
            throw new ArgumentException($"attention mask must be (batch, sequence), got [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        var padding = attentionMask.eq(0).unsqueeze(1).unsqueeze(1);                        // (B, 1, 1, T) bool
        return zeros(padding.shape, dtype, attentionMask.device).masked_fill(padding, finfo(dtype).min);
    }

    /// <summary>Multi-head attention over already projected q, k, v (each (B, T, H)), returning (B, T, H).</summary>
    /// <param name="q">(B, T, H) queries.</param>
    /// <param name="k">(B, T, H) keys.</param>
    /// <param name="v">(B, T, H) values.</param>
    /// <param name="heads">Number of heads nh; head size hs = H / nh.</param>
    /// <param name="additiveMask">(B, 1, 1, T) from <see cref="PaddingMask"/>, or null.</param>
    /// <param name="dropout">Attention-probability dropout (pass 0 in eval).</param>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, int heads, Tensor? additiveMask, double dropout)
    {
        long batch = q.shape[0], time = q.shape[1], hidden = q.shape[2];
        long headSize = hidden / heads;
        Tensor Split(Tensor x) => x.view(batch, -1, heads, headSize).transpose(1, 2);      // (B, nh, T, hs)
        // softmax(q k^T / sqrt(hs) + mask) v, in the activations' dtype as transformers' sdpa path does
        var context = ScaledDotProductAttention.Compute(Split(q), Split(k), Split(v), additiveMask, isCausal: false, dropout);
        return context.transpose(1, 2).reshape(batch, time, hidden);                       // (B, T, H)
    }

    /// <summary>Position ids 0..T-1 as (1, T) int64 on the device of <paramref name="inputIds"/>; errors if T exceeds the table.</summary>
    public static Tensor AbsolutePositions(Tensor inputIds, int maxPositions, HfConfig config)
    {
        long time = inputIds.shape[1];
        if (time > maxPositions)
            throw new ArgumentException($"Sequence length {time} exceeds max_position_embeddings = {maxPositions} of {config.Path}; truncate inputs to at most {maxPositions} tokens.");
        return arange(time, ScalarType.Int64, inputIds.device).unsqueeze(0);
    }
}

/// <summary>
/// The encoder families' layer stack: one <c>layer</c> list (BERT's and RoBERTa's <c>encoder.layer.N</c>, DistilBERT's
/// <c>transformer.layer.N</c>) applied in order, each layer mapping (hidden (B, T, H), additive mask (B, 1, 1, T)) to hidden.
/// </summary>
internal sealed class EncoderLayers<TLayer> : nn.Module<Tensor, Tensor, Tensor> where TLayer : nn.Module<Tensor, Tensor, Tensor>
{
    private ModuleList<TLayer> layer;

    /// <param name="name">Module name (transformers' class: "BertEncoder", "DistilBertTransformer").</param>
    /// <param name="count">Number of layers.</param>
    /// <param name="create">Builds layer i.</param>
    public EncoderLayers(string name, int count, Func<int, TLayer> create) : base(name)
    {
        layer = new ModuleList<TLayer>(Enumerable.Range(0, count).Select(create).ToArray());
        RegisterComponents();
    }

    /// <param name="hidden">(B, T, H).</param>
    /// <param name="mask">(B, 1, 1, T) additive padding mask.</param>
    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        foreach (var block in layer) hidden = block.forward(hidden, mask);
        return hidden;
    }
}

/// <summary>transformers' <c>_init_weights</c> for BERT-like encoders, applied at construction so that weights a
/// checkpoint does not hold (a new task head) start exactly as they would in transformers.</summary>
internal static class HfInit
{
    /// <summary>Linear: weight ~ normal(0, std), bias = 0; Embedding: normal(0, std); LayerNorm: weight 1, bias 0;
    /// <paramref name="root"/> itself included (TorchSharp's modules() lists descendants only).</summary>
    public static void Apply(nn.Module root, double std)
    {
        using var _ = no_grad();
        foreach (var module in root.modules().Prepend(root).Distinct())
        {
            switch (module)
            {
                case Linear linear:
                    linear.weight.normal_(0, std);
                    linear.bias?.zero_();
                    break;
                case Embedding embedding:
                    embedding.weight!.normal_(0, std);
                    break;
                case LayerNorm norm:
                    norm.weight?.fill_(1.0);
                    norm.bias?.zero_();
                    break;
            }
        }
    }

    /// <summary>transformers zeroes the padding row of an embedding with <c>padding_idx</c>.</summary>
    public static void ZeroRow(Embedding embedding, long row)
    {
        using var _ = no_grad();
        if (row >= 0 && row < embedding.weight!.shape[0]) embedding.weight[row].zero_();
    }
}
