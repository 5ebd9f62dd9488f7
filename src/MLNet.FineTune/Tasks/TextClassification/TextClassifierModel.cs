using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning;
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

    /// <summary>Class probabilities (softmax over the logits) for each input, scored <paramref name="batchSize"/> at a time.</summary>
    public float[][] Predict(IReadOnlyList<TextInput> inputs, int batchSize)
    {
        // One TorchSharp model must not run on two threads at once (PredictionEngines on several threads share it).
        lock (_gate) return PredictUnlocked(inputs, batchSize);
    }

    private float[][] PredictUnlocked(IReadOnlyList<TextInput> inputs, int batchSize)
    {
        var result = new float[inputs.Count][];
        using var noGrad = no_grad();
        for (int start = 0; start < inputs.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = inputs.Skip(start).Take(batchSize).Select(Encode).ToList();
            var probabilities = nn.functional.softmax(Logits(rows), dim: 1).cpu(); // (B, C)
            var flat = probabilities.data<float>().ToArray();
            int classes = Labels.Count;
            for (int b = 0; b < rows.Count; b++) result[start + b] = flat.AsSpan(b * classes, classes).ToArray();
        }
        return result;
    }
}
