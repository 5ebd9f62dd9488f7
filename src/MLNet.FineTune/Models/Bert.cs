using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>BERT hyperparameters read from <c>config.json</c> (defaults are transformers' <c>BertConfig</c> defaults).</summary>
internal record BertConfig
{
    public int VocabSize { get; init; } = 30522;
    public int HiddenSize { get; init; } = 768;
    public int NumHiddenLayers { get; init; } = 12;
    public int NumAttentionHeads { get; init; } = 12;
    public int IntermediateSize { get; init; } = 3072;
    /// <summary>transformers activation name: "gelu" is the exact (erf) GELU, "gelu_new" the tanh approximation.</summary>
    public string HiddenAct { get; init; } = "gelu";
    public double HiddenDropoutProb { get; init; } = 0.1;
    public double AttentionProbsDropoutProb { get; init; } = 0.1;
    public int MaxPositionEmbeddings { get; init; } = 512;
    public int TypeVocabSize { get; init; } = 2;
    public double InitializerRange { get; init; } = 0.02;
    public double LayerNormEps { get; init; } = 1e-12;
    public int PadTokenId { get; init; } = 0;
    /// <summary>Dropout before the classifier; null means <see cref="HiddenDropoutProb"/>.</summary>
    public double? ClassifierDropout { get; init; }

    /// <summary>Reads a BERT config.</summary>
    public static BertConfig FromHf(HfConfig config) => Read(config, new BertConfig());

    /// <summary>Reads the BERT keys over <paramref name="defaults"/>, keeping its runtime type (RoBERTa's defaults differ).</summary>
    protected static T Read<T>(HfConfig config, T defaults) where T : BertConfig
    {
        BertConfig d = defaults;
        var positionType = config.GetString("position_embedding_type", "absolute");
        if (positionType != "absolute")
            throw new NotSupportedException($"{config.Path}: position_embedding_type = \"{positionType}\" is not supported (only \"absolute\").");
        var read = d with
        {
            VocabSize = config.GetInt("vocab_size", d.VocabSize),
            HiddenSize = config.GetInt("hidden_size", d.HiddenSize),
            NumHiddenLayers = config.GetInt("num_hidden_layers", d.NumHiddenLayers),
            NumAttentionHeads = config.GetInt("num_attention_heads", d.NumAttentionHeads),
            IntermediateSize = config.GetInt("intermediate_size", d.IntermediateSize),
            HiddenAct = Activations.EnsureSupported(config.GetString("hidden_act", d.HiddenAct), config, "hidden_act"),
            HiddenDropoutProb = config.GetDouble("hidden_dropout_prob", d.HiddenDropoutProb),
            AttentionProbsDropoutProb = config.GetDouble("attention_probs_dropout_prob", d.AttentionProbsDropoutProb),
            MaxPositionEmbeddings = config.GetInt("max_position_embeddings", d.MaxPositionEmbeddings),
            TypeVocabSize = config.GetInt("type_vocab_size", d.TypeVocabSize),
            InitializerRange = config.GetDouble("initializer_range", d.InitializerRange),
            LayerNormEps = config.GetDouble("layer_norm_eps", d.LayerNormEps),
            PadTokenId = config.GetInt("pad_token_id", d.PadTokenId),
            ClassifierDropout = config.Has("classifier_dropout") ? config.GetDouble("classifier_dropout") : null,
        };
        if (read.HiddenSize % read.NumAttentionHeads != 0)
            throw new InvalidDataException($"{config.Path}: hidden_size {read.HiddenSize} is not a multiple of num_attention_heads {read.NumAttentionHeads}.");
        return (T)read;   // 'with' clones the runtime type
    }
}

/// <summary>BertModel: <c>embeddings</c>, <c>encoder.layer.N</c>, optional <c>pooler</c>.</summary>
internal sealed class BertModel : EncoderModel
{
    private readonly BertConfig _cfg;
    private readonly HfConfig _config;
    private BertEmbeddings embeddings;
    private EncoderLayers<BertLayer> encoder;
    private BertPooler? pooler;

    /// <summary>Builds a randomly initialised BertModel (transformers' init) from a config.</summary>
    /// <param name="config">A BERT config.json.</param>
    /// <param name="addPoolingLayer">False for the question-answering model, which has no pooler in transformers.</param>
    public BertModel(HfConfig config, bool addPoolingLayer = true) : this(BertConfig.FromHf(config), config, addPoolingLayer) { }

    internal BertModel(BertConfig cfg, HfConfig config, bool addPoolingLayer) : base(nameof(BertModel))
    {
        (_cfg, _config) = (cfg, config);
        embeddings = new BertEmbeddings(cfg, positionPaddingIdx: null);
        encoder = BertLayer.Stack(cfg);
        pooler = addPoolingLayer ? new BertPooler(cfg) : null;
        RegisterComponents();
        HfInit.Apply(this, cfg.InitializerRange);
        HfInit.ZeroRow(embeddings.word_embeddings, cfg.PadTokenId);
    }

    public override HfConfig Config => _config;
    public override string ModelType => "bert";
    public override string BaseModelPrefix => "bert";
    public override int HiddenSize => _cfg.HiddenSize;
    /// <summary>The typed hyperparameters.</summary>
    public BertConfig Hyperparameters => _cfg;

    /// <summary>Last hidden state (B, T, H) and pooled output (B, H) (null without a pooler).</summary>
    public override EncoderOutput forward(EncoderInputs inputs)
    {
        var positions = EncoderAttention.AbsolutePositions(inputs.InputIds, _cfg.MaxPositionEmbeddings, _config); // (1, T)
        var x = embeddings.forward(inputs.InputIds, inputs.TokenTypeIds, positions);                            // (B, T, H)
        var hidden = encoder.forward(x, EncoderAttention.PaddingMask(inputs.AttentionMask, x.dtype));            // (B, T, H)
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
    public BertForSequenceClassification(HfConfig config, int numLabels) : base(nameof(BertForSequenceClassification), numLabels)
    {
        var cfg = BertConfig.FromHf(config);
        bert = new BertModel(cfg, config, addPoolingLayer: true);
        dropout = new InvertedDropout(cfg.ClassifierDropout ?? cfg.HiddenDropoutProb);
        classifier = nn.Linear(cfg.HiddenSize, numLabels);
        RegisterComponents();
        HfInit.Apply(classifier, cfg.InitializerRange);
    }

    public override HfConfig Config => bert.Config;
    public override string ModelType => "bert";
    public override string BaseModelPrefix => "bert";
    public override IReadOnlyList<string> HeadModuleNames => ["classifier"];

    /// <summary>Logits (B, NumLabels) from the pooled first token.</summary>
    public override Tensor forward(EncoderInputs inputs) =>
        classifier.forward(dropout.forward(bert.forward(inputs).PooledOutput!));              // (B, C)
}

/// <summary>BertForQuestionAnswering: <c>bert</c> (no pooler), <c>qa_outputs</c> (H -> 2).</summary>
internal sealed class BertForQuestionAnswering : QuestionAnsweringModel
{
    private BertModel bert;
    private nn.Module<Tensor, Tensor> qa_outputs;

    /// <summary>Builds the model; <c>qa_outputs</c> is initialised as transformers does.</summary>
    public BertForQuestionAnswering(HfConfig config) : base(nameof(BertForQuestionAnswering))
    {
        var cfg = BertConfig.FromHf(config);
        bert = new BertModel(cfg, config, addPoolingLayer: false);
        qa_outputs = nn.Linear(cfg.HiddenSize, 2);
        RegisterComponents();
        HfInit.Apply(qa_outputs, cfg.InitializerRange);
    }

    public override HfConfig Config => bert.Config;
    public override string ModelType => "bert";
    public override string BaseModelPrefix => "bert";

    /// <summary>Start and end logits, each (B, T).</summary>
    public override (Tensor StartLogits, Tensor EndLogits) forward(EncoderInputs inputs) =>
        SpanHead.Split(qa_outputs.forward(bert.forward(inputs).LastHiddenState));
}

/// <summary>Shared by the question-answering heads: (B, T, 2) logits -> start (B, T), end (B, T).</summary>
internal static class SpanHead
{
    public static (Tensor Start, Tensor End) Split(Tensor logits)
    {
        var parts = logits.split(1, -1);                                                     // 2 x (B, T, 1)
        return (parts[0].squeeze(-1).contiguous(), parts[1].squeeze(-1).contiguous());
    }
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
