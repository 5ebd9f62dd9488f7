using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace SentimentAnalysis;

public static partial class SentimentModel
{
    /// <summary>Scores <paramref name="testData"/> and computes ML.NET's binary-classification metrics.</summary>
    public static CalibratedBinaryClassificationMetrics Evaluate(MLContext mlContext, ITransformer model, IDataView testData) =>
        mlContext.BinaryClassification.Evaluate(model.Transform(testData), labelColumnName: LabelColumn);

    /// <summary>Prints the metrics as a table, with the confusion matrix.</summary>
    public static void PrintMetrics(string title, CalibratedBinaryClassificationMetrics m, TextWriter? writer = null)
    {
        writer ??= Console.Out;
        string F(double v) => v.ToString("F4", CultureInfo.InvariantCulture);
        writer.WriteLine();
        writer.WriteLine($"  {title}");
        writer.WriteLine("  | metric            | value  |");
        writer.WriteLine("  |-------------------|--------|");
        writer.WriteLine($"  | accuracy          | {F(m.Accuracy)} |");
        writer.WriteLine($"  | F1                | {F(m.F1Score)} |");
        writer.WriteLine($"  | AUC (ROC)         | {F(m.AreaUnderRocCurve)} |");
        writer.WriteLine($"  | AUC (prec-recall) | {F(m.AreaUnderPrecisionRecallCurve)} |");
        writer.WriteLine($"  | precision (pos)   | {F(m.PositivePrecision)} |");
        writer.WriteLine($"  | recall (pos)      | {F(m.PositiveRecall)} |");
        writer.WriteLine($"  | log-loss          | {F(m.LogLoss)} |");
        writer.WriteLine(m.ConfusionMatrix.GetFormattedConfusionTable());
    }
}
