using Microsoft.ML;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>
/// How well a causal language model predicts the target tokens of a data set (completion tokens, or every token of
/// text), with the masking of training.
/// </summary>
/// <param name="MeanTokenLoss">Mean cross-entropy per target token (nats): the training loss over the whole set.</param>
/// <param name="Perplexity">exp(MeanTokenLoss).</param>
/// <param name="TokenAccuracy">Fraction of target tokens that are the argmax of the model's prediction.</param>
/// <param name="TokenCount">Target tokens scored.</param>
public sealed record CausalLMMetrics(double MeanTokenLoss, double Perplexity, double TokenAccuracy, long TokenCount);

/// <summary>Sums losses and correct predictions over batches, then gives the metrics of the whole set (a mean over
/// tokens, not a mean of batch means).</summary>
internal sealed class CausalLMMetricsAccumulator
{
    private double _lossSum;
    private long _correct;
    private long _count;

    /// <summary>Adds one batch: logits (B, T, V) and unshifted labels (B, T) with -100 where nothing is scored.</summary>
    public void Add(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        var (sum, count) = CausalLMLoss.SumOverTargets(logits, labels);
        var (scores, targets) = CausalLMLoss.Shift(logits, labels);
        var scored = targets.ne(CausalLMLoss.IgnoreIndex);
        _lossSum += sum.to_type(ScalarType.Float64).item<double>();
        _correct += scores.argmax(-1).eq(targets).logical_and(scored).sum().item<long>();
        _count += count;
    }

    /// <summary>The metrics so far.</summary>
    /// <exception cref="InvalidOperationException">No target token was added.</exception>
    public CausalLMMetrics Result()
    {
        if (_count == 0) throw new InvalidOperationException("No target tokens were scored: every label is -100 (or no rows were given).");
        double mean = _lossSum / _count;
        return new CausalLMMetrics(mean, Math.Exp(mean), (double)_correct / _count, _count);
    }
}

/// <summary>Scores examples with a model in evaluation mode, batch by batch.</summary>
internal static class CausalLMEvaluation
{
    /// <summary>The metrics of a transformer on a data set with the columns it was trained on.</summary>
    internal static CausalLMMetrics Evaluate(IDataView data, CausalLMTransformer model, int? batchSize)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(model);
        var settings = model.SavedSettings;
        var examples = CausalLMColumns.From(settings).Read(data, model.Model.Featurizer, "data to evaluate");
        if (examples.Count == 0) throw new InvalidOperationException("The data to evaluate is empty.");
        return model.Model.Evaluate(examples, batchSize ?? settings.ScoringBatchSize);
    }

    /// <summary>Mean token loss, perplexity and token accuracy of <paramref name="model"/> on <paramref name="examples"/>.</summary>
    /// <param name="model">The model (its train/eval mode is restored afterwards).</param>
    /// <param name="examples">Featurized rows.</param>
    /// <param name="batchSize">Rows per forward.</param>
    /// <param name="padTokenId">Id fed in padding positions.</param>
    public static CausalLMMetrics Evaluate(CausalLanguageModel model, IReadOnlyList<CausalLMExample> examples, int batchSize = 8, long padTokenId = 0)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var device = model.parameters().First().device;
        var accumulator = new CausalLMMetricsAccumulator();
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            for (int start = 0; start < examples.Count; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var batch = CausalLMBatch.Collate(examples.Skip(start).Take(batchSize).ToList(), padTokenId, device);
                accumulator.Add(model.call(batch.Inputs), batch.Labels);
            }
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return accumulator.Result();
    }
}
