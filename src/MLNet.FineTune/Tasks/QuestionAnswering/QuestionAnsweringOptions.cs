using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune;

/// <summary>
/// Options of extractive question answering (SQuAD v1.1 and v2.0): the answer is a span of the context, found from
/// start and end logits over windows of the context, as Hugging Face's <c>run_qa.py</c> trains and predicts.
/// </summary>
/// <remarks>
/// <para>Input columns (the names are those of <see cref="SquadDataLoaderExtensions.LoadFromSquadJson"/>'s rows):</para>
/// <list type="table">
/// <listheader><term>Column</term><description>Type and use</description></listheader>
/// <item><term><see cref="ContextColumnName"/></term><description>text: the paragraph the answer is taken from (training and scoring)</description></item>
/// <item><term><see cref="QuestionColumnName"/></term><description>text: the question (training and scoring); leading whitespace is dropped, as run_qa.py does</description></item>
/// <item><term><see cref="AnswerTextColumnName"/></term><description>text: the gold answer, "" when there is none (training)</description></item>
/// <item><term><see cref="AnswerStartColumnName"/></term><description>Int32: where the gold answer starts in the context (UTF-16 index), -1 when there is none (training)</description></item>
/// <item><term><see cref="IsImpossibleColumnName"/></term><description>Boolean, optional: SQuAD v2.0's is_impossible (training)</description></item>
/// <item><term><see cref="IdColumnName"/>, <see cref="AllAnswersColumnName"/></term><description>text and vector of text, optional: question ids and every gold answer, for the validation metric (SQuAD F1 on <see cref="FineTuneOptions.ValidationSet"/>)</description></item>
/// </list>
/// <para>Output columns added by the fitted transformer:</para>
/// <list type="table">
/// <listheader><term>Column</term><description>Type and meaning</description></listheader>
/// <item><term><see cref="PredictedAnswerColumnName"/> ("Answer")</term><description>text: the answer, "" for no answer</description></item>
/// <item><term><see cref="PredictedAnswerStartColumnName"/> ("AnswerStart")</term><description>Int32: the answer's start in the context (UTF-16 index), -1 for no answer</description></item>
/// <item><term><see cref="ScoreColumnName"/> ("Score")</term><description>Single: start logit + end logit of the answer's span (of the no-answer position when the answer is "")</description></item>
/// <item><term><see cref="NoAnswerScoreColumnName"/> ("NoAnswerScore")</term><description>Single, SQuAD v2.0 models only: the no-answer score minus the best span's score; the answer is "" when it exceeds <see cref="NullScoreDifferenceThreshold"/></description></item>
/// </list>
/// <para>
/// The predicted start's default name equals the gold start's, as the library's contract promises
/// (<c>Answer</c>, <c>AnswerStart</c>, <c>Score</c>): scoring a data view that has a gold <c>AnswerStart</c> hides it
/// behind the prediction, as ML.NET transforms that reuse a column name do. SQuAD scoring needs only the answer texts
/// (<c>AllAnswers</c>, <c>AnswerText</c>), so evaluation is unaffected; set <see cref="PredictedAnswerStartColumnName"/>
/// to another name (e.g. "PredictedAnswerStart") to keep both visible.
/// </para>
/// </remarks>
public sealed record QuestionAnsweringOptions : FineTuneOptions
{
    /// <summary>Creates the options with run_qa.py's defaults (384 tokens per window, stride 128).</summary>
    public QuestionAnsweringOptions()
    {
        MaxSequenceLength = 384;
    }

    /// <summary>The context (paragraph) column. Default "Context".</summary>
    public string ContextColumnName { get; set; } = "Context";

    /// <summary>The question column. Default "Question".</summary>
    public string QuestionColumnName { get; set; } = "Question";

    /// <summary>The gold answer text column, read when training. Default "AnswerText".</summary>
    public string AnswerTextColumnName { get; set; } = "AnswerText";

    /// <summary>
    /// The gold answer start column (Int32, UTF-16 index into the context; negative when there is no answer), read
    /// when training. Default "AnswerStart".
    /// </summary>
    public string AnswerStartColumnName { get; set; } = "AnswerStart";

