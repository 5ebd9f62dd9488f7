using System.Text.Json.Serialization;
using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// The config of the Llama layout (Touvron et al. 2023) and its variants that share it: Mistral (sliding-window
/// attention) and Qwen2 (biases on q/k/v, sliding window on upper layers when enabled), bound by config.json's key
/// names. <see cref="SlidingWindows"/> holds, per layer, the attention window W (keys with q - k &lt; W) or null for
/// full attention; <see cref="Rope"/> reads either spelling (transformers 4 rope_theta/rope_scaling, 5 rope_parameters).
/// </summary>
internal sealed record LlamaConfig
{
    /// <summary>model_type values this layout covers.</summary>
    public static IReadOnlyList<string> ModelTypes { get; } = ["llama", "mistral", "qwen2"];

    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "";
    [JsonPropertyName("vocab_size")] public required int VocabSize { get; init; }
    [JsonPropertyName("hidden_size")] public required int HiddenSize { get; init; }
    [JsonPropertyName("intermediate_size")] public required int IntermediateSize { get; init; }
    [JsonPropertyName("num_hidden_layers")] public required int NumHiddenLayers { get; init; }
    [JsonPropertyName("num_attention_heads")] public required int NumAttentionHeads { get; init; }
    /// <summary>Key/value heads (grouped-query attention); absent means num_attention_heads.</summary>
    [JsonPropertyName("num_key_value_heads")] public int NumKeyValueHeads { get; init; }
    /// <summary>Head size D; absent means hidden_size / num_attention_heads.</summary>
    [JsonPropertyName("head_dim")] public int HeadDim { get; init; }
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; init; } = 1e-6;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "silu";
    /// <summary>Llama's switch for biases on q, k, v and o (Qwen2 ignores it: see <see cref="QkvBias"/>).</summary>
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; init; }
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; init; }
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }
    [JsonPropertyName("attention_dropout")] public double AttentionDropout { get; init; }
    [JsonPropertyName("sliding_window")] public int? SlidingWindow { get; init; }
    /// <summary>Qwen2 only: sliding_window applies only when this is true.</summary>
    [JsonPropertyName("use_sliding_window")] public bool UseSlidingWindow { get; init; }
    /// <summary>Qwen2 without layer_types: layers from this index up slide.</summary>
    [JsonPropertyName("max_window_layers")] public int MaxWindowLayers { get; init; } = 28;
    /// <summary>Per layer "full_attention" or "sliding_attention" (newer configs), or null.</summary>
    [JsonPropertyName("layer_types")] public IReadOnlyList<string?>? LayerTypes { get; init; }

    /// <summary>Qwen2 always has q/k/v biases; Llama's attention_bias covers all four; Mistral has none.</summary>
    public bool QkvBias => ModelType == "qwen2" || AttentionBias;
    /// <summary>Bias on o_proj: Llama's attention_bias (Qwen2 has none).</summary>
    public bool OutputBias => ModelType != "qwen2" && AttentionBias;

    /// <summary>Rotary settings from either spelling.</summary>
    [JsonIgnore] public RopeParameters Rope { get; init; } = null!;
    /// <summary>Per layer: the sliding window W or null for full attention.</summary>
    [JsonIgnore] public IReadOnlyList<int?> SlidingWindows { get; init; } = [];

    /// <summary>Reads a llama, mistral or qwen2 config (transformers 4 and 5 spellings).</summary>
    public static LlamaConfig FromHf(HfConfig c)
    {
        string type = ModelRegistry.ResolveModelType(c);   // configs without model_type name it in architectures
        if (!ModelTypes.Contains(type))
            throw new NotSupportedException($"{c.Path}: model_type '{type}' is not a Llama-layout model ({string.Join(", ", ModelTypes)}).");
        var read = c.Bind<LlamaConfig>();
        int kvHeads = c.Has("num_key_value_heads") ? read.NumKeyValueHeads : read.NumAttentionHeads;
        if (read.NumAttentionHeads % kvHeads != 0)
            throw new InvalidDataException($"{c.Path}: num_attention_heads {read.NumAttentionHeads} is not a multiple of num_key_value_heads {kvHeads}.");
        return read with
        {
            ModelType = type,
            NumKeyValueHeads = kvHeads,
            HeadDim = c.Has("head_dim") ? read.HeadDim : read.HiddenSize / read.NumAttentionHeads,
            Rope = RopeParameters.FromConfig(c),
            SlidingWindows = read.ReadSlidingWindows(c, type),
        };
    }

    private int?[] ReadSlidingWindows(HfConfig c, string type)
    {
        int? window = type == "qwen2" && !UseSlidingWindow ? null : SlidingWindow;
        if (LayerTypes is { } layerTypes)
        {
            if (layerTypes.Count != NumHiddenLayers)
                throw new InvalidDataException($"{c.Path}: layer_types has {layerTypes.Count} entries for {NumHiddenLayers} layers.");
            return layerTypes.Select(t => t == "sliding_attention" ? window : null).ToArray();
        }
        // Without layer_types: Mistral slides everywhere; Qwen2 from layer max_window_layers up (transformers' defaults).
        int firstSliding = type == "qwen2" ? MaxWindowLayers : 0;
        return Enumerable.Range(0, NumHiddenLayers).Select(i => i >= firstSliding ? window : null).ToArray();
    }
}

