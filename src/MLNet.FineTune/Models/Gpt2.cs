using System.Text.Json.Serialization;
using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>GPT-2's config.json (Radford et al. 2019), bound by key name with transformers' defaults for absent keys.</summary>
internal sealed record Gpt2Config
{
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 50257;
    /// <summary>n_positions (older configs: n_ctx).</summary>
    [JsonPropertyName("n_positions")] public int NPositions { get; init; } = 1024;
    [JsonPropertyName("n_embd")] public int NEmbd { get; init; } = 768;
    [JsonPropertyName("n_layer")] public int NLayer { get; init; } = 12;
    [JsonPropertyName("n_head")] public int NHead { get; init; } = 12;
    /// <summary>Feed-forward width; absent or null means 4 * n_embd.</summary>
    [JsonPropertyName("n_inner")] public int NInner { get; init; }
    [JsonPropertyName("activation_function")] public string ActivationFunction { get; init; } = "gelu_new";
    [JsonPropertyName("layer_norm_epsilon")] public double LayerNormEpsilon { get; init; } = 1e-5;
    [JsonPropertyName("resid_pdrop")] public double ResidPdrop { get; init; } = 0.1;
    [JsonPropertyName("embd_pdrop")] public double EmbdPdrop { get; init; } = 0.1;
    [JsonPropertyName("attn_pdrop")] public double AttnPdrop { get; init; } = 0.1;
    [JsonPropertyName("scale_attn_weights")] public bool ScaleAttnWeights { get; init; } = true;
    [JsonPropertyName("scale_attn_by_inverse_layer_idx")] public bool ScaleAttnByInverseLayerIdx { get; init; }
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; } = true;

    /// <summary>Reads a GPT-2 config. <c>reorder_and_upcast_attn</c> is not read: it only changes half-precision rounding.</summary>
    public static Gpt2Config FromHf(HfConfig c)
    {
        var read = c.Bind<Gpt2Config>();
        read = read with
        {
            NPositions = c.Has("n_positions") ? read.NPositions : c.GetInt("n_ctx", read.NPositions),
            NInner = c.Has("n_inner") ? read.NInner : 4 * read.NEmbd,
        };
        if (read.NEmbd % read.NHead != 0)
            throw new InvalidDataException($"{c.Path}: n_embd {read.NEmbd} is not divisible by n_head {read.NHead}.");
        return read;
    }
}

/// <summary>
/// GPT-2's linear layer ("Conv1D" in transformers): y = x W + b with W stored [in, out], the transpose of nn.Linear.
/// </summary>
/// <remarks>
/// Kept in Hugging Face's layout rather than transposed at load time, so that keys and shapes equal the checkpoint's
/// and an exported state dict is a valid GPT-2 checkpoint with no transform either way. Consequence for PEFT: this
/// layer is PEFT's <c>fan_in_fan_out = true</c> case: LoRA's delta (B A, shaped [out, in]) is transposed before it is
/// added to <see cref="weight"/>, and <see cref="InFeatures"/> is weight.shape[0].
/// </remarks>
internal sealed class Conv1D : nn.Module<Tensor, Tensor>
{
    /// <summary>[in, out].</summary>
    public Parameter weight;
    /// <summary>[out].</summary>
    public Parameter bias;

    /// <summary>Input width: weight.shape[0].</summary>
    public long InFeatures => weight.shape[0];
    /// <summary>Output width: weight.shape[1].</summary>
    public long OutFeatures => weight.shape[1];

    /// <summary>A layer initialised as transformers does (weights N(0, 0.02), bias 0).</summary>
    public Conv1D(long inFeatures, long outFeatures) : base(nameof(Conv1D))
    {
        weight = nn.Parameter(empty(inFeatures, outFeatures));
        bias = nn.Parameter(zeros(outFeatures));
        using (no_grad()) nn.init.normal_(weight, 0, 0.02);
        RegisterComponents();
    }

