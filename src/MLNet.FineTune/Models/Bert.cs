using System.Text.Json.Serialization;
using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>BERT's <c>config.json</c>, bound by key name (defaults are transformers' <c>BertConfig</c> defaults).</summary>
internal record BertConfig
{
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 30522;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 768;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; } = 12;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; } = 12;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 3072;
    /// <summary>transformers activation name: "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation.</summary>
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu";
    [JsonPropertyName("hidden_dropout_prob")] public double HiddenDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("attention_probs_dropout_prob")] public double AttentionProbsDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 512;
    [JsonPropertyName("type_vocab_size")] public int TypeVocabSize { get; init; } = 2;
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; init; } = 0.02;
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-12;
    [JsonPropertyName("pad_token_id")] public int PadTokenId { get; init; } = 0;
    /// <summary>Dropout before the classifier; null means <see cref="HiddenDropoutProb"/>.</summary>
    [JsonPropertyName("classifier_dropout")] public double? ClassifierDropout { get; init; }
    /// <summary>Only "absolute" is supported (relative_key variants are rejected when read).</summary>
    [JsonPropertyName("position_embedding_type")] public string PositionEmbeddingType { get; init; } = "absolute";

    /// <summary>Reads a BERT config.</summary>
    public static BertConfig FromHf(HfConfig config) => Validated(config.Bind<BertConfig>(), config);

    /// <summary>Checks what binding cannot (supported values, divisibility); RoBERTa reads through it too.</summary>
    protected static T Validated<T>(T read, HfConfig config) where T : BertConfig
    {
        if (read.PositionEmbeddingType != "absolute")
            throw new NotSupportedException($"{config.Path}: position_embedding_type = \"{read.PositionEmbeddingType}\" is not supported (only \"absolute\").");
        Activations.EnsureSupported(read.HiddenAct, config, "hidden_act");
        if (read.HiddenSize % read.NumAttentionHeads != 0)
            throw new InvalidDataException($"{config.Path}: hidden_size {read.HiddenSize} is not a multiple of num_attention_heads {read.NumAttentionHeads}.");
        return read;
    }
}

/// <summary>BertModel: <c>embeddings</c>, <c>encoder.layer.N</c>, optional <c>pooler</c>.</summary>
internal sealed class BertModel : EncoderModel
{
    private BertEmbeddings embeddings;
    private EncoderLayers<BertLayer> encoder;
    private BertPooler? pooler;

    /// <summary>Builds a randomly initialised BertModel (transformers' init) from a config.</summary>
    /// <param name="config">A BERT config.json.</param>
    /// <param name="addPoolingLayer">False for the question-answering model, which has no pooler in transformers.</param>
    public BertModel(HfConfig config, bool addPoolingLayer = true) : this(BertConfig.FromHf(config), config, addPoolingLayer) { }

    internal BertModel(BertConfig settings, HfConfig config, bool addPoolingLayer) : base(nameof(BertModel), config, "bert")
    {
        Settings = settings;
        embeddings = new BertEmbeddings(settings, positionPaddingIdx: null);
        encoder = BertLayer.Stack(settings);
        pooler = addPoolingLayer ? new BertPooler(settings) : null;
        RegisterComponents();
        HfInit.Apply(this, settings.InitializerRange);
        HfInit.ZeroRow(embeddings.word_embeddings, settings.PadTokenId);
    }

    /// <summary>The typed config.</summary>
    public BertConfig Settings { get; }
    /// <inheritdoc/>
    public override int HiddenSize => Settings.HiddenSize;

    /// <summary>Last hidden state (B, T, H) and pooled output (B, H) (null without a pooler).</summary>
    public override EncoderOutput forward(EncoderInputs inputs)
    {
        var positions = EncoderAttention.AbsolutePositions(inputs.InputIds, Settings.MaxPositionEmbeddings, Config); // (1, T)
        var x = embeddings.forward(inputs.InputIds, inputs.TokenTypeIds, positions);                                // (B, T, H)
        var hidden = encoder.forward(x, EncoderAttention.PaddingMask(inputs.AttentionMask, x.dtype));                // (B, T, H)
        return new EncoderOutput(hidden, pooler?.forward(hidden));
    }
}