/// <summary>Root-mean-square layer norm (Zhang &amp; Sennrich 2019), computed in float32 and cast back, as transformers.</summary>
internal sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    /// <summary>[hidden].</summary>
    public Parameter weight;
    private readonly double _eps;

    /// <summary>A norm with unit weight.</summary>
    public RmsNorm(long hidden, double eps) : base(nameof(RmsNorm))
    {
        weight = nn.Parameter(ones(hidden));
        _eps = eps;
        RegisterComponents();
    }

    /// <summary>(..., hidden) -> same shape and dtype.</summary>
    public override Tensor forward(Tensor x)
    {
        var x32 = x.to_type(ScalarType.Float32);
        var normalized = x32 * rsqrt(x32.pow(2).mean([-1L], keepdim: true) + _eps);
        return weight * normalized.to_type(x.dtype);
    }
}

/// <summary>Grouped-query self-attention with rotary positions (q_proj, k_proj, v_proj, o_proj).</summary>
internal sealed class LlamaAttention : nn.Module
{
    private nn.Module<Tensor, Tensor> q_proj;
    private nn.Module<Tensor, Tensor> k_proj;
    private nn.Module<Tensor, Tensor> v_proj;
    private nn.Module<Tensor, Tensor> o_proj;
    private readonly int _heads, _kvHeads, _headDim, _layerIndex;
    private readonly double _dropout;

    internal LlamaAttention(LlamaConfig config, int layerIndex) : base(nameof(LlamaAttention))
    {
        (_heads, _kvHeads, _headDim, _layerIndex, _dropout) =
            (config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim, layerIndex, config.AttentionDropout);
        q_proj = nn.Linear(config.HiddenSize, _heads * _headDim, config.QkvBias);
        k_proj = nn.Linear(config.HiddenSize, _kvHeads * _headDim, config.QkvBias);
        v_proj = nn.Linear(config.HiddenSize, _kvHeads * _headDim, config.QkvBias);
        o_proj = nn.Linear(_heads * _headDim, config.HiddenSize, config.OutputBias);
        RegisterComponents();
    }

    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionMasking masking, KvCache? cache)   // x (B, T, C)
    {
        var (batch, length) = (x.shape[0], x.shape[1]);
        Tensor Heads(Tensor t, int heads) => t.view(batch, length, heads, _headDim).transpose(1, 2);   // (B, H, T, D)
        var q = RotaryEmbedding.Apply(Heads(q_proj.call(x), _heads), cos, sin);
        var k = RotaryEmbedding.Apply(Heads(k_proj.call(x), _kvHeads), cos, sin);   // (B, Hkv, T, D)
        var v = Heads(v_proj.call(x), _kvHeads);
        if (cache is not null) (k, v) = cache.Append(_layerIndex, k, v);          // (B, Hkv, S, D)
        int groups = _heads / _kvHeads;
        var y = CausalAttention.Attend(q, CausalAttention.RepeatKeyValueHeads(k, groups), CausalAttention.RepeatKeyValueHeads(v, groups),
            masking, training ? _dropout : 0);                                      // (B, H, T, D)
        return o_proj.call(y.transpose(1, 2).reshape(batch, length, _heads * _headDim));
    }
}

/// <summary>The gated feed-forward (SwiGLU, Shazeer 2020): down_proj(act(gate_proj(x)) * up_proj(x)).</summary>
internal sealed class LlamaMlp : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> gate_proj;
    private nn.Module<Tensor, Tensor> up_proj;
    private nn.Module<Tensor, Tensor> down_proj;
    private readonly Func<Tensor, Tensor> _activation;

    internal LlamaMlp(LlamaConfig config, string configPath) : base(nameof(LlamaMlp))
    {
        gate_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias);
        up_proj = nn.Linear(config.HiddenSize, config.IntermediateSize, config.MlpBias);
        down_proj = nn.Linear(config.IntermediateSize, config.HiddenSize, config.MlpBias);
        _activation = Activations.Function(config.HiddenAct, configPath, "hidden_act");
        RegisterComponents();
    }

    /// <summary>(B, T, C) -> (B, T, C).</summary>
    public override Tensor forward(Tensor x) => down_proj.call(_activation(gate_proj.call(x)) * up_proj.call(x));
}

/// <summary>A pre-norm decoder layer: x + self_attn(input_layernorm(x)), then + mlp(post_attention_layernorm(x)).</summary>
internal sealed class LlamaDecoderLayer : nn.Module
{
    private readonly LlamaAttention self_attn;
    private readonly LlamaMlp mlp;
    private readonly RmsNorm input_layernorm;
    private readonly RmsNorm post_attention_layernorm;

