namespace MLNet.FineTune;

/// <summary>Which official SQuAD evaluation script <see cref="SquadEvaluator"/> reproduces.</summary>
public enum SquadVersion
{
    /// <summary>
    /// <see cref="V2"/> when any question has no gold answer or is marked impossible, or when no-answer
    /// probabilities are given; otherwise <see cref="V1"/>.
    /// </summary>
    Auto = 0,

    /// <summary>evaluate-v1.1.py: <c>exact_match</c> and <c>f1</c>; every question needs a gold answer.</summary>
    V1 = 1,

    /// <summary>
    /// evaluate-v2.0.py: <c>exact</c>, <c>f1</c>, <c>total</c>, the HasAns/NoAns splits and, with no-answer
    /// probabilities, <c>best_exact</c>/<c>best_f1</c> and their thresholds.
    /// </summary>
    V2 = 2,
}
