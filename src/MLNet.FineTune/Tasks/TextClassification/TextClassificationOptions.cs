namespace MLNet.FineTune;

/// <summary>Options of text classification: single texts or text pairs, binary or multiclass.</summary>
/// <remarks>
/// The label column may be <see cref="bool"/> (binary: outputs <c>Score</c>, <c>Probability</c>,
/// <c>PredictedLabel</c> as ML.NET's binary trainers do), or a string or key (multiclass: outputs a <c>Score</c>
/// vector of class probabilities and a key-typed <c>PredictedLabel</c> whose key values are the labels).
/// </remarks>
public sealed record TextClassificationOptions : FineTuneOptions
{
    /// <summary>The text column. Default "Text".</summary>
    public string TextColumnName { get; set; } = "Text";

    /// <summary>The second text of a sentence pair (entailment, paraphrase); null for single texts.</summary>
    public string? TextPairColumnName { get; set; }

    /// <summary>The label column (bool, string or key). Default "Label".</summary>
    public string LabelColumnName { get; set; } = "Label";

    /// <summary>The output score column. Default "Score".</summary>
    public string ScoreColumnName { get; set; } = "Score";

    /// <summary>The output predicted-label column. Default "PredictedLabel".</summary>
    public string PredictedLabelColumnName { get; set; } = "PredictedLabel";
}
