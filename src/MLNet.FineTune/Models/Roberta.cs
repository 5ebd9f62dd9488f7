using MLNet.FineTune.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>RoBERTa hyperparameters: BERT's keys, with transformers' RoBERTa defaults (pad_token_id 1).</summary>
internal sealed record RobertaConfig : BertConfig
{
    /// <summary>transformers' RobertaConfig defaults.</summary>
    public RobertaConfig() { PadTokenId = 1; VocabSize = 50265; MaxPositionEmbeddings = 514; }

    /// <summary>Reads a RoBERTa config.</summary>
    public static new RobertaConfig FromHf(HfConfig config) => Read(config, new RobertaConfig());

    /// <summary>Longest input the position table allows: positions run from pad_token_id + 1 (fairseq's convention).</summary>
    public int MaxSequenceLength => MaxPositionEmbeddings - PadTokenId - 1;
}

/// <summary>RobertaModel: BERT's layers and key names; positions count real tokens only, starting at pad_token_id + 1.</summary>
internal sealed class RobertaModel : EncoderModel
{
    private readonly RobertaConfig _cfg;
    private readonly HfConfig _config;
    private BertEmbeddings embeddings;
    private EncoderLayers<BertLayer> encoder;
    private BertPooler? pooler;

    /// <summary>Builds a randomly initialised RobertaModel (transformers' init) from a config.</summary>
    /// <param name="config">A RoBERTa config.json.</param>
    /// <param name="addPoolingLayer">False inside the task models, which have no pooler in transformers.</param>
    public RobertaModel(HfConfig config, bool addPoolingLayer = true) : this(RobertaConfig.FromHf(config), config, addPoolingLayer) { }

    internal RobertaModel(RobertaConfig cfg, HfConfig config, bool addPoolingLayer) : base(nameof(RobertaModel))
    {
        (_cfg, _config) = (cfg, config);
        embeddings = new BertEmbeddings(cfg, positionPaddingIdx: cfg.PadTokenId);
        encoder = BertLayer.Stack(cfg);
        pooler = addPoolingLayer ? new BertPooler(cfg) : null;
        RegisterComponents();
        HfInit.Apply(this, cfg.InitializerRange);
        HfInit.ZeroRow(embeddings.word_embeddings, cfg.PadTokenId);
        HfInit.ZeroRow(embeddings.position_embeddings, cfg.PadTokenId);
    }

    public override HfConfig Config => _config;
    public override string ModelType => "roberta";
    public override string BaseModelPrefix => "roberta";
    public override int HiddenSize => _cfg.HiddenSize;
    /// <summary>The typed hyperparameters.</summary>
    public RobertaConfig Hyperparameters => _cfg;

    /// <summary>Last hidden state (B, T, H) and pooled output (B, H) (null without a pooler).</summary>
    public override EncoderOutput forward(EncoderInputs inputs)
    {
        var positions = PositionIds(inputs.InputIds);                                           // (B, T)
        var x = embeddings.forward(inputs.InputIds, inputs.TokenTypeIds, positions);            // (B, T, H)
        var hidden = encoder.forward(x, EncoderAttention.PaddingMask(inputs.AttentionMask, x.dtype));
        return new EncoderOutput(hidden, pooler?.forward(hidden));
    }

    /// <summary>transformers' create_position_ids_from_input_ids: real tokens are numbered pad+1, pad+2, ... in order
    /// (so left padding does not shift them) and pad tokens get pad_token_id.</summary>
    internal Tensor PositionIds(Tensor inputIds)
    {
        if (inputIds.shape[1] > _cfg.MaxSequenceLength)
            throw new ArgumentException($"Sequence length {inputIds.shape[1]} exceeds {_cfg.MaxSequenceLength} (max_position_embeddings {_cfg.MaxPositionEmbeddings} - pad_token_id - 1) of {_config.Path}; truncate inputs.");
        var real = inputIds.ne(_cfg.PadTokenId).to_type(ScalarType.Int64);                      // (B, T) 1 for non-pad
        return real.cumsum(1) * real + _cfg.PadTokenId;                                         // (B, T)
    }
}

