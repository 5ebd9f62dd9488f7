using System.Globalization;
using System.Text;

namespace MLNet.FineTune;

/// <summary>
/// Extractive question answering metrics, as the official SQuAD scripts compute them. Scores are percentages
/// (0..100). Members that the chosen script does not report are null.
/// </summary>
public sealed class QuestionAnsweringMetrics
{
    internal QuestionAnsweringMetrics(SquadVersion version, double exactMatch, double f1, int total)
    {
        Version = version;
        ExactMatch = exactMatch;
        F1 = f1;
        Total = total;
    }

    /// <summary>Which script's rules produced these numbers (<see cref="SquadVersion.V1"/> or <see cref="SquadVersion.V2"/>).</summary>
    public SquadVersion Version { get; }

    /// <summary>Exact match, %: v1.1's <c>exact_match</c>, v2.0's <c>exact</c>.</summary>
    public double ExactMatch { get; }

    /// <summary>Token F1, %: <c>f1</c>.</summary>
    public double F1 { get; }

    /// <summary>Questions scored (v2.0's <c>total</c>); unanswered questions count, with score 0.</summary>
    public int Total { get; }

    /// <summary>v2.0 <c>HasAns_exact</c>: exact match on questions with a gold answer; null for v1.1 or when there are none.</summary>
    public double? HasAnsExact { get; internal init; }

    /// <summary>v2.0 <c>HasAns_f1</c>.</summary>
    public double? HasAnsF1 { get; internal init; }

    /// <summary>v2.0 <c>HasAns_total</c>.</summary>
    public int? HasAnsTotal { get; internal init; }

    /// <summary>v2.0 <c>NoAns_exact</c>: exact match on questions without a gold answer; null for v1.1 or when there are none.</summary>
    public double? NoAnsExact { get; internal init; }

    /// <summary>v2.0 <c>NoAns_f1</c> (equal to <see cref="NoAnsExact"/>: the only right answer is "").</summary>
    public double? NoAnsF1 { get; internal init; }

    /// <summary>v2.0 <c>NoAns_total</c>.</summary>
    public int? NoAnsTotal { get; internal init; }

    /// <summary>
    /// v2.0 <c>best_exact</c>: the exact match reached by answering "" whenever the no-answer probability exceeds
    /// the best threshold; null unless no-answer probabilities were given.
    /// </summary>
    public double? BestExact { get; internal init; }

    /// <summary>v2.0 <c>best_exact_thresh</c>: the no-answer probability threshold of <see cref="BestExact"/>.</summary>
    public double? BestExactThreshold { get; internal init; }

    /// <summary>v2.0 <c>best_f1</c>; null unless no-answer probabilities were given.</summary>
    public double? BestF1 { get; internal init; }

    /// <summary>
    /// v2.0 <c>best_f1_thresh</c>: answer "" when the no-answer probability exceeds this value (the official "best
    /// null threshold").
    /// </summary>
    public double? BestF1Threshold { get; internal init; }

    /// <summary>
    /// Questions of the dataset that had no prediction: each scored 0 (the official scripts print a message for each).
    /// </summary>
    public IReadOnlyList<string> UnansweredQuestionIds { get; internal init; } = [];

    /// <summary>
    /// The numbers under the official scripts' keys, in their order: v1.1 <c>exact_match</c>, <c>f1</c>; v2.0
    /// <c>exact</c>, <c>f1</c>, <c>total</c>, <c>HasAns_*</c>, <c>NoAns_*</c>, <c>best_*</c> (those that apply).
    /// </summary>
    public IReadOnlyDictionary<string, double> ToOfficialDictionary()
    {
        var result = new Dictionary<string, double>(StringComparer.Ordinal);
        if (Version == SquadVersion.V1)
        {
            result["exact_match"] = ExactMatch;
            result["f1"] = F1;
            return result;
        }
        result["exact"] = ExactMatch;
        result["f1"] = F1;
        result["total"] = Total;
        AddIfPresent(result, "HasAns_exact", HasAnsExact);
        AddIfPresent(result, "HasAns_f1", HasAnsF1);
        AddIfPresent(result, "HasAns_total", HasAnsTotal);
        AddIfPresent(result, "NoAns_exact", NoAnsExact);
        AddIfPresent(result, "NoAns_f1", NoAnsF1);
        AddIfPresent(result, "NoAns_total", NoAnsTotal);
        AddIfPresent(result, "best_exact", BestExact);
        AddIfPresent(result, "best_exact_thresh", BestExactThreshold);
        AddIfPresent(result, "best_f1", BestF1);
        AddIfPresent(result, "best_f1_thresh", BestF1Threshold);
        return result;

        static void AddIfPresent(Dictionary<string, double> d, string key, double? value)
        {
            if (value is { } v) d[key] = v;
        }
    }

    /// <inheritdoc/>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("SQuAD ").Append(Version == SquadVersion.V1 ? "v1.1" : "v2.0").Append(':');
        foreach (var (key, value) in ToOfficialDictionary())
            sb.Append(' ').Append(key).Append('=').Append(value.ToString("0.######", CultureInfo.InvariantCulture));
        if (UnansweredQuestionIds.Count > 0)
            sb.Append(" (").Append(UnansweredQuestionIds.Count).Append(" questions had no prediction and scored 0)");
        return sb.ToString();
    }
}
