namespace MLNet.FineTune.Tokenization;

/// <summary>A token Hugging Face matches in the raw text before the model runs ([CLS], &lt;|endoftext|&gt;, &lt;s&gt;, ...).</summary>
internal sealed record AddedToken(int Id, string Content, bool Special, bool LStrip = false, bool RStrip = false, bool SingleWord = false);

/// <summary>
/// Splits text on added tokens, as Hugging Face's AddedVocabulary does before normalization: at each position the
/// longest added token that starts there wins (leftmost-longest), and the text between matches goes to the model.
/// Tokens are matched in the raw text (Hugging Face also matches tokens marked <c>normalized</c> in normalized text;
/// special tokens are never normalized, so they behave the same).
/// </summary>
internal sealed class AddedTokens
{
    private readonly Dictionary<char, AddedToken[]> _byFirstChar;
    private readonly Dictionary<int, AddedToken> _byId = [];

    public AddedTokens(IEnumerable<AddedToken> tokens)
    {
        var list = new List<AddedToken>();
        foreach (var t in tokens)
        {
            if (t.Content.Length == 0 || _byId.ContainsKey(t.Id)) continue;
            _byId[t.Id] = t;
            list.Add(t);
        }
        _byFirstChar = list.GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
    }

    public int Count => _byId.Count;

    public IEnumerable<AddedToken> All => _byId.Values;

    public bool TryGet(int id, out AddedToken token) => _byId.TryGetValue(id, out token!);

    public bool IsSpecial(int id) => _byId.TryGetValue(id, out var t) && t.Special;

    public AddedToken? Find(string content) => _byId.Values.FirstOrDefault(t => t.Content == content);

    /// <summary>A piece of the input: an added token (Token not null) or plain text [Start, End) for the model.</summary>
    public readonly record struct Segment(int Start, int End, AddedToken? Token);

    public List<Segment> Split(string text)
    {
        var segments = new List<Segment>();
        int plainStart = 0;
        int i = 0;
        while (i < text.Length)
        {
            var match = _byFirstChar.Count == 0 ? null : MatchAt(text, i);
            if (match is null) { i++; continue; }

            int start = i, end = i + match.Content.Length;
            // lstrip / rstrip: the token swallows the whitespace next to it.
            if (match.LStrip) while (start > plainStart && char.IsWhiteSpace(text[start - 1])) start--;
            if (match.RStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            if (start > plainStart) segments.Add(new Segment(plainStart, start, null));
            segments.Add(new Segment(start, end, match));
            plainStart = i = end;
        }
        if (plainStart < text.Length || segments.Count == 0) segments.Add(new Segment(plainStart, text.Length, null));
        return segments;
    }

    private AddedToken? MatchAt(string text, int i)
    {
        if (!_byFirstChar.TryGetValue(text[i], out var candidates)) return null;
        foreach (var t in candidates)
        {
            if (string.CompareOrdinal(text, i, t.Content, 0, t.Content.Length) != 0) continue;
            if (t.SingleWord && !IsWordBoundary(text, i, i + t.Content.Length)) continue;
            return t;
        }
        return null;
    }

    private static bool IsWordBoundary(string text, int start, int end) =>
        (start == 0 || !char.IsLetterOrDigit(text[start - 1])) && (end == text.Length || !char.IsLetterOrDigit(text[end]));
}