/// <summary>BertForSequenceClassification: <c>bert</c> (with pooler), <c>dropout</c>, <c>classifier</c>.</summary>
internal sealed class BertForSequenceClassification : SequenceClassificationModel
{
    private BertModel bert;
    private InvertedDropout dropout;
    private nn.Module<Tensor, Tensor> classifier;

    /// <summary>Builds the model; the head is initialised as transformers does (normal(0, initializer_range), zero bias).</summary>
    public BertForSequenceClassification(HfConfig config, int numLabels)
        : base(nameof(BertForSequenceClassification), config, "bert", numLabels, "classifier")
    {
        bert = new BertModel(BertConfig.FromHf(config), config, addPoolingLayer: true);
        Settings = bert.Settings;
        dropout = new InvertedDropout(Settings.ClassifierDropout ?? Settings.HiddenDropoutProb);
        classifier = nn.Linear(Settings.HiddenSize, numLabels);
        RegisterComponents();
        HfInit.Apply(classifier, Settings.InitializerRange);
    }

    /// <summary>The typed config.</summary>
    public BertConfig Settings { get; }

    /// <summary>Logits (B, NumLabels) from the pooled first token.</summary>
    public override Tensor forward(EncoderInputs inputs) =>
        classifier.forward(dropout.forward(bert.forward(inputs).PooledOutput!));          // (B, C)
}

/// <summary>BertForQuestionAnswering: <c>bert</c> (no pooler), <c>qa_outputs</c> (H -> 2).</summary>
internal sealed class BertForQuestionAnswering : QuestionAnsweringModel
{
    /// <summary>Builds the model; <c>qa_outputs</c> is initialised as transformers does.</summary>
    public BertForQuestionAnswering(HfConfig config) : this(new BertModel(BertConfig.FromHf(config), config, addPoolingLayer: false)) { }

    private BertForQuestionAnswering(BertModel bert) : base(nameof(BertForQuestionAnswering), bert, bert.Settings.InitializerRange) =>
        Settings = bert.Settings;

    /// <summary>The typed config.</summary>
    public BertConfig Settings { get; }
}

// ---- building blocks (RoBERTa reuses them: its checkpoint names are BERT's) ----

/// <summary>word + position + token-type embeddings, then LayerNorm and dropout.</summary>
internal sealed class BertEmbeddings : nn.Module<Tensor, Tensor?, Tensor, Tensor>
{
    internal Embedding word_embeddings;
    internal Embedding position_embeddings;
    private Embedding token_type_embeddings;
    private LayerNorm LayerNorm;
    private InvertedDropout dropout;

    /// <param name="cfg">Sizes, vocabulary and dropout.</param>
    /// <param name="positionPaddingIdx">RoBERTa's position table has a padding row (pad_token_id); BERT's has none.</param>
    public BertEmbeddings(BertConfig cfg, long? positionPaddingIdx) : base(nameof(BertEmbeddings))
    {
        word_embeddings = nn.Embedding(cfg.VocabSize, cfg.HiddenSize, padding_idx: cfg.PadTokenId);
        position_embeddings = nn.Embedding(cfg.MaxPositionEmbeddings, cfg.HiddenSize, padding_idx: positionPaddingIdx);
        token_type_embeddings = nn.Embedding(cfg.TypeVocabSize, cfg.HiddenSize);
        LayerNorm = nn.LayerNorm(cfg.HiddenSize, cfg.LayerNormEps);
        dropout = new InvertedDropout(cfg.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <param name="inputIds">(B, T) int64.</param>
    /// <param name="tokenTypeIds">(B, T) int64, or null for segment 0 everywhere.</param>
    /// <param name="positionIds">(B, T) or (1, T) int64.</param>
    public override Tensor forward(Tensor inputIds, Tensor? tokenTypeIds, Tensor positionIds)
    {
        var x = word_embeddings.forward(inputIds);                                           // (B, T, H)
        x = tokenTypeIds is null
            ? x + token_type_embeddings.weight![0]                                           // segment 0 row, broadcast
            : x + token_type_embeddings.forward(tokenTypeIds);
        x = x + position_embeddings.forward(positionIds);                                    // (1|B, T, H) broadcast
        return dropout.forward(LayerNorm.forward(x));
    }
}

/// <summary>One layer: <c>attention</c> (self + output), <c>intermediate</c>, <c>output</c>.</summary>
internal sealed class BertLayer : nn.Module<Tensor, Tensor, Tensor>
{
    /// <summary><c>encoder.layer.N</c>: num_hidden_layers post-LayerNorm layers (BERT and RoBERTa).</summary>
    public static EncoderLayers<BertLayer> Stack(BertConfig cfg) => new("BertEncoder", cfg.NumHiddenLayers, _ => new BertLayer(cfg));

    private BertAttention attention;
    private BertIntermediate intermediate;
    private BertResidualOutput output;

    public BertLayer(BertConfig cfg) : base(nameof(BertLayer))
    {
        attention = new BertAttention(cfg);
        intermediate = new BertIntermediate(cfg);
        output = new BertResidualOutput(cfg.IntermediateSize, cfg.HiddenSize, cfg);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor mask)
    {
        var attended = attention.forward(hidden, mask);                                      // (B, T, H)
        return output.forward(intermediate.forward(attended), attended);                     // (B, T, H)
    }
}

/// <summary><c>attention.self</c> (query/key/value) and <c>attention.output</c> (dense + residual LayerNorm).</summary>
internal sealed class BertAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private BertSelfAttention self;
    private BertResidualOutput output;

    public BertAttention(BertConfig cfg) : base(nameof(BertAttention))
    {
        self = new BertSelfAttention(cfg);
        output = new BertResidualOutput(cfg.HiddenSize, cfg.HiddenSize, cfg);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor mask) => output.forward(self.forward(hidden, mask), hidden);
}

internal sealed class BertSelfAttention : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly int _heads;
    private readonly double _dropout;
    private nn.Module<Tensor, Tensor> query;
    private nn.Module<Tensor, Tensor> key;
    private nn.Module<Tensor, Tensor> value;

