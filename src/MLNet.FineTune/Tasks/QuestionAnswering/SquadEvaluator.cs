using MLNet.FineTune.Tasks.QuestionAnswering;

namespace MLNet.FineTune;

/// <summary>
/// Scores extractive question answering predictions exactly as the official SQuAD scripts do
/// (evaluate-v1.1.py and evaluate-v2.0.py from the SQuAD explorer).
/// </summary>
/// <remarks>
/// Both scripts normalise answers the same way (<see cref="NormalizeAnswer"/>) and take, per question, the best
/// exact match and token F1 over its gold answers. They differ where an answer is empty: v1.1 gives F1 0 when there is
/// no common token, also when both sides are empty, and needs a gold answer for every question; v2.0 drops gold answers
/// that normalise to "", uses [""] when none is left, and gives F1 1 when both token lists are empty and 0 when only one
/// is. v2.0 also reports the HasAns/NoAns splits and, given no-answer probabilities, the best thresholds.
/// <para>
/// A question without a prediction scores 0 and stays in every total, as in v1.1 (where the script prints
/// "Unanswered question ... will receive score 0."); its id is listed in
/// <see cref="QuestionAnsweringMetrics.UnansweredQuestionIds"/>. (The v2.0 script cannot score such a dataset: it
/// stops with a KeyError.) Predictions for ids outside the dataset are ignored, as in both scripts.
/// </para>
/// </remarks>
public static class SquadEvaluator
{
    /// <summary>
    /// Scores <paramref name="predictions"/> (question id to answer text, "" meaning "no answer") against
    /// <paramref name="dataset"/>.
    /// </summary>
    /// <param name="dataset">The gold questions, e.g. from <see cref="SquadJson.Read"/>.</param>
    /// <param name="predictions">Question id to predicted answer text.</param>
    /// <param name="noAnswerProbabilities">
    /// v2.0 only (the script's <c>--na-prob-file</c>): question id to the model's probability that there is no answer.
    /// When given, every predicted question needs one, and the best exact/F1 and their thresholds are computed.
    /// Ties are broken in the dictionary's enumeration order, as the script breaks them in the file's order.
    /// </param>
    /// <param name="version">Which script to reproduce; <see cref="SquadVersion.Auto"/> picks v2.0 when any question
    /// has no gold answer or is impossible, or when <paramref name="noAnswerProbabilities"/> is given.</param>
    /// <param name="noAnswerProbabilityThreshold">
    /// v2.0 only (<c>--na-prob-thresh</c>, default 1.0): a question whose no-answer probability exceeds it is taken as
    /// answered "".
    /// </param>
    /// <exception cref="ArgumentException">The dataset is empty; a v1.1 question has no gold answer; a predicted question lacks a no-answer probability; or no-answer probabilities are given with <see cref="SquadVersion.V1"/>.</exception>
    public static QuestionAnsweringMetrics Evaluate(
        IReadOnlyList<SquadQuestion> dataset,
        IReadOnlyDictionary<string, string> predictions,
        IReadOnlyDictionary<string, double>? noAnswerProbabilities = null,
        SquadVersion version = SquadVersion.Auto,
        double noAnswerProbabilityThreshold = 1.0)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentNullException.ThrowIfNull(predictions);
        if (dataset.Count == 0)
            throw new ArgumentException("The SQuAD dataset has no questions to score.", nameof(dataset));

        if (version == SquadVersion.Auto)
            version = noAnswerProbabilities is not null || dataset.Any(q => q.IsImpossible || q.Answers.Count == 0)
                ? SquadVersion.V2
                : SquadVersion.V1;