/// <summary>RobertaForSequenceClassification: <c>roberta</c> (no pooler) and <c>classifier</c> (<c>dense</c>, <c>out_proj</c>).</summary>
internal sealed class RobertaForSequenceClassification : SequenceClassificationModel
{
    private RobertaModel roberta;
    private nn.Module<Tensor, Tensor> classifier;

    /// <summary>Builds the model; the head is initialised as transformers does (normal(0, initializer_range), zero bias).</summary>
    public RobertaForSequenceClassification(HfConfig config, int numLabels) : base(nameof(RobertaForSequenceClassification), numLabels)
    {
        var cfg = RobertaConfig.FromHf(config);
        roberta = new RobertaModel(cfg, config, addPoolingLayer: false);
        classifier = new RobertaClassificationHead(cfg, numLabels);
        RegisterComponents();
        HfInit.Apply(classifier, cfg.InitializerRange);
    }

    public override HfConfig Config => roberta.Config;
    public override string ModelType => "roberta";
    public override string BaseModelPrefix => "roberta";
    public override IReadOnlyList<string> HeadModuleNames => ["classifier"];

    /// <summary>Logits (B, NumLabels) from the first token (&lt;s&gt;).</summary>
    public override Tensor forward(EncoderInputs inputs) => classifier.forward(roberta.forward(inputs).LastHiddenState);
}

/// <summary>RobertaForQuestionAnswering: <c>roberta</c> (no pooler), <c>qa_outputs</c> (H -> 2).</summary>
internal sealed class RobertaForQuestionAnswering : QuestionAnsweringModel
{
    private RobertaModel roberta;
    private nn.Module<Tensor, Tensor> qa_outputs;

    /// <summary>Builds the model; <c>qa_outputs</c> is initialised as transformers does.</summary>
    public RobertaForQuestionAnswering(HfConfig config) : base(nameof(RobertaForQuestionAnswering))
    {
        var cfg = RobertaConfig.FromHf(config);
        roberta = new RobertaModel(cfg, config, addPoolingLayer: false);
        qa_outputs = nn.Linear(cfg.HiddenSize, 2);
        RegisterComponents();
        HfInit.Apply(qa_outputs, cfg.InitializerRange);
    }

    public override HfConfig Config => roberta.Config;
    public override string ModelType => "roberta";
    public override string BaseModelPrefix => "roberta";

    /// <summary>Start and end logits, each (B, T).</summary>
    public override (Tensor StartLogits, Tensor EndLogits) forward(EncoderInputs inputs) =>
        SpanHead.Split(qa_outputs.forward(roberta.forward(inputs).LastHiddenState));
}

/// <summary>transformers' RobertaClassificationHead: h[:, 0] -> dropout -> dense -> tanh -> dropout -> out_proj.</summary>
internal sealed class RobertaClassificationHead : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> dense;
    private InvertedDropout dropout;
    private nn.Module<Tensor, Tensor> out_proj;

    public RobertaClassificationHead(BertConfig cfg, int numLabels) : base(nameof(RobertaClassificationHead))
    {
        dense = nn.Linear(cfg.HiddenSize, cfg.HiddenSize);
        dropout = new InvertedDropout(cfg.ClassifierDropout ?? cfg.HiddenDropoutProb);
        out_proj = nn.Linear(cfg.HiddenSize, numLabels);
        RegisterComponents();
    }

    /// <param name="features">(B, T, H) last hidden state.</param>
    public override Tensor forward(Tensor features)
    {
        var x = dropout.forward(features.select(1, 0));                                         // (B, H)
        x = tanh(dense.forward(x));
        return out_proj.forward(dropout.forward(x));                                            // (B, C)
    }
}
