using MLNet.FineTune.Models;
using MLNet.FineTune.Tests.Checkpoints;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>What our encoder differs from ONNX Runtime by on one padded batch.</summary>
/// <param name="Hidden">Max |ours - ONNX Runtime| of last_hidden_state over real (mask = 1) positions.</param>
/// <param name="Pooler">Max |ours - ONNX Runtime| of the pooler output.</param>
/// <param name="RealPositions">Number of (sequence, position) pairs with mask = 1.</param>
/// <param name="PaddingPositions">Number of pairs with mask = 0 (excluded: transformers leaves them meaningless).</param>
internal sealed record MiniLmOnnxError(double Hidden, double Pooler, long RealPositions, long PaddingPositions);

/// <summary>
/// Runs a BERT <see cref="EncoderModel"/> on exactly the inputs ONNX Runtime was given (<see cref="OnnxMiniLmReference"/>)
/// and measures the difference: the one comparison behind every MiniLM parity test.
/// </summary>
internal static class MiniLmOnnxParity
{
    /// <summary>Forward pass (eval, no grad) of <paramref name="model"/> on the reference's ids, mask and segments.</summary>
    public static MiniLmOnnxError Measure(EncoderModel model, OnnxReferenceOutput reference)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        int batch = reference.LastHidden.GetLength(0), length = reference.LastHidden.GetLength(1), width = reference.LastHidden.GetLength(2);
        var mask = Matrix(reference.AttentionMask);                                                        // (B, T)
        var output = model.call(new EncoderInputs(Matrix(reference.InputIds), mask, Matrix(reference.TokenTypeIds)));
        Assert.IsNotNull(output.PooledOutput, "a BertModel with its pooler returns the pooled output");

        var ortHidden = tensor(reference.LastHidden.Cast<float>().ToArray(), [batch, length, width]);       // (B, T, H)
        var ortPooler = tensor(reference.Pooler.Cast<float>().ToArray(), [batch, width]);                  // (B, H)
        CollectionAssert.AreEqual(ortHidden.shape, output.LastHiddenState.shape, "last_hidden_state shape");
        CollectionAssert.AreEqual(ortPooler.shape, output.PooledOutput!.shape, "pooler shape");

        var padding = mask.eq(0).unsqueeze(-1);                                                            // (B, T, 1)
        var hiddenDiff = (output.LastHiddenState.to_type(ScalarType.Float64) - ortHidden.to_type(ScalarType.Float64)).abs();
        double hidden = hiddenDiff.masked_fill(padding, 0).max().item<double>();
        double pooler = (output.PooledOutput.to_type(ScalarType.Float64) - ortPooler.to_type(ScalarType.Float64)).abs().max().item<double>();
        long real = mask.sum().item<long>();
        return new MiniLmOnnxError(hidden, pooler, real, (long)batch * length - real);
    }

    private static Tensor Matrix(long[,] values) => tensor(values.Cast<long>().ToArray(), [values.GetLength(0), values.GetLength(1)]);
}
