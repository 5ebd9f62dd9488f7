using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Training;

/// <summary>Which end of a row receives padding.</summary>
internal enum PaddingSide
{
    /// <summary>Tokens first, padding after (encoders, training causal models).</summary>
    Right,
    /// <summary>Padding first, tokens last (batched generation with decoder-only models).</summary>
    Left,
}

/// <summary>
/// Dynamic padding: a batch is padded to its own longest row (optionally rounded up to a multiple), not to the
/// model's maximum length, so short batches cost short compute.
/// </summary>
internal static class Collate
{
    /// <summary>Pads variable-length rows into one (B, T) int64 tensor, T = the longest row rounded up to
    /// <paramref name="padToMultipleOf"/>.</summary>
    /// <param name="rows">The rows (token ids, segment ids, labels...).</param>
    /// <param name="padValue">The fill value (pad token id, 0, or -100 for ignored labels).</param>
    /// <param name="side">Where the padding goes.</param>
    /// <param name="padToMultipleOf">Round T up to a multiple of this (1 = no rounding).</param>
    /// <param name="device">Where the tensor is created (CPU when null).</param>
    public static Tensor PadRows(IReadOnlyList<IReadOnlyList<long>> rows, long padValue, PaddingSide side = PaddingSide.Right, int padToMultipleOf = 1, Device? device = null)
    {
        int width = Width(rows, r => r.Count, padToMultipleOf);
        var data = new long[rows.Count * width];
        for (int b = 0; b < rows.Count; b++)
        {
            var row = rows[b];
            int start = b * width + (side == PaddingSide.Left ? width - row.Count : 0);
            data.AsSpan(b * width, width).Fill(padValue);
            for (int t = 0; t < row.Count; t++) data[start + t] = row[t];
        }
        return ToTensor(data, rows.Count, width, device);
    }

    /// <summary>Pads int rows (as tokenizers return them) into one (B, T) int64 tensor.</summary>
    /// <inheritdoc cref="PadRows(IReadOnlyList{IReadOnlyList{long}}, long, PaddingSide, int, Device?)"/>
    public static Tensor PadRows(IReadOnlyList<IReadOnlyList<int>> rows, long padValue, PaddingSide side = PaddingSide.Right, int padToMultipleOf = 1, Device? device = null) =>
        PadRows(rows.Select(r => (IReadOnlyList<long>)r.Select(x => (long)x).ToArray()).ToList(), padValue, side, padToMultipleOf, device);

    /// <summary>The (B, T) int64 attention mask for rows of the given lengths: 1 on real tokens, 0 on padding.</summary>
    /// <param name="lengths">Each row's token count (each at most <paramref name="width"/>).</param>
    /// <param name="width">T.</param>
    /// <param name="side">Where the padding is.</param>
    /// <param name="device">Where the tensor is created (CPU when null).</param>
    public static Tensor AttentionMask(IReadOnlyList<int> lengths, int width, PaddingSide side = PaddingSide.Right, Device? device = null)
    {
        if (lengths.Count == 0) throw new ArgumentException("A batch needs at least one row.", nameof(lengths));
        var data = new long[lengths.Count * width];
        for (int b = 0; b < lengths.Count; b++)
        {
            if (lengths[b] < 0 || lengths[b] > width)
                throw new ArgumentOutOfRangeException(nameof(lengths), $"Row {b} has length {lengths[b]}, outside [0, {width}].");
            int start = b * width + (side == PaddingSide.Left ? width - lengths[b] : 0);
            data.AsSpan(start, lengths[b]).Fill(1L);
        }
        return ToTensor(data, lengths.Count, width, device);
    }

    /// <summary>An encoder batch: token ids padded with <paramref name="padTokenId"/>, the attention mask, and segment
    /// ids (padded with 0) when given.</summary>
    /// <param name="inputIds">Token ids per row.</param>
    /// <param name="padTokenId">The tokenizer's pad id.</param>
    /// <param name="side">Where the padding goes.</param>
    /// <param name="tokenTypeIds">Segment ids per row (same lengths as <paramref name="inputIds"/>), or null.</param>
    /// <param name="padToMultipleOf">Round T up to a multiple of this.</param>
    /// <param name="device">Where the tensors are created.</param>
    public static EncoderInputs Encoder(IReadOnlyList<IReadOnlyList<long>> inputIds, long padTokenId, PaddingSide side = PaddingSide.Right,
        IReadOnlyList<IReadOnlyList<long>>? tokenTypeIds = null, int padToMultipleOf = 1, Device? device = null)
    {
        if (tokenTypeIds is not null)
        {
            if (tokenTypeIds.Count != inputIds.Count)
                throw new ArgumentException($"tokenTypeIds has {tokenTypeIds.Count} rows; inputIds has {inputIds.Count}.", nameof(tokenTypeIds));
            for (int b = 0; b < inputIds.Count; b++)
                if (tokenTypeIds[b].Count != inputIds[b].Count)
                    throw new ArgumentException($"Row {b}: {tokenTypeIds[b].Count} segment ids for {inputIds[b].Count} tokens.", nameof(tokenTypeIds));
        }
        var ids = PadRows(inputIds, padTokenId, side, padToMultipleOf, device); // (B, T)
        var mask = AttentionMask(inputIds.Select(r => r.Count).ToList(), (int)ids.shape[1], side, device); // (B, T)
        var types = tokenTypeIds is null ? null : PadRows(tokenTypeIds, 0, side, padToMultipleOf, device); // (B, T)
        return new EncoderInputs(ids, mask, types);
    }

    private static int Width<T>(IReadOnlyList<T> rows, Func<T, int> length, int padToMultipleOf)
    {
        if (rows.Count == 0) throw new ArgumentException("A batch needs at least one row.", nameof(rows));
        if (padToMultipleOf < 1) throw new ArgumentOutOfRangeException(nameof(padToMultipleOf), padToMultipleOf, "Must be at least 1.");
        int longest = rows.Max(length);
        return (longest + padToMultipleOf - 1) / padToMultipleOf * padToMultipleOf;
    }

    private static Tensor ToTensor(long[] data, int batch, int width, Device? device) =>
        tensor(data, [batch, width], ScalarType.Int64, device);
}
