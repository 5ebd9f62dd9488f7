namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>One candidate answer of a question.</summary>
/// <param name="Text">The answer text (a slice of the context); "" for the no-answer candidate.</param>
/// <param name="Start">The answer's start in the context (UTF-16 index); -1 for the no-answer candidate.</param>
/// <param name="StartLogit">The start logit of the span's first token (of [CLS] for no answer).</param>
/// <param name="EndLogit">The end logit of the span's last token (of [CLS] for no answer).</param>
/// <param name="Probability">Softmax of the candidates' scores over the kept candidates.</param>
/// <param name="IsNoAnswer">True for the no-answer candidate (SQuAD v2.0) and for the empty stand-in used when no span is valid.</param>
internal sealed record QaCandidate(string Text, int Start, float StartLogit, float EndLogit, float Probability, bool IsNoAnswer)
{
    /// <summary>Start logit + end logit: the candidate's score.</summary>
    public float Score => StartLogit + EndLogit;
}

/// <summary>The prediction for one question.</summary>
/// <param name="Answer">The answer text; "" for no answer.</param>
/// <param name="AnswerStart">The answer's start in the context (UTF-16 index); -1 for no answer.</param>
/// <param name="Score">Start logit + end logit of the chosen candidate (the no-answer score when the answer is "").</param>
/// <param name="Probability">The chosen candidate's probability among <paramref name="Candidates"/>.</param>
/// <param name="NoAnswerScore">
/// SQuAD v2.0 only (else null): the no-answer score minus the best non-empty span's score (BERT's "null odds");
/// the answer is "" when it exceeds the threshold.
/// </param>
/// <param name="Candidates">The n-best candidates, best first (the no-answer candidate included for v2.0).</param>
internal sealed record QaPrediction(string Answer, int AnswerStart, float Score, float Probability, float? NoAnswerScore,
    IReadOnlyList<QaCandidate> Candidates);

/// <summary>
/// Turns start and end logits over all windows of a question into an answer, as Hugging Face's
/// <c>postprocess_qa_predictions</c> (utils_qa.py) does.
/// </summary>
/// <remarks>
/// <para>
/// Per window, the <c>NBest</c> highest start logits and the <c>NBest</c> highest end logits over all of the window's
/// positions (question, special tokens and padding included, so they can crowd out context positions as in Hugging
/// Face) are paired; a pair is a candidate when both positions are context tokens, the end is not before the start,
/// and the span has at most <c>MaxAnswerLength</c> tokens. Its score is start logit + end logit and its text
/// <c>context[start of first token .. end of last token]</c>. Ties between equal logits go to the lower position.
/// </para>
/// <para>
/// SQuAD v2.0: the no-answer score is [CLS]'s start + end logit, the smallest over the windows. It joins the
/// candidates; the candidates are sorted by score (stable) and the best <c>NBest</c> kept, the no-answer candidate
/// added back if it fell off. The answer is "" when no-answer score minus the best non-empty candidate's score
/// exceeds the threshold, else that candidate. v1.1: the best candidate.
/// </para>
/// <para>
/// When no span is valid, Hugging Face answers the literal text "empty" (score 0); here the stand-in answers ""
/// with start -1 and the same score 0, so v1.1 metrics are equal and no made-up text reaches users.
/// </para>
/// </remarks>
internal sealed class QaPostProcessor
{
    /// <summary>Creates a post-processor.</summary>
    /// <param name="nBest">Start and end positions considered per window, and candidates kept (n_best_size).</param>
    /// <param name="maxAnswerLength">The longest answer, in tokens (max_answer_length).</param>
    /// <param name="versionTwoWithNegative">Whether "" (no answer) may be predicted (SQuAD v2.0).</param>
    /// <param name="nullScoreDifferenceThreshold">v2.0: answer "" when no-answer score minus best span score exceeds this.</param>
    /// <exception cref="ArgumentOutOfRangeException">nBest or maxAnswerLength is not positive.</exception>
    public QaPostProcessor(int nBest = 20, int maxAnswerLength = 30, bool versionTwoWithNegative = false, double nullScoreDifferenceThreshold = 0.0)
    {
        if (nBest <= 0) throw new ArgumentOutOfRangeException(nameof(nBest), nBest, "NBest must be positive.");
        if (maxAnswerLength <= 0) throw new ArgumentOutOfRangeException(nameof(maxAnswerLength), maxAnswerLength, "MaxAnswerLength must be positive.");
        NBest = nBest;
        MaxAnswerLength = maxAnswerLength;
        VersionTwoWithNegative = versionTwoWithNegative;
        NullScoreDifferenceThreshold = nullScoreDifferenceThreshold;
    }

