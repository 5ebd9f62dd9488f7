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
    public static new RobertaConfig FromHf(HfConfig config) => Validated(config.Bind<RobertaConfig>(), config);

    /// <summary>Longest input the position table allows: positions run from pad_token_id + 1 (fairseq's convention).</summary>
    public int MaxSequenceLength => MaxPositionEmbeddings - PadTokenId - 1;
}

/// <summary>RobertaModel: BERT's layers and key names; positions count real tokens only, starting at pad_token_id + 1.</summary>
internal sealed class RobertaModel : EncoderModel
{
    private BertEmbeddings embeddings;
    private EncoderLayers<BertLayer> encoder;
    private BertPooler? pooler;

    /// <summary>Builds a randomly initialised RobertaModel (transformers' init) from a config.</summary>
    /// <param name="config">A RoBERTa config.json.</param>
    /// <param name="addPoolingLayer">False inside the task models, which have no pooler in transformers.</param>
    public RobertaModel(HfConfig config, bool addPoolingLayer = true) : this(RobertaConfig.FromHf(config), config, addPoolingLayer) { }

    internal RobertaModel(RobertaConfig settings, HfConfig config, bool addPoolingLayer) : base(nameof(RobertaModel), config, "roberta")
    {
        Settings = settings;
        embeddings = new BertEmbeddings(settings, positionPaddingIdx: settings.PadTokenId);
        encoder = BertLayer.Stack(settings);
        pooler = addPoolingLayer ? new BertPooler(settings) : null;
        RegisterComponents();
        HfInit.Apply(this, settings.InitializerRange);
        HfInit.ZeroRow(embeddings.word_embeddings, settings.PadTokenId);
        HfInit.ZeroRow(embeddings.position_embeddings, settings.PadTokenId);
    }

    /// <summary>The typed config.</summary>
    public RobertaConfig Settings { get; }
    /// <inheritdoc/>
    public override int HiddenSize => Settings.HiddenSize;

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
        if (inputIds.shape[1] > Settings.MaxSequenceLength)
            throw new ArgumentException($"Sequence length {inputIds.shape[1]} exceeds {Settings.MaxSequenceLength} (max_position_embeddings {Settings.MaxPositionEmbeddings} - pad_token_id - 1) of {Config.Path}; truncate inputs.");
        var real = inputIds.ne(Settings.PadTokenId).to_type(ScalarType.Int64);                  // (B, T) 1 for non-pad
        return real.cumsum(1) * real + Settings.PadTokenId;                                     // (B, T)
    }
}

/// <summary>RobertaForSequenceClassification: <c>roberta</c> (no pooler) and <c>classifier</c> (<c>dense</c>, <c>out_proj</c>).</summary>
internal sealed class RobertaForSequenceClassification : SequenceClassificationModel
{
    private RobertaModel roberta;
    private nn.Module<Tensor, Tensor> classifier;

    /// <summary>Builds the model; the head is initialised as transformers does (normal(0, initializer_range), zero bias).</summary>
    public RobertaForSequenceClassification(HfConfig config, int numLabels)
        : base(nameof(RobertaForSequenceClassification), config, "roberta", numLabels, "classifier")
    {
        roberta = new RobertaModel(RobertaConfig.FromHf(config), config, addPoolingLayer: false);
        Settings = roberta.Settings;
        classifier = new RobertaClassificationHead(Settings, numLabels);
        RegisterComponents();
        HfInit.Apply(classifier, Settings.InitializerRange);
    }

    /// <summary>The typed config.</summary>
    public RobertaConfig Settings { get; }

    /// <summary>Logits (B, NumLabels) from the first token (&lt;s&gt;).</summary>
    public override Tensor forward(EncoderInputs inputs) => classifier.forward(roberta.forward(inputs).LastHiddenState);
}

/// <summary>RobertaForQuestionAnswering: <c>roberta</c> (no pooler), <c>qa_outputs</c> (H -> 2).</summary>
internal sealed class RobertaForQuestionAnswering : QuestionAnsweringModel
{
    /// <summary>Builds the model; <c>qa_outputs</c> is initialised as transformers does.</summary>
    public RobertaForQuestionAnswering(HfConfig config)
        : this(new RobertaModel(RobertaConfig.FromHf(config), config, addPoolingLayer: false)) { }

    private RobertaForQuestionAnswering(RobertaModel roberta)
        : base(nameof(RobertaForQuestionAnswering), roberta, roberta.Settings.InitializerRange) => Settings = roberta.Settings;

    /// <summary>The typed config.</summary>
    public RobertaConfig Settings { get; }
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
