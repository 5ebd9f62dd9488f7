using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>One input of a text classifier: a text, or a text pair.</summary>
internal readonly record struct TextInput(string Text, string? Pair);

/// <summary>
/// The classification core shared by the estimator (training) and the transformer (scoring): tokenizes inputs,
/// runs the adapted sequence-classification model in batches, turns logits into class probabilities.
/// </summary>
internal sealed class TextClassifierModel
{
    public TextClassifierModel(AdaptedModel adapted, ClassLabels labels, int maxSequenceLength)
    {
        Adapted = adapted;
        Labels = labels;
        MaxSequenceLength = maxSequenceLength;
    }

    private readonly object _gate = new();

    public AdaptedModel Adapted { get; }
    public ClassLabels Labels { get; }
    public int MaxSequenceLength { get; }

    private HfTokenizer Tokenizer => Adapted.Tokenizer;
    private SequenceClassificationModel Classifier => (SequenceClassificationModel)Adapted.Model;

    /// <summary>Token ids and segment ids of one input, truncated to <see cref="MaxSequenceLength"/> (pairs: the
    /// longer side first, as Hugging Face's longest_first).</summary>
    public (long[] Ids, long[] TokenTypes) Encode(TextInput input)
    {
        var encoding = input.Pair is null
            ? Tokenizer.Encode(input.Text, addSpecialTokens: true, maxLength: MaxSequenceLength)
            : Tokenizer.EncodePair(input.Text, input.Pair, addSpecialTokens: true, maxLength: MaxSequenceLength);
        return (encoding.Ids.Select(i => (long)i).ToArray(), encoding.TokenTypeIds.Select(i => (long)i).ToArray());
    }

    /// <summary>Logits (B, C) in float32 for encoded rows (the caller owns the dispose scope).</summary>
    public Tensor Logits(IReadOnlyList<(long[] Ids, long[] TokenTypes)> rows)
    {
        var batch = Collate.Encoder(rows.Select(r => (IReadOnlyList<long>)r.Ids).ToList(), Tokenizer.PadTokenId ?? 0,
            PaddingSide.Right, rows.Select(r => (IReadOnlyList<long>)r.TokenTypes).ToList(), device: Adapted.Device);
        return Classifier.call(batch).to_type(ScalarType.Float32); // (B, C)
    }

    /// <summary>Class probabilities (softmax over the logits) for each input, in input order, scored
    /// <paramref name="batchSize"/> at a time in order of token count, so that a batch pads little, and two batches at
    /// a time on the CPU (<see cref="ScoringWorkers"/>; docs/performance.md has both measured).</summary>
    public float[][] Predict(IReadOnlyList<TextInput> inputs, int batchSize)
    {
        // One call at a time (PredictionEngines on several threads share the model); ScoringWorkers decides the
        // threads within a call.
        lock (_gate) return PredictUnlocked(inputs, batchSize);
    }

    private float[][] PredictUnlocked(IReadOnlyList<TextInput> inputs, int batchSize)
    {
        var encoded = inputs.Select(Encode).ToArray();
        int[][] batches = Enumerable.Range(0, encoded.Length).OrderBy(i => encoded[i].Ids.Length).Chunk(batchSize).ToArray(); // stable sort
        var result = new float[inputs.Count][];
        int classes = Labels.Count;
        ScoringWorkers.ForEach(batches.Length, Adapted.Device, b =>
        {
            using var scope = NewDisposeScope();
            var batch = batches[b];
            var probabilities = nn.functional.softmax(Logits(batch.Select(i => encoded[i]).ToList()), dim: 1).cpu(); // (B, C)
            var flat = probabilities.data<float>().ToArray();
            for (int r = 0; r < batch.Length; r++) result[batch[r]] = flat.AsSpan(r * classes, classes).ToArray();
        });
        return result;
    }
}
