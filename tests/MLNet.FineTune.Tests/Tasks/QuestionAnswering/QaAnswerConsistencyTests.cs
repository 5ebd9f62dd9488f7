using Microsoft.ML;

using static MLNet.FineTune.Tests.Tasks.QuestionAnswering.QaTrainingRows;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// A training row that contradicts itself used to train silently as "no answer" and switch the whole model to SQuAD
/// v2.0 (no-answer prediction): AnswerStart -1 with a non-empty answer text, or IsImpossible = true with an answer.
/// Both are named errors; v2.0 comes only from rows without answer text or from VersionTwoWithNegative.
/// </summary>
[TestClass]
public sealed class QaAnswerConsistencyTests
{

    [TestMethod]
    public void AnAnswerTextWithAnswerStartMinusOne_IsNamed()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(4);
        rows[2].AnswerStart = -1;
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(rows)),
            "Row 2 (question 'q2') of the training data", "'AnswerStart' = -1", "\"Oslo\"", "'AnswerText'");
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options(ml.Data.LoadFromEnumerable(rows))).Fit(ml.Data.LoadFromEnumerable(Rows(4))),
            "Row 2 (question 'q2') of the validation data");
    }

    [TestMethod]
    public void IsImpossibleWithAnAnswer_IsNamed()
    {
        var ml = new MLContext(seed: 1);
        var rows = Rows(4);
        rows[1].IsImpossible = true;
        NamedErrors.Expect<InvalidDataException>(() => ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(rows)),
            "Row 1 (question 'q1') of the training data", "'IsImpossible'", "\"Oslo\"");
    }

    [TestMethod]
    public void VersionTwoModeComesFromRowsWithoutAnswerText_AndTheLogSaysSo()
    {
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info) lock (log) log.Add(e.RawMessage); };
        var rows = Rows(4);
        (rows[3].AnswerText, rows[3].AnswerStart, rows[3].IsImpossible) = ("", -1, true);
        var model = ml.FineTune().Lora(Options()).Fit(ml.Data.LoadFromEnumerable(rows));
        var line = log.FirstOrDefault(l => l.Contains("SQuAD v2.0", StringComparison.Ordinal));
        Console.WriteLine(line ?? "(no line)");
        Assert.IsNotNull(line, "the training log states why the model predicts no-answer");
        StringAssert.Contains(line, "1 of 4");
    }
}
