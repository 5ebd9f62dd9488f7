namespace MLNet.FineTune;

/// <summary>One gold answer of a SQuAD question.</summary>
/// <param name="Text">The answer text as the file has it.</param>
/// <param name="Start">
/// Where the answer starts in <see cref="SquadQuestion.Context"/>, in UTF-16 code units, so that
/// <c>Context.Substring(Start, Text.Length)</c> works in .NET. SQuAD files count Unicode code points (Python string
/// indices); the reader converts (they differ only when the context holds characters outside the BMP).
/// </param>
public readonly record struct SquadAnswer(string Text, int Start);

/// <summary>
/// One SQuAD question with its paragraph and gold answers, as <see cref="SquadJson.Read"/> returns it and
/// <see cref="SquadEvaluator.Evaluate"/> scores it.
/// </summary>
public sealed class SquadQuestion
{
    /// <summary>Creates a question record.</summary>
    /// <param name="id">The question id (the key of the predictions file).</param>
    /// <param name="title">The article title ("" when the file has none).</param>
    /// <param name="context">The paragraph the answer is extracted from.</param>
    /// <param name="question">The question text.</param>
    /// <param name="answers">The gold answers in file order, duplicates kept; empty for an unanswerable question.</param>
    /// <param name="isImpossible">SQuAD v2.0's <c>is_impossible</c>.</param>
    public SquadQuestion(string id, string title, string context, string question, IReadOnlyList<SquadAnswer> answers, bool isImpossible)
    {
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(answers);
        Id = id;
        Title = title ?? "";
        Context = context ?? "";
        Question = question ?? "";
        Answers = answers;
        IsImpossible = isImpossible;
    }

    /// <summary>The question id.</summary>
    public string Id { get; }

    /// <summary>The article title.</summary>
    public string Title { get; }

    /// <summary>The paragraph.</summary>
    public string Context { get; }

    /// <summary>The question text.</summary>
    public string Question { get; }

    /// <summary>All gold answers in file order (duplicates kept); empty when the question has no answer.</summary>
    public IReadOnlyList<SquadAnswer> Answers { get; }

    /// <summary>True when the question has no answer in the paragraph (SQuAD v2.0); false for SQuAD v1.1.</summary>
    public bool IsImpossible { get; }

    /// <summary>The first gold answer's text, or "" when there is none.</summary>
    public string AnswerText => Answers.Count > 0 ? Answers[0].Text : "";

    /// <summary>The first gold answer's start (UTF-16 index into <see cref="Context"/>), or -1 when there is none.</summary>
    public int AnswerStart => Answers.Count > 0 ? Answers[0].Start : -1;

    /// <inheritdoc/>
    public override string ToString() => $"{Id}: {Question} -> {(Answers.Count > 0 ? AnswerText : "<no answer>")}";
}