    /// <summary>A post-processor with the settings of <paramref name="options"/>; <paramref name="versionTwoWithNegative"/>
    /// is the resolved <see cref="QuestionAnsweringOptions.VersionTwoWithNegative"/>.</summary>
    public static QaPostProcessor FromOptions(QuestionAnsweringOptions options, bool versionTwoWithNegative)
    {
        ArgumentNullException.ThrowIfNull(options);
        return new QaPostProcessor(options.NBest, options.MaxAnswerLength, versionTwoWithNegative, options.NullScoreDifferenceThreshold);
    }

    /// <summary>
    /// <see cref="QuestionAnsweringOptions.VersionTwoWithNegative"/> when set, else whether any training example is
    /// unanswerable.
    /// </summary>
    public static bool ResolveVersionTwo(bool? option, IEnumerable<QaExample> trainingExamples) =>
        option ?? trainingExamples.Any(e => !e.HasAnswer);

    /// <summary>Start and end positions considered per window.</summary>
    public int NBest { get; }

    /// <summary>The longest answer, in tokens.</summary>
    public int MaxAnswerLength { get; }

    /// <summary>Whether "" may be predicted.</summary>
    public bool VersionTwoWithNegative { get; }

    /// <summary>The no-answer threshold on (no-answer score - best span score).</summary>
    public double NullScoreDifferenceThreshold { get; }

    /// <summary>The answer to one question from the logits of all its windows.</summary>
    /// <param name="context">The question's context.</param>
    /// <param name="windows">The question's windows, from <see cref="QaFeaturizer"/>.</param>
    /// <param name="startLogits">One array per window; positions past the window's length (batch padding) are ignored.</param>
    /// <param name="endLogits">As <paramref name="startLogits"/>.</param>
    /// <exception cref="ArgumentException">The counts of windows and logit arrays differ, a logit array is shorter than its window, or there are no windows.</exception>
    public QaPrediction Predict(string context, IReadOnlyList<QaFeature> windows, IReadOnlyList<float[]> startLogits, IReadOnlyList<float[]> endLogits)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(windows);
        ArgumentNullException.ThrowIfNull(startLogits);
        ArgumentNullException.ThrowIfNull(endLogits);
        if (windows.Count == 0)
            throw new ArgumentException("A question needs at least one window to predict from.", nameof(windows));
        if (startLogits.Count != windows.Count || endLogits.Count != windows.Count)
            throw new ArgumentException(
                $"{windows.Count} windows but {startLogits.Count} start and {endLogits.Count} end logit arrays.", nameof(startLogits));

        var spans = new List<Span>();
        Span? noAnswer = null;
        for (int w = 0; w < windows.Count; w++)
        {
            var window = windows[w];
            var start = startLogits[w];
            var end = endLogits[w];
            if (start.Length < window.Length || end.Length < window.Length)
                throw new ArgumentException(
                    $"Window {w} of question '{window.ExampleId}' has {window.Length} positions but {start.Length} start and {end.Length} end logits.",
                    nameof(startLogits));

            // The smallest [CLS] score over windows: the window most sure there is an answer decides.
            int cls = window.ClsIndex;
            float windowNull = start[cls] + end[cls];
            if (noAnswer is null || noAnswer.Value.Score > windowNull)
                noAnswer = new Span(SpanKind.NoAnswer, 0, 0, start[cls], end[cls]);

            var offsets = window.ContextOffsets;
            var ends = TopPositions(end, window.Length, NBest);
            foreach (int s in TopPositions(start, window.Length, NBest))
            {
                if (offsets[s] is not { } first) continue;
                foreach (int e in ends)
                {
                    if (offsets[e] is not { } last || e < s || e - s + 1 > MaxAnswerLength) continue;
                    spans.Add(new Span(SpanKind.Text, first.Start, last.End, start[s], end[e]));
                }
            }
        }