    /// <summary>(..., in) -> (..., out).</summary>
    public override Tensor forward(Tensor x)
    {
        long[] outShape = [.. x.shape[..^1], weight.shape[1]];
        return bias.addmm(x.reshape(-1, x.shape[^1]), weight).view(outShape);
    }
}

/// <summary>GPT-2 self-attention: fused q/k/v projection <c>c_attn</c>, output <c>c_proj</c>.</summary>
internal sealed class Gpt2Attention : nn.Module
{
    private nn.Module<Tensor, Tensor> c_attn;
    private nn.Module<Tensor, Tensor> c_proj;
    private readonly InvertedDropout resid_dropout;
    private readonly int _heads, _layerIndex;
    private readonly double _attentionDropout, _queryScale;

    internal Gpt2Attention(Gpt2Config config, int layerIndex) : base(nameof(Gpt2Attention))
    {
        c_attn = new Conv1D(config.NEmbd, 3 * config.NEmbd);
        c_proj = new Conv1D(config.NEmbd, config.NEmbd);
        resid_dropout = new InvertedDropout(config.ResidPdrop);
        (_heads, _layerIndex, _attentionDropout) = (config.NHead, layerIndex, config.AttnPdrop);
        // SDPA scales by 1/sqrt(D); other GPT-2 scalings are folded into the queries.
        double headDim = config.NEmbd / config.NHead, wanted = config.ScaleAttnWeights ? 1 / Math.Sqrt(headDim) : 1;
        if (config.ScaleAttnByInverseLayerIdx) wanted /= layerIndex + 1;
        _queryScale = wanted * Math.Sqrt(headDim);
        RegisterComponents();
    }

    internal Tensor Forward(Tensor x, AttentionMasking masking, KvCache? cache)   // x (B, T, C)
    {
        var (batch, length, width) = (x.shape[0], x.shape[1], x.shape[2]);
        var qkv = c_attn.call(x).split(width, dim: 2);                  // 3 x (B, T, C)
        Tensor Heads(Tensor t) => t.view(batch, length, _heads, width / _heads).transpose(1, 2);   // (B, H, T, D)
        var (q, k, v) = (Heads(qkv[0]), Heads(qkv[1]), Heads(qkv[2]));
        if (_queryScale != 1) q = q * _queryScale;
        if (cache is not null) (k, v) = cache.Append(_layerIndex, k, v);
        var y = CausalAttention.Attend(q, k, v, masking, training ? _attentionDropout : 0);   // (B, H, T, D)
        return resid_dropout.call(c_proj.call(y.transpose(1, 2).reshape(batch, length, width)));
    }
}

/// <summary>GPT-2 feed-forward: c_fc, activation, c_proj.</summary>
internal sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> c_fc;
    private nn.Module<Tensor, Tensor> c_proj;
    private readonly InvertedDropout dropout;
    private readonly Func<Tensor, Tensor> _activation;

    internal Gpt2Mlp(Gpt2Config config, string configPath) : base(nameof(Gpt2Mlp))
    {
        c_fc = new Conv1D(config.NEmbd, config.NInner);
        c_proj = new Conv1D(config.NInner, config.NEmbd);
        dropout = new InvertedDropout(config.ResidPdrop);
        _activation = Activations.Function(config.ActivationFunction, configPath, "activation_function");
        RegisterComponents();
    }

    /// <summary>(B, T, C) -> (B, T, C).</summary>
    public override Tensor forward(Tensor x) => dropout.call(c_proj.call(_activation(c_fc.call(x))));
}

/// <summary>A pre-norm GPT-2 block: x + attn(ln_1(x)), then + mlp(ln_2(x)).</summary>
internal sealed class Gpt2Block : nn.Module
{
    private readonly LayerNorm ln_1;
    private readonly Gpt2Attention attn;
    private readonly LayerNorm ln_2;
    private readonly Gpt2Mlp mlp;

    internal Gpt2Block(Gpt2Config config, int layerIndex, string configPath) : base(nameof(Gpt2Block))
    {
        ln_1 = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        attn = new Gpt2Attention(config, layerIndex);
        ln_2 = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        mlp = new Gpt2Mlp(config, configPath);
        RegisterComponents();
    }

