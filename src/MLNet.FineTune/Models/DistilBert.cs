using System.Text.Json.Serialization;
using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>DistilBERT's <c>config.json</c>, bound by its own key names (dim, n_layers, n_heads, hidden_dim) with
/// transformers' defaults.</summary>
internal sealed record DistilBertConfig
{
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 30522;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 512;
    /// <summary>When true the position table is fixed sinusoids (still stored in the checkpoint).</summary>
    [JsonPropertyName("sinusoidal_pos_embds")] public bool SinusoidalPosEmbds { get; init; }
    [JsonPropertyName("n_layers")] public int NLayers { get; init; } = 6;
    [JsonPropertyName("n_heads")] public int NHeads { get; init; } = 12;
    /// <summary>Hidden width H.</summary>
    [JsonPropertyName("dim")] public int Dim { get; init; } = 768;
    /// <summary>Feed-forward width.</summary>
    [JsonPropertyName("hidden_dim")] public int HiddenDim { get; init; } = 3072;
    [JsonPropertyName("dropout")] public double Dropout { get; init; } = 0.1;
    [JsonPropertyName("attention_dropout")] public double AttentionDropout { get; init; } = 0.1;
    /// <summary>transformers activation name ("gelu" is the exact erf GELU).</summary>
    [JsonPropertyName("activation")] public string Activation { get; init; } = "gelu";
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; init; } = 0.02;
    [JsonPropertyName("qa_dropout")] public double QaDropout { get; init; } = 0.1;
    [JsonPropertyName("seq_classif_dropout")] public double SeqClassifDropout { get; init; } = 0.2;
    [JsonPropertyName("pad_token_id")] public int PadTokenId { get; init; } = 0;
    /// <summary>DistilBERT's LayerNorms use a fixed epsilon in transformers (not a config key).</summary>
    public double LayerNormEps => 1e-12;

    /// <summary>Reads a DistilBERT config.</summary>
    public static DistilBertConfig FromHf(HfConfig config)
    {
        var read = config.Bind<DistilBertConfig>();
        Activations.EnsureSupported(read.Activation, config, "activation");
        if (read.Dim % read.NHeads != 0)
            throw new InvalidDataException($"{config.Path}: dim {read.Dim} is not a multiple of n_heads {read.NHeads}.");
        return read;
    }
}

/// <summary>DistilBertModel: <c>embeddings</c> (word + position, no token types) and <c>transformer.layer.N</c>; no pooler.</summary>
internal sealed class DistilBertModel : EncoderModel
{
    private DistilBertEmbeddings embeddings;
    private EncoderLayers<DistilBertBlock> transformer;

    /// <summary>Builds a randomly initialised DistilBertModel (transformers' init) from a config.</summary>
    public DistilBertModel(HfConfig config) : this(DistilBertConfig.FromHf(config), config) { }

    internal DistilBertModel(DistilBertConfig settings, HfConfig config) : base(nameof(DistilBertModel), config, "distilbert")
    {
        Settings = settings;
        embeddings = new DistilBertEmbeddings(settings);
        transformer = new EncoderLayers<DistilBertBlock>("DistilBertTransformer", settings.NLayers, _ => new DistilBertBlock(settings));   // transformer.layer.N
        RegisterComponents();
        HfInit.Apply(this, settings.InitializerRange);
        HfInit.ZeroRow(embeddings.word_embeddings, settings.PadTokenId);
        if (settings.SinusoidalPosEmbds) embeddings.UseSinusoidalPositions();
    }

    /// <summary>The typed config.</summary>
    public DistilBertConfig Settings { get; }
    /// <inheritdoc/>
    public override int HiddenSize => Settings.Dim;

    /// <summary>Last hidden state (B, T, H); no pooled output. Token type ids, if given, are ignored (DistilBERT has none).</summary>
    public override EncoderOutput forward(EncoderInputs inputs)
    {
        var positions = EncoderAttention.AbsolutePositions(inputs.InputIds, Settings.MaxPositionEmbeddings, Config); // (1, T)
        var x = embeddings.forward(inputs.InputIds, positions);                                                    // (B, T, H)
        return new EncoderOutput(transformer.forward(x, EncoderAttention.PaddingMask(inputs.AttentionMask, x.dtype)), null);
    }
}