    /// <summary>
    /// The Boolean column marking unanswerable questions (SQuAD v2.0), read when training; null when the data has no
    /// such column. A row without a gold answer (start negative or text "") is unanswerable either way.
    /// Default "IsImpossible".
    /// </summary>
    public string? IsImpossibleColumnName { get; set; } = "IsImpossible";

    /// <summary>
    /// The question id column (text), optional: names the questions in the validation metric and in errors; rows are
    /// numbered when the data has no such column. Default "Id".
    /// </summary>
    public string IdColumnName { get; set; } = "Id";

    /// <summary>
    /// The column of every gold answer (vector of text, as <see cref="SquadDataLoaderExtensions.LoadFromSquadJson"/>
    /// gives it), optional: the validation F1 takes the best over these, as the SQuAD scripts do; without it the
    /// validation F1 compares with <see cref="AnswerTextColumnName"/> alone. Default "AllAnswers".
    /// </summary>
    public string AllAnswersColumnName { get; set; } = "AllAnswers";

    /// <summary>
    /// Context tokens shared by consecutive windows when a context does not fit in
    /// <see cref="FineTuneOptions.MaxSequenceLength"/> with its question (run_qa.py's <c>doc_stride</c>); must be
    /// smaller than the context tokens per window. Default 128.
    /// </summary>
    public int DocStride { get; set; } = 128;

    /// <summary>The longest answer predicted, in tokens (run_qa.py's <c>max_answer_length</c>). Default 30.</summary>
    public int MaxAnswerLength { get; set; } = 30;

    /// <summary>
    /// Start and end positions considered per window: the highest start logits and the highest end logits
    /// (run_qa.py's <c>n_best_size</c>); also the number of candidate answers kept per question. Default 20.
    /// </summary>
    public int NBest { get; set; } = 20;

    /// <summary>
    /// SQuAD v2.0: the answer is "" when the no-answer score minus the best span's score exceeds this (run_qa.py's
    /// <c>null_score_diff_threshold</c>). Default 0.
    /// </summary>
    public double NullScoreDifferenceThreshold { get; set; }

    /// <summary>
    /// Whether questions may have no answer (SQuAD v2.0): unanswerable questions train towards the first token
    /// ([CLS]) and prediction may answer "". Null (default) decides from the training data: true when any question
    /// is unanswerable.
    /// </summary>
    public bool? VersionTwoWithNegative { get; set; }

    /// <summary>The output answer column (text, "" for no answer). Default "Answer".</summary>
    public string PredictedAnswerColumnName { get; set; } = "Answer";

    /// <summary>
    /// The output answer start column (Int32, UTF-16 index into the context, -1 for no answer). Default
    /// "AnswerStart", which hides a gold column of that name in the scored data (see the remarks).
    /// </summary>
    public string PredictedAnswerStartColumnName { get; set; } = "AnswerStart";

    /// <summary>The output score column (Single: the answer's start logit + end logit). Default "Score".</summary>
    public string ScoreColumnName { get; set; } = "Score";

    /// <summary>
    /// The output no-answer score column of SQuAD v2.0 models (Single: the no-answer score minus the best span's
    /// score, BERT's "null odds"). <c>mlContext.FineTune().EvaluateQuestionAnswering</c> feeds it to the official
    /// best-threshold search; a better threshold found there is applied with
    /// <c>QuestionAnsweringTransformer.WithNullScoreDifferenceThreshold</c>. Default "NoAnswerScore".
    /// </summary>
    public string NoAnswerScoreColumnName { get; set; } = "NoAnswerScore";

    /// <summary>
    /// How contexts are cut into windows. <see cref="ContextWindowing.WholeContext"/> covers every context token;
    /// <see cref="ContextWindowing.Tokenizers023"/> reproduces a tokenizers 0.23 bug that drops the end of long
    /// contexts and exists only for parity checks.
    /// </summary>
    internal ContextWindowing ContextWindowing { get; set; } = ContextWindowing.WholeContext;
}