    internal Tensor Forward(Tensor x, AttentionMasking masking, KvCache? cache)
    {
        x = x + attn.Forward(ln_1.call(x), masking, cache);
        return x + mlp.call(ln_2.call(x));
    }
}

/// <summary>The GPT-2 backbone (<c>transformer.*</c> in GPT2LMHeadModel): embeddings, blocks, final norm.</summary>
internal sealed class Gpt2Model : nn.Module
{
    private readonly Embedding wte;
    private readonly Embedding wpe;
    private readonly InvertedDropout drop;
    private readonly ModuleList<Gpt2Block> h;
    private readonly LayerNorm ln_f;
    private readonly int _maxPositions;

    internal Gpt2Model(Gpt2Config config, string configPath) : base(nameof(Gpt2Model))
    {
        wte = nn.Embedding(config.VocabSize, config.NEmbd);
        wpe = nn.Embedding(config.NPositions, config.NEmbd);
        using (no_grad()) { nn.init.normal_(wte.weight, 0, 0.02); nn.init.normal_(wpe.weight, 0, 0.02); }
        drop = new InvertedDropout(config.EmbdPdrop);
        h = nn.ModuleList(Enumerable.Range(0, config.NLayer).Select(i => new Gpt2Block(config, i, configPath)).ToArray());
        ln_f = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        _maxPositions = config.NPositions;
        RegisterComponents();
    }

    /// <summary>The token embedding (the tied output projection reads its weight).</summary>
    internal Embedding TokenEmbedding => wte;

    /// <summary>Hidden states (B, T, C) after ln_f.</summary>
    internal Tensor Forward(CausalLMInputs inputs)
    {
        var ids = inputs.InputIds;                                   // (B, T)
        var (batch, length) = (ids.shape[0], ids.shape[1]);
        long past = inputs.Cache?.Length ?? 0;
        if (past + length > _maxPositions)
            throw new ArgumentException($"GPT-2 has {_maxPositions} positions (n_positions); this call reaches {past + length}.", nameof(inputs));
        var positions = CausalAttention.PositionIds(inputs, past);   // (B, T)
        var x = drop.call(wte.call(ids) + wpe.call(positions));      // (B, T, C)
        var masking = CausalAttention.Build(inputs.AttentionMask, batch, length, past, null, ids.device);
        foreach (var block in h) x = block.Forward(x, masking, inputs.Cache);
        return ln_f.call(x);
    }
}

/// <summary>
/// GPT2LMHeadModel: the backbone under <c>transformer</c> and an output projection. With tied embeddings (GPT-2's
/// default) the projection is <c>transformer.wte.weight</c> and the state dict has no <c>lm_head.weight</c>, as the
/// checkpoint files have none.
/// </summary>
internal sealed class Gpt2LMHeadModel : CausalLanguageModel
{
    private readonly Gpt2Model transformer;
    private nn.Module<Tensor, Tensor>? lm_head;   // null when tied

    /// <summary>A randomly initialised model for a GPT-2 config.</summary>
    public Gpt2LMHeadModel(HfConfig config) : this(config, Gpt2Config.FromHf(config)) { }

    private Gpt2LMHeadModel(HfConfig config, Gpt2Config settings)
        : base(nameof(Gpt2LMHeadModel), config, "gpt2", settings.VocabSize, settings.NLayer)
    {
        Settings = settings;
        transformer = new Gpt2Model(settings, config.Path);
        lm_head = OutputProjection(settings.NEmbd, settings.VocabSize, settings.TieWordEmbeddings);
        RegisterComponents();
    }

    /// <summary>The typed config.</summary>
    public Gpt2Config Settings { get; }

    /// <inheritdoc/>
    public override bool TiedWordEmbeddings => lm_head is null;

    /// <summary>Logits (B, T, V).</summary>
    public override Tensor forward(CausalLMInputs inputs) => Logits(transformer.Forward(inputs), lm_head, transformer.TokenEmbedding);
}
