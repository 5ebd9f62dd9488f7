namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>One question to featurize: the text inputs, plus the gold answer when training.</summary>
/// <param name="Id">The question id (kept on every window, so predictions can be grouped back).</param>
/// <param name="Question">The question text.</param>
/// <param name="Context">The paragraph the answer comes from.</param>
/// <param name="AnswerText">The gold answer text; null or "" when there is none or when only predicting.</param>
/// <param name="AnswerStart">The gold answer's start in <paramref name="Context"/> (UTF-16 index); negative when there is none.</param>
/// <param name="IsImpossible">SQuAD v2.0's is_impossible: the question has no answer in the context.</param>
internal sealed record QaExample(string Id, string Question, string Context, string? AnswerText = null, int AnswerStart = -1, bool IsImpossible = false)
{
    /// <summary>True when the example carries a usable gold answer: not impossible, a start, and non-empty text.</summary>
    public bool HasAnswer => !IsImpossible && AnswerStart >= 0 && !string.IsNullOrEmpty(AnswerText);
}

/// <summary>
/// One window of a question and its context as the model sees it (run_qa.py's feature): token inputs, the offsets
/// of the context tokens, and the training labels.
/// </summary>
/// <remarks>
/// Every array has one entry per position (<see cref="Length"/>), padding included when the featurizer pads.
/// </remarks>
internal sealed class QaFeature
{
    internal QaFeature(int exampleIndex, string exampleId, int windowIndex, int[] inputIds, int[] tokenTypeIds, int[] attentionMask,
        (int Start, int End)?[] contextOffsets, int clsIndex, int startPosition, int endPosition)
    {
        ExampleIndex = exampleIndex;
        ExampleId = exampleId;
        WindowIndex = windowIndex;
        InputIds = inputIds;
        TokenTypeIds = tokenTypeIds;
        AttentionMask = attentionMask;
        ContextOffsets = contextOffsets;
        ClsIndex = clsIndex;
        StartPosition = startPosition;
        EndPosition = endPosition;
    }

    /// <summary>The position of the example in the sequence the caller featurized (run_qa.py's overflow_to_sample_mapping).</summary>
    public int ExampleIndex { get; }

    /// <summary>The example's question id (run_qa.py's <c>example_id</c>).</summary>
    public string ExampleId { get; }

    /// <summary>0-based index of this window among its example's windows.</summary>
    public int WindowIndex { get; }

    /// <summary>Token ids: [CLS] question [SEP] context window [SEP] for BERT-style tokenizers.</summary>
    public int[] InputIds { get; }

    /// <summary>Segment ids (token_type_ids).</summary>
    public int[] TokenTypeIds { get; }

    /// <summary>1 for real tokens, 0 for padding.</summary>
    public int[] AttentionMask { get; }

    /// <summary>
    /// (start, end) UTF-16 offsets into the context of each context token, null for question tokens, special tokens
    /// and padding (run_qa.py's evaluation offset_mapping): an answer may only start and end where this is set.
    /// </summary>
    public (int Start, int End)?[] ContextOffsets { get; }

    /// <summary>The position of the classification token ([CLS]): the no-answer label and the no-answer score's position.</summary>
    public int ClsIndex { get; }

    /// <summary>Training label: the answer's first token, or <see cref="ClsIndex"/> when this window lacks the whole answer or there is none.</summary>
    public int StartPosition { get; }

    /// <summary>Training label: the answer's last token (inclusive), or <see cref="ClsIndex"/> as for <see cref="StartPosition"/>.</summary>
    public int EndPosition { get; }

    /// <summary>Number of positions.</summary>
    public int Length => InputIds.Length;

    /// <summary>True when the labels point at an answer span in this window (not at [CLS]).</summary>
    public bool ContainsAnswer => StartPosition != ClsIndex || EndPosition != ClsIndex;
}