        return version switch
        {
            SquadVersion.V1 when noAnswerProbabilities is not null => throw new ArgumentException(
                "No-answer probabilities apply to SQuAD v2.0 scoring only; v1.1 has no unanswerable questions.",
                nameof(noAnswerProbabilities)),
            SquadVersion.V1 => EvaluateV1(dataset, predictions),
            SquadVersion.V2 => EvaluateV2(dataset, predictions, noAnswerProbabilities, noAnswerProbabilityThreshold),
            _ => throw new ArgumentOutOfRangeException(nameof(version), version, "Unknown SQuAD version."),
        };
    }

    /// <summary>
    /// The official normalisation: lower case, no ASCII punctuation, no articles (a, an, the), single spaces.
    /// </summary>
    public static string NormalizeAnswer(string text) => SquadAnswerNormalizer.Normalize(text);

    /// <summary>Whether the two answers are equal after <see cref="NormalizeAnswer"/>.</summary>
    public static bool IsExactMatch(string prediction, string groundTruth) =>
        SquadAnswerNormalizer.Normalize(prediction) == SquadAnswerNormalizer.Normalize(groundTruth);

    /// <summary>
    /// Token F1 (0..1) of one prediction against one gold answer, with the empty-answer rule of
    /// <paramref name="version"/> (v1.1: 0 without a common token; v2.0: 1 when both are empty, 0 when one is).
    /// <see cref="SquadVersion.Auto"/> means v2.0.
    /// </summary>
    public static double F1Score(string prediction, string groundTruth, SquadVersion version = SquadVersion.V2)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        ArgumentNullException.ThrowIfNull(groundTruth);
        var predictionTokens = SquadAnswerNormalizer.Tokens(prediction);
        var goldTokens = SquadAnswerNormalizer.Tokens(groundTruth);
        if (version != SquadVersion.V1 && (predictionTokens.Length == 0 || goldTokens.Length == 0))
            return predictionTokens.Length == goldTokens.Length ? 1 : 0;   // both empty, or one empty

        var common = CommonTokenCount(predictionTokens, goldTokens);
        if (common == 0) return 0;
        var precision = 1.0 * common / predictionTokens.Length;
        var recall = 1.0 * common / goldTokens.Length;
        return 2 * precision * recall / (precision + recall);
    }

    private static QuestionAnsweringMetrics EvaluateV1(IReadOnlyList<SquadQuestion> dataset, IReadOnlyDictionary<string, string> predictions)
    {
        // Every question of the list counts, repeated ids included, as the script walks the file.
        double exactSum = 0, f1Sum = 0;
        var unanswered = new List<string>();
        foreach (var question in dataset)
        {
            if (!predictions.TryGetValue(question.Id, out var prediction))
            {
                unanswered.Add(question.Id);
                continue;
            }
            if (question.Answers.Count == 0)
                throw new ArgumentException(
                    $"Question '{question.Id}' has no gold answer; SQuAD v1.1 scoring needs one for every question " +
                    "(score SQuAD v2.0 data with SquadVersion.V2).", nameof(dataset));
            CheckPrediction(question.Id, prediction);

            double bestExact = 0, bestF1 = 0;
            foreach (var gold in question.Answers)
            {
                bestExact = Math.Max(bestExact, IsExactMatch(prediction, gold.Text) ? 1 : 0);
                bestF1 = Math.Max(bestF1, F1Score(prediction, gold.Text, SquadVersion.V1));
            }
            exactSum += bestExact;
            f1Sum += bestF1;
        }

        var total = dataset.Count;
        return new QuestionAnsweringMetrics(SquadVersion.V1, 100.0 * exactSum / total, 100.0 * f1Sum / total, total)
        {
            UnansweredQuestionIds = unanswered,
        };
    }

    private static QuestionAnsweringMetrics EvaluateV2(
        IReadOnlyList<SquadQuestion> dataset,
        IReadOnlyDictionary<string, string> predictions,
        IReadOnlyDictionary<string, double>? noAnswerProbabilities,
        double threshold)
    {
        // The script keys everything by id: a repeated id keeps its first position and its last record.
        var questions = new Dictionary<string, SquadQuestion>(StringComparer.Ordinal);
        var ids = new List<string>();
        foreach (var question in dataset)
        {
            if (!questions.ContainsKey(question.Id)) ids.Add(question.Id);
            questions[question.Id] = question;
        }

        var exactRaw = new Dictionary<string, double>(StringComparer.Ordinal);
        var f1Raw = new Dictionary<string, double>(StringComparer.Ordinal);
        var unanswered = new List<string>();
        foreach (var id in ids)
        {
            if (!predictions.TryGetValue(id, out var prediction))
            {
                unanswered.Add(id);
                continue;
            }
            CheckPrediction(id, prediction);
            var golds = questions[id].Answers.Select(a => a.Text).Where(t => SquadAnswerNormalizer.Normalize(t).Length > 0).ToList();
            if (golds.Count == 0) golds.Add("");   // unanswerable: the only right answer is ""
            exactRaw[id] = golds.Max(g => IsExactMatch(prediction, g) ? 1.0 : 0.0);
            f1Raw[id] = golds.Max(g => F1Score(prediction, g, SquadVersion.V2));
        }

        // A predicted no-answer (probability above the threshold) is right exactly when there is no gold answer.
        var exactFinal = new Dictionary<string, double>(StringComparer.Ordinal);
        var f1Final = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var id in exactRaw.Keys)
        {
            var predictsNoAnswer = NoAnswerProbability(noAnswerProbabilities, id) > threshold;
            var noAnswerScore = HasAnswer(questions[id]) ? 0.0 : 1.0;
            exactFinal[id] = predictsNoAnswer ? noAnswerScore : exactRaw[id];
            f1Final[id] = predictsNoAnswer ? noAnswerScore : f1Raw[id];
        }

        (double Best, double Threshold)? bestExact = null, bestF1 = null;
        if (noAnswerProbabilities is not null)
        {
            bestExact = FindBestThreshold(predictions, exactRaw, noAnswerProbabilities, questions, ids.Count);
            bestF1 = FindBestThreshold(predictions, f1Raw, noAnswerProbabilities, questions, ids.Count);
        }

        var hasAnsIds = ids.Where(id => HasAnswer(questions[id])).ToList();
        var noAnsIds = ids.Where(id => !HasAnswer(questions[id])).ToList();
        return new QuestionAnsweringMetrics(SquadVersion.V2, Percent(exactFinal, ids), Percent(f1Final, ids), ids.Count)
        {
            HasAnsExact = hasAnsIds.Count > 0 ? Percent(exactFinal, hasAnsIds) : null,
            HasAnsF1 = hasAnsIds.Count > 0 ? Percent(f1Final, hasAnsIds) : null,
            HasAnsTotal = hasAnsIds.Count > 0 ? hasAnsIds.Count : null,
            NoAnsExact = noAnsIds.Count > 0 ? Percent(exactFinal, noAnsIds) : null,
            NoAnsF1 = noAnsIds.Count > 0 ? Percent(f1Final, noAnsIds) : null,
            NoAnsTotal = noAnsIds.Count > 0 ? noAnsIds.Count : null,
            BestExact = bestExact?.Best,
            BestExactThreshold = bestExact?.Threshold,
            BestF1 = bestF1?.Best,
            BestF1Threshold = bestF1?.Threshold,
            UnansweredQuestionIds = unanswered,
        };

        double NoAnswerProbability(IReadOnlyDictionary<string, double>? probabilities, string id)
        {
            if (probabilities is null) return 0.0;   // the script's default: 0.0 for every prediction
            if (!probabilities.TryGetValue(id, out var p))
                throw new ArgumentException($"No no-answer probability for question '{id}', which has a prediction.", nameof(noAnswerProbabilities));
            return p;
        }
    }

    /// <summary>
    /// evaluate-v2.0.py's find_best_thresh: start from "answer nothing" (every no-answer question right), then walk the
    /// questions by rising no-answer probability, letting each one answer; the best running score and the probability
    /// where it was reached are the result. Answering gains the raw score on a has-answer question and loses 1 on a
    /// no-answer question when the prediction is not "".
    /// </summary>
    private static (double Best, double Threshold) FindBestThreshold(
        IReadOnlyDictionary<string, string> predictions,
        Dictionary<string, double> rawScores,
        IReadOnlyDictionary<string, double> noAnswerProbabilities,
        Dictionary<string, SquadQuestion> questions,
        int total)
    {
        // Unanswered no-answer questions score 0, so they are not in the starting score.
        double current = rawScores.Keys.Count(id => !HasAnswer(questions[id]));
        var best = current;
        var bestThreshold = 0.0;
        // OrderBy is stable: ties keep the dictionary's order, as Python's sorted keeps the file's.
        foreach (var (id, probability) in noAnswerProbabilities.OrderBy(kv => kv.Value))
        {
            if (!rawScores.TryGetValue(id, out var raw)) continue;   // not in the dataset, or not predicted
            var diff = HasAnswer(questions[id]) ? raw : predictions[id].Length > 0 ? -1 : 0;
            current += diff;
            if (current > best)
            {
                best = current;
                bestThreshold = probability;
            }
        }
        return (100.0 * best / total, bestThreshold);
    }

    // The v2.0 script's qid_to_has_ans: the file lists at least one gold answer.
    private static bool HasAnswer(SquadQuestion question) => question.Answers.Count > 0;

    private static double Percent(Dictionary<string, double> scores, List<string> ids)
    {
        double sum = 0;
        foreach (var id in ids)
            if (scores.TryGetValue(id, out var score)) sum += score;   // unanswered: 0
        return 100.0 * sum / ids.Count;
    }

    private static int CommonTokenCount(string[] a, string[] b)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var token in a) counts[token] = counts.GetValueOrDefault(token) + 1;
        var common = 0;
        foreach (var token in b)
        {
            if (counts.TryGetValue(token, out var n) && n > 0)
            {
                counts[token] = n - 1;
                common++;
            }
        }
        return common;
    }

    private static void CheckPrediction(string id, string? prediction)
    {
        if (prediction is null)
            throw new ArgumentException($"The prediction for question '{id}' is null; use \"\" for no answer.", "predictions");
    }
}
