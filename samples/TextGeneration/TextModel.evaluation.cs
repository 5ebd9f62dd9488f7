using System.Globalization;
using Microsoft.ML;
using MLNet.FineTune;
using MLNet.FineTune.Tasks.CausalLM;

namespace TextGeneration;

public static partial class TextModel
{
    /// <summary>Mean token loss, perplexity and token accuracy on <paramref name="data"/>, over the tokens training
    /// scores (every token of a text, the completion of a prompt/completion row).</summary>
    public static CausalLMMetrics Evaluate(MLContext mlContext, CausalLMTransformer model, IDataView data) =>
        mlContext.FineTune().EvaluateCausalLM(data, model);

    /// <summary>Prints before/after metrics side by side.</summary>
    public static void PrintComparison(string title, CausalLMMetrics before, CausalLMMetrics after, TextWriter? writer = null)
    {
        writer ??= Console.Out;
        string F(double v) => v.ToString("F3", CultureInfo.InvariantCulture);
        writer.WriteLine();
        writer.WriteLine($"  {title} ({after.TokenCount} scored tokens)");
        writer.WriteLine("  | metric          | before   | after    | change  |");
        writer.WriteLine("  |-----------------|----------|----------|---------|");
        writer.WriteLine($"  | perplexity      | {F(before.Perplexity),8} | {F(after.Perplexity),8} | {(after.Perplexity / before.Perplexity - 1).ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture),7} |");
        writer.WriteLine($"  | mean token loss | {F(before.MeanTokenLoss),8} | {F(after.MeanTokenLoss),8} |         |");
        writer.WriteLine($"  | token accuracy  | {F(before.TokenAccuracy),8} | {F(after.TokenAccuracy),8} |         |");
    }
}
