using Microsoft.ML.Data;

namespace SentimentAnalysis;

/// <summary>
/// The sentiment model, in Model Builder's layout: this file holds the input and output rows; the training,
/// consumption and evaluation code sit in the partial files beside it.
/// </summary>
public static partial class SentimentModel
{
    /// <summary>One review: the text and, for training and evaluation, whether it is positive. The column indexes match
    /// the TSV files (<c>sentence&lt;TAB&gt;label</c>, label 1 = positive).</summary>
    public sealed class ModelInput
    {
        [LoadColumn(0)]
        [ColumnName("Sentence")]
        public string Sentence { get; set; } = "";

        [LoadColumn(1)]
        [ColumnName("Label")]
        public bool Label { get; set; }
    }

    /// <summary>What the model adds to a row: ML.NET's binary-classification columns.</summary>
    public sealed class ModelOutput
    {
        [ColumnName("Sentence")]
        public string Sentence { get; set; } = "";

        /// <summary>True when the review reads as positive (Probability >= 0.5).</summary>
        [ColumnName("PredictedLabel")]
        public bool PredictedLabel { get; set; }

        /// <summary>Log-odds of positive.</summary>
        [ColumnName("Score")]
        public float Score { get; set; }

        /// <summary>Probability of positive.</summary>
        [ColumnName("Probability")]
        public float Probability { get; set; }
    }

    /// <summary>The text and label column names, as the input row spells them.</summary>
    public const string TextColumn = "Sentence";
    public const string LabelColumn = "Label";

    /// <summary>Where the default run saves the model: next to the executable (bin/), out of the source tree.</summary>
    public static string MLNetModelPath => Path.Combine(AppContext.BaseDirectory, "SentimentModel.zip");
}