/// <summary>DistilBertForSequenceClassification: <c>distilbert</c>, <c>pre_classifier</c> (H -> H, ReLU), <c>classifier</c>.</summary>
internal sealed class DistilBertForSequenceClassification : SequenceClassificationModel
{
    private DistilBertModel distilbert;
    private nn.Module<Tensor, Tensor> pre_classifier;
    private nn.Module<Tensor, Tensor> classifier;
    private InvertedDropout dropout;

    /// <summary>Builds the model; both head layers are initialised as transformers does (normal(0, initializer_range), zero bias).</summary>
    public DistilBertForSequenceClassification(HfConfig config, int numLabels)
        : base(nameof(DistilBertForSequenceClassification), config, "distilbert", numLabels, "pre_classifier", "classifier")
    {
        distilbert = new DistilBertModel(DistilBertConfig.FromHf(config), config);
        Settings = distilbert.Settings;
        pre_classifier = nn.Linear(Settings.Dim, Settings.Dim);
        classifier = nn.Linear(Settings.Dim, numLabels);
        dropout = new InvertedDropout(Settings.SeqClassifDropout);
        RegisterComponents();
        HfInit.Apply(pre_classifier, Settings.InitializerRange);
        HfInit.Apply(classifier, Settings.InitializerRange);
    }

    /// <summary>The typed config.</summary>
    public DistilBertConfig Settings { get; }

    /// <summary>Logits (B, NumLabels) from the first token ([CLS]).</summary>
    public override Tensor forward(EncoderInputs inputs)
    {
        var first = distilbert.forward(inputs).LastHiddenState.select(1, 0);                      // (B, H)
        var pooled = pre_classifier.forward(first).relu();                                      // (B, H)
        return classifier.forward(dropout.forward(pooled));                                     // (B, C)
    }
}

/// <summary>DistilBertForQuestionAnswering: <c>distilbert</c>, dropout (qa_dropout), <c>qa_outputs</c> (H -> 2).</summary>
internal sealed class DistilBertForQuestionAnswering : QuestionAnsweringModel
{
    /// <summary>Builds the model; <c>qa_outputs</c> is initialised as transformers does.</summary>
    public DistilBertForQuestionAnswering(HfConfig config) : this(new DistilBertModel(DistilBertConfig.FromHf(config), config)) { }

    private DistilBertForQuestionAnswering(DistilBertModel distilbert)
        : base(nameof(DistilBertForQuestionAnswering), distilbert, distilbert.Settings.InitializerRange, distilbert.Settings.QaDropout) =>
        Settings = distilbert.Settings;

    /// <summary>The typed config.</summary>
    public DistilBertConfig Settings { get; }
}

// ---- building blocks ----

/// <summary>word + position embeddings, LayerNorm, dropout.</summary>
internal sealed class DistilBertEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
    internal Embedding word_embeddings;
    private Embedding position_embeddings;
    private LayerNorm LayerNorm;
    private InvertedDropout dropout;

    public DistilBertEmbeddings(DistilBertConfig cfg) : base(nameof(DistilBertEmbeddings))
    {
        word_embeddings = nn.Embedding(cfg.VocabSize, cfg.Dim, padding_idx: cfg.PadTokenId);
        position_embeddings = nn.Embedding(cfg.MaxPositionEmbeddings, cfg.Dim);
        LayerNorm = nn.LayerNorm(cfg.Dim, cfg.LayerNormEps);
        dropout = new InvertedDropout(cfg.Dropout);
        RegisterComponents();
    }

    /// <summary>Fixed positions: sin on even features, cos on odd, angle pos / 10000^(2*(j/2)/dim) (Vaswani et al. 2017); frozen.</summary>
    public void UseSinusoidalPositions()
    {
        var weight = position_embeddings.weight!;
        long positions = weight.shape[0], dim = weight.shape[1];
        using (no_grad())
        {
            var pos = arange(positions, ScalarType.Float64).unsqueeze(1);                       // (P, 1)
            var pairIndex = arange(dim, ScalarType.Float64).div(2, rounding_mode: RoundingMode.floor);
            var angle = pos / pow(10000.0, pairIndex * 2 / dim).unsqueeze(0);                   // (P, D)
            var even = arange(0, dim, 2, ScalarType.Int64);
            var odd = arange(1, dim, 2, ScalarType.Int64);
            weight.index_copy_(1, even, sin(angle.index_select(1, even)).to_type(weight.dtype));
            weight.index_copy_(1, odd, cos(angle.index_select(1, odd)).to_type(weight.dtype));
        }
        weight.requires_grad = false;
    }

    /// <param name="inputIds">(B, T).</param>
    /// <param name="positionIds">(1, T).</param>
    public override Tensor forward(Tensor inputIds, Tensor positionIds)
    {
        var x = word_embeddings.forward(inputIds) + position_embeddings.forward(positionIds);   // (B, T, H)
        return dropout.forward(LayerNorm.forward(x));
    }
}