    internal LlamaDecoderLayer(LlamaConfig config, int layerIndex, string configPath) : base(nameof(LlamaDecoderLayer))
    {
        self_attn = new LlamaAttention(config, layerIndex);
        mlp = new LlamaMlp(config, configPath);
        input_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        post_attention_layernorm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        RegisterComponents();
    }

    internal Tensor Forward(Tensor x, Tensor cos, Tensor sin, AttentionMasking masking, KvCache? cache)
    {
        x = x + self_attn.Forward(input_layernorm.call(x), cos, sin, masking, cache);
        return x + mlp.call(post_attention_layernorm.call(x));
    }
}

/// <summary>The Llama backbone (<c>model.*</c>): embed_tokens, layers, norm.</summary>
internal sealed class LlamaModel : nn.Module
{
    private readonly Embedding embed_tokens;
    private readonly ModuleList<LlamaDecoderLayer> layers;
    private readonly RmsNorm norm;
    private readonly LlamaConfig _config;

    internal LlamaModel(LlamaConfig config, string configPath) : base(nameof(LlamaModel))
    {
        _config = config;
        embed_tokens = nn.Embedding(config.VocabSize, config.HiddenSize);
        using (no_grad()) nn.init.normal_(embed_tokens.weight, 0, 0.02);
        layers = nn.ModuleList(Enumerable.Range(0, config.NumHiddenLayers).Select(i => new LlamaDecoderLayer(config, i, configPath)).ToArray());
        norm = new RmsNorm(config.HiddenSize, config.RmsNormEps);
        Rotary = new RotaryEmbedding(config.Rope.InverseFrequencies(config.HeadDim));
        RegisterComponents();
    }

    /// <summary>The token embedding (the tied output projection reads its weight).</summary>
    internal Embedding TokenEmbedding => embed_tokens;

    internal RotaryEmbedding Rotary { get; }

    /// <summary>Hidden states (B, T, C) after the final norm.</summary>
    internal Tensor Forward(CausalLMInputs inputs)
    {
        var ids = inputs.InputIds;                                       // (B, T)
        var (batch, length) = (ids.shape[0], ids.shape[1]);
        long past = inputs.Cache?.Length ?? 0;
        var x = embed_tokens.call(ids);                                  // (B, T, C)
        var (cos, sin) = Rotary.CosSin(CausalAttention.PositionIds(inputs, past), x.dtype);   // (B, T, D)
        // One mask per distinct window (full attention, and the sliding window if some layers use it).
        var maskings = new Dictionary<int, AttentionMasking>();
        AttentionMasking MaskingFor(int? window) =>
            maskings.TryGetValue(window ?? 0, out var m) ? m
                : maskings[window ?? 0] = CausalAttention.Build(inputs.AttentionMask, batch, length, past, window, ids.device);
        for (int i = 0; i < layers.Count; i++)
            x = layers[i].Forward(x, cos, sin, MaskingFor(_config.SlidingWindows[i]), inputs.Cache);
        return norm.call(x);
    }
}

/// <summary>
/// LlamaForCausalLM (also MistralForCausalLM and Qwen2ForCausalLM, which share the layout): the backbone under
/// <c>model</c> and <c>lm_head</c>, or, with tied embeddings, <c>model.embed_tokens.weight</c> as the projection and no
/// <c>lm_head.weight</c> in the state dict.
/// </summary>
/// <remarks>
/// Sliding-window attention (Mistral, Qwen2 with use_sliding_window) is applied through the mask; the cache keeps every
/// key (transformers' DynamicCache behaviour), which is exact and only costs memory beyond the window.
/// </remarks>
internal sealed class LlamaForCausalLM : CausalLanguageModel
{
    private readonly LlamaModel model;
    private nn.Module<Tensor, Tensor>? lm_head;   // null when tied

    /// <summary>A randomly initialised model for a llama, mistral or qwen2 config.</summary>
    public LlamaForCausalLM(HfConfig config) : this(config, LlamaConfig.FromHf(config)) { }

    private LlamaForCausalLM(HfConfig config, LlamaConfig settings)
        : base(nameof(LlamaForCausalLM), config, settings.ModelType, settings.VocabSize, settings.NumHiddenLayers)
    {
        Settings = settings;
        model = new LlamaModel(settings, config.Path);
        lm_head = OutputProjection(settings.HiddenSize, settings.VocabSize, settings.TieWordEmbeddings);
        RegisterComponents();
    }

    /// <summary>The typed config.</summary>
    public LlamaConfig Settings { get; }

    /// <summary>RoPE inverse frequencies in use (D / 2), float32.</summary>
    public float[] RopeInverseFrequencies => model.Rotary.InverseFrequencies;

    /// <inheritdoc/>
    public override bool TiedWordEmbeddings => lm_head is null;

    /// <summary>Logits (B, T, V).</summary>
    public override Tensor forward(CausalLMInputs inputs) => Logits(model.Forward(inputs), lm_head, model.TokenEmbedding);
}
