using Microsoft.ML.Data;

namespace QuestionAnswering;

/// <summary>
/// The question-answering model, in Model Builder's layout: this file holds the input and output rows; the training,
/// consumption and evaluation code sit in the partial files beside it.
/// </summary>
public static partial class QAModel
{
    /// <summary>One question about a paragraph. Training and evaluation read SQuAD JSON files instead
    /// (<c>mlContext.Data.LoadFromSquadJson</c>), whose rows have these columns and the gold answers.</summary>
    public sealed class ModelInput
    {
        [ColumnName("Context")]
        public string Context { get; set; } = "";

        [ColumnName("Question")]
        public string Question { get; set; } = "";
    }

    /// <summary>What the model adds to a row.</summary>
    public sealed class ModelOutput
    {
        /// <summary>The answer: a span of the context ("" when a SQuAD v2.0 model finds none).</summary>
        [ColumnName("Answer")]
        public string Answer { get; set; } = "";

        /// <summary>Where the answer starts in the context (-1 for no answer).</summary>
        [ColumnName("AnswerStart")]
        public int AnswerStart { get; set; }

        /// <summary>Start logit + end logit of the answer.</summary>
        [ColumnName("Score")]
        public float Score { get; set; }
    }
}