/// <summary>One block: <c>attention</c>, <c>sa_layer_norm</c>, <c>ffn</c>, <c>output_layer_norm</c> (post-LayerNorm).</summary>
internal sealed class DistilBertBlock : nn.Module<Tensor, Tensor, Tensor>
{
    private DistilBertAttention attention;
    private LayerNorm sa_layer_norm;
    private DistilBertFeedForward ffn;
    private LayerNorm output_layer_norm;

    public DistilBertBlock(DistilBertConfig cfg) : base(nameof(DistilBertBlock))
    {
        attention = new DistilBertAttention(cfg);
        sa_layer_norm = nn.LayerNorm(cfg.Dim, cfg.LayerNormEps);
        ffn = new DistilBertFeedForward(cfg);
        output_layer_norm = nn.LayerNorm(cfg.Dim, cfg.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        var attended = sa_layer_norm.forward(attention.forward(hidden, mask) + hidden);         // (B, T, H)
        return output_layer_norm.forward(ffn.forward(attended) + attended);                     // (B, T, H)
    }
}

/// <summary><c>attention.q_lin/k_lin/v_lin/out_lin</c>.</summary>
internal sealed class DistilBertAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly int _heads;
    private readonly double _dropout;
    private nn.Module<Tensor, Tensor> q_lin;
    private nn.Module<Tensor, Tensor> k_lin;
    private nn.Module<Tensor, Tensor> v_lin;
    private nn.Module<Tensor, Tensor> out_lin;

    public DistilBertAttention(DistilBertConfig cfg) : base(nameof(DistilBertAttention))
    {
        (_heads, _dropout) = (cfg.NHeads, cfg.AttentionDropout);
        q_lin = nn.Linear(cfg.Dim, cfg.Dim);
        k_lin = nn.Linear(cfg.Dim, cfg.Dim);
        v_lin = nn.Linear(cfg.Dim, cfg.Dim);
        out_lin = nn.Linear(cfg.Dim, cfg.Dim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        var context = EncoderAttention.Attend(q_lin.forward(hidden), k_lin.forward(hidden), v_lin.forward(hidden), _heads, mask, training ? _dropout : 0.0);
        return out_lin.forward(context);                                                        // (B, T, H)
    }
}

/// <summary><c>ffn.lin1</c> (H -> hidden_dim), activation, <c>ffn.lin2</c> (hidden_dim -> H), dropout.</summary>
internal sealed class DistilBertFeedForward : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> lin1;
    private nn.Module<Tensor, Tensor> lin2;
    private nn.Module<Tensor, Tensor> activation;
    private InvertedDropout dropout;

    public DistilBertFeedForward(DistilBertConfig cfg) : base(nameof(DistilBertFeedForward))
    {
        lin1 = nn.Linear(cfg.Dim, cfg.HiddenDim);
        lin2 = nn.Linear(cfg.HiddenDim, cfg.Dim);
        activation = Activations.Create(cfg.Activation, key: "activation");
        dropout = new InvertedDropout(cfg.Dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden) => dropout.forward(lin2.forward(activation.forward(lin1.forward(hidden))));
}