    public BertSelfAttention(BertConfig cfg) : base(nameof(BertSelfAttention))
    {
        (_heads, _dropout) = (cfg.NumAttentionHeads, cfg.AttentionProbsDropoutProb);
        query = nn.Linear(cfg.HiddenSize, cfg.HiddenSize);
        key = nn.Linear(cfg.HiddenSize, cfg.HiddenSize);
        value = nn.Linear(cfg.HiddenSize, cfg.HiddenSize);
        RegisterComponents();
    }

    /// <summary>(B, T, H) -> (B, T, H) context.</summary>
    public override Tensor forward(Tensor hidden, Tensor mask) =>
        EncoderAttention.Attend(query.forward(hidden), key.forward(hidden), value.forward(hidden), _heads, mask, training ? _dropout : 0.0);
}

/// <summary>A feed-forward up-projection with the config's activation: <c>intermediate.dense</c>.</summary>
internal sealed class BertIntermediate : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> dense;
    private nn.Module<Tensor, Tensor> intermediate_act_fn;

    public BertIntermediate(BertConfig cfg) : base(nameof(BertIntermediate))
    {
        dense = nn.Linear(cfg.HiddenSize, cfg.IntermediateSize);
        intermediate_act_fn = Activations.Create(cfg.HiddenAct);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden) => intermediate_act_fn.forward(dense.forward(hidden));   // (B, T, I)
}

/// <summary>dense, dropout, then LayerNorm(x + residual): transformers' BertSelfOutput (H -> H) and BertOutput (I -> H).</summary>
internal sealed class BertResidualOutput : nn.Module<Tensor, Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> dense;
    private LayerNorm LayerNorm;
    private InvertedDropout dropout;

    public BertResidualOutput(int inSize, int outSize, BertConfig cfg) : base(nameof(BertResidualOutput))
    {
        dense = nn.Linear(inSize, outSize);
        LayerNorm = nn.LayerNorm(outSize, cfg.LayerNormEps);
        dropout = new InvertedDropout(cfg.HiddenDropoutProb);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden, Tensor residual) =>
        LayerNorm.forward(dropout.forward(dense.forward(hidden)) + residual);
}

/// <summary><c>pooler.dense</c>: tanh(dense(h[:, 0])).</summary>
internal sealed class BertPooler : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> dense;

    public BertPooler(BertConfig cfg) : base(nameof(BertPooler))
    {
        dense = nn.Linear(cfg.HiddenSize, cfg.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden) => tanh(dense.forward(hidden.select(1, 0)));   // (B, H)
}
