namespace MLNet.FineTune.Tokenization;

/// <summary>
/// One encoded sequence (or sequence pair, or overflow window), laid out as Hugging Face's <c>BatchEncoding</c> lays out a
/// single row: every list has one entry per token.
/// </summary>
/// <remarks>
/// Offsets are (start, end) UTF-16 indices into the original .NET string, so <c>text[start..end]</c> is the token's source
/// text. Hugging Face (Python) counts Unicode code points instead; the two agree except after characters outside the
/// Basic Multilingual Plane (emoji), which take two UTF-16 units. Special tokens and padding have (0, 0).
/// </remarks>
internal sealed class HfEncoding
{
    internal HfEncoding(int[] ids, string[] tokens, int[] tokenTypeIds, int[] attentionMask, (int Start, int End)[] offsets, int?[] sequenceIds)
    {
        Ids = ids;
        Tokens = tokens;
        TokenTypeIds = tokenTypeIds;
        AttentionMask = attentionMask;
        Offsets = offsets;
        SequenceIds = sequenceIds;
    }

    /// <summary>Token ids (<c>input_ids</c>).</summary>
    public IReadOnlyList<int> Ids { get; }

    /// <summary>The vocabulary string of each token (byte-level BPE tokens in their byte-to-unicode form, e.g. "Ġworld").</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>Segment ids (<c>token_type_ids</c>): 0 for the first sequence, usually 1 for the second.</summary>
    public IReadOnlyList<int> TokenTypeIds { get; }

    /// <summary>1 for real tokens, 0 for padding (<c>attention_mask</c>).</summary>
    public IReadOnlyList<int> AttentionMask { get; }

    /// <summary>(start, end) UTF-16 character offsets of each token in the text it came from; (0, 0) for special tokens and padding.</summary>
    public IReadOnlyList<(int Start, int End)> Offsets { get; }

    /// <summary>Which input each token came from: 0 (first text), 1 (second text), or null for special tokens and padding.</summary>
    public IReadOnlyList<int?> SequenceIds { get; }

    /// <summary>Number of positions (tokens plus padding).</summary>
    public int Length => Ids.Count;
}