        if (VersionTwoWithNegative) spans.Add(noAnswer!.Value);
        // Stable sort by score, best first (Python's sorted(..., reverse=True) keeps equal scores in order).
        var ranked = spans.Select((span, order) => (span, order))
            .OrderByDescending(x => x.span.Score).ThenBy(x => x.order)
            .Take(NBest).Select(x => x.span).ToList();
        if (VersionTwoWithNegative && !ranked.Contains(noAnswer!.Value)) ranked.Add(noAnswer.Value);

        // No candidate with text: Hugging Face's stand-in ("empty", logits 0) goes first.
        bool noText = !ranked.Any(c => c.HasText);
        if (noText) ranked.Insert(0, new Span(SpanKind.Empty, 0, 0, 0f, 0f));

        // Softmax over the kept candidates' scores.
        float maxScore = ranked.Max(c => c.Score);
        var weights = ranked.Select(c => Math.Exp(c.Score - maxScore)).ToArray();
        double total = weights.Sum();
        var candidates = ranked.Select((c, i) => new QaCandidate(
            c.HasText ? context[c.CharStart..c.CharEnd] : "",
            c.HasText ? c.CharStart : -1,
            c.StartLogit, c.EndLogit, (float)(weights[i] / total), IsNoAnswer: c.Kind != SpanKind.Text)).ToList();

        if (!VersionTwoWithNegative)
            return Choose(candidates[0], noAnswerScore: null, candidates);

        // The best candidate with text, or the stand-in when there is none (as "empty" is in Hugging Face).
        int best = noText ? 0 : ranked.FindIndex(c => c.HasText);
        float difference = noAnswer!.Value.Score - ranked[best].StartLogit - ranked[best].EndLogit;
        return difference > NullScoreDifferenceThreshold
            ? Choose(candidates[ranked.IndexOf(noAnswer.Value)], difference, candidates)
            : Choose(candidates[best], difference, candidates);
    }

    private static QaPrediction Choose(QaCandidate chosen, float? noAnswerScore, List<QaCandidate> candidates) =>
        new(chosen.Text, chosen.Start, chosen.Score, chosen.Probability, noAnswerScore, candidates);

    /// <summary>
    /// The positions of the <paramref name="count"/> largest values among the first <paramref name="length"/>, largest
    /// first; equal values in position order.
    /// </summary>
    internal static int[] TopPositions(float[] logits, int length, int count)
    {
        count = Math.Min(count, length);
        var top = new int[count];
        int filled = 0;
        for (int i = 0; i < length; i++)
        {
            float value = logits[i];
            // Insertion into a short sorted list: n-best is small (20) against the window (384).
            if (filled == count && !(value > logits[top[filled - 1]])) continue;
            int at = filled == count ? filled - 1 : filled++;
            while (at > 0 && value > logits[top[at - 1]])
            {
                top[at] = top[at - 1];
                at--;
            }
            top[at] = i;
        }
        return top;
    }

    private enum SpanKind { Text, NoAnswer, Empty }

    /// <summary>A candidate as character offsets into the context with its logits.</summary>
    private readonly record struct Span(SpanKind Kind, int CharStart, int CharEnd, float StartLogit, float EndLogit)
    {
        public float Score => StartLogit + EndLogit;

        // A span of zero-width tokens has no text either; Hugging Face skips it as it skips the no-answer candidate.
        public bool HasText => Kind == SpanKind.Text && CharEnd > CharStart;
    }
}
