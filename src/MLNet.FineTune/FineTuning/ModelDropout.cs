using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// <see cref="FineTuneOptions.Dropout"/>: the base model's dropout probabilities replaced in the config the training
/// model is built from. model.zip keeps the checkpoint's config (scoring never uses dropout).
/// </summary>
internal static class ModelDropout
{
    /// <summary>
    /// Dropout keys of the encoder families' configs: BERT and RoBERTa (hidden_dropout_prob, attention_probs_dropout_prob,
    /// classifier_dropout) and DistilBERT (dropout, attention_dropout, qa_dropout, seq_classif_dropout). Written whether
    /// or not the config has them, since an absent key means the family's default (0.1, or DistilBERT's 0.2 before the
    /// classifier), not "no dropout".
    /// </summary>
    internal static readonly string[] Keys =
        ["hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"];

    /// <summary>BERT and RoBERTa's classifier dropout: null or absent means "use hidden_dropout_prob" (overridden
    /// anyway), so it is replaced only where the config sets a number.</summary>
    internal const string ClassifierKey = "classifier_dropout";

    /// <summary>The config with every dropout probability set to <paramref name="dropout"/>; the config itself when
    /// <paramref name="dropout"/> is null (the checkpoint's dropout is kept).</summary>
    public static HfConfig Override(HfConfig config, double? dropout)
    {
        if (dropout is not { } p) return config;
        var json = JsonNode.Parse(config.ToString())!.AsObject();
        foreach (var key in Keys) json[key] = p;
        if (json[ClassifierKey] is not null) json[ClassifierKey] = p;
        return HfConfig.Parse(json.ToJsonString(), config.Path);
    }
}
