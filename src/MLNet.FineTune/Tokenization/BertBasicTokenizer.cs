using System.Globalization;
using System.Text;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// Hugging Face's BERT normalizer and pre-tokenizer (tokenizers' <c>BertNormalizer</c> + <c>BertPreTokenizer</c>, the
/// fast equivalent of transformers' BasicTokenizer), keeping for every normalized character the span of the original
/// text it came from.
/// </summary>
/// <remarks>
/// Why not Microsoft.ML.Tokenizers' BertTokenizer here: its basic tokenization deletes \t and \n instead of treating them
/// as spaces, drops symbols and emoji (©, 😀) that Hugging Face keeps, and reports offsets into its own normalized copy
/// (CJK offsets shift by the spaces it inserts). Its <c>Normalizer</c> hook returns a bare string, so offsets into the
/// original text cannot be recovered from it; hence this small pass in front of the library's WordPiece model.
/// Order of steps, as Hugging Face: clean control characters and map whitespace to ' ', pad CJK ideographs with spaces,
/// strip accents (NFD, drop nonspacing marks), lower-case; then split on whitespace and isolate punctuation.
/// </remarks>
internal sealed class BertBasicTokenizer(bool cleanText, bool handleChineseChars, bool stripAccents, bool lowerCase)
{
    public bool CleanText { get; } = cleanText;
    public bool HandleChineseChars { get; } = handleChineseChars;
    public bool StripAccents { get; } = stripAccents;
    public bool LowerCase { get; } = lowerCase;

    /// <summary>A normalized word and, per UTF-16 unit of it, the original span [Start, End) it came from.</summary>
    public readonly record struct Word(string Text, int[] OriginalStart, int[] OriginalEnd)
    {
        /// <summary>Original span of the word's characters [start, end).</summary>
        public (int Start, int End) Span(int start, int end) => (OriginalStart[start], OriginalEnd[end - 1]);

        /// <summary>Number of Unicode code points (what Hugging Face's max_input_chars_per_word counts).</summary>
        public int CodePoints
        {
            get
            {
                int n = 0;
                foreach (var _ in Text.EnumerateRunes()) n++;
                return n;
            }
        }
    }

    /// <summary>Normalizes and splits <c>text[start..end]</c> into words.</summary>
    public List<Word> Split(string text, int start, int end)
    {
        // 1. Normalize, remembering where each output unit came from.
        var normalized = new StringBuilder(end - start);
        var origStart = new List<int>(end - start);
        var origEnd = new List<int>(end - start);
        void Emit(string s, int from, int to)
        {
            normalized.Append(s);
            for (int k = 0; k < s.Length; k++) { origStart.Add(from); origEnd.Add(to); }
        }

        for (int i = start; i < end;)
        {
            Rune.DecodeFromUtf16(text.AsSpan(i, end - i), out var rune, out int consumed);
            int from = i, to = i + consumed;
            i = to;
            if (CleanText)
            {
                if (rune.Value == 0 || rune.Value == 0xFFFD || IsControl(rune)) continue;
                if (IsWhitespace(rune)) { Emit(" ", from, to); continue; }
            }
            if (HandleChineseChars && IsChineseChar(rune.Value))
            {
                Emit(" " + rune + " ", from, to);
                continue;
            }
            var s = rune.ToString();
            if (StripAccents) s = RemoveNonSpacingMarks(s.Normalize(NormalizationForm.FormD));
            if (LowerCase) s = s.ToLowerInvariant();
            if (s.Length > 0) Emit(s, from, to);
        }

        // 2. Split on whitespace, isolate punctuation.
        var words = new List<Word>();
        var n = normalized.ToString();
        int wordStart = -1;
        void Close(int at)
        {
            if (wordStart >= 0 && at > wordStart)
                words.Add(new Word(n[wordStart..at], origStart.GetRange(wordStart, at - wordStart).ToArray(), origEnd.GetRange(wordStart, at - wordStart).ToArray()));
            wordStart = -1;
        }
        for (int i = 0; i < n.Length;)
        {
            Rune.DecodeFromUtf16(n.AsSpan(i), out var rune, out int consumed);
            if (Rune.IsWhiteSpace(rune))
                Close(i);
            else if (IsPunctuation(rune))
            {
                Close(i);
                wordStart = i;
                Close(i + consumed);
            }
            else if (wordStart < 0)
                wordStart = i;
            i += consumed;
        }
        Close(n.Length);
        return words;
    }

    private static string RemoveNonSpacingMarks(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (var r in s.EnumerateRunes())
            if (Rune.GetUnicodeCategory(r) != UnicodeCategory.NonSpacingMark) sb.Append(r.ToString());
        return sb.ToString();
    }

    /// <summary>\t \n \r and Unicode White_Space.</summary>
    private static bool IsWhitespace(Rune r) => r.Value is '\t' or '\n' or '\r' || Rune.IsWhiteSpace(r);

    /// <summary>Categories C* (control, format, surrogate, private use, unassigned), except \t \n \r which are whitespace.</summary>
    private static bool IsControl(Rune r)
    {
        if (r.Value is '\t' or '\n' or '\r') return false;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate
            or UnicodeCategory.PrivateUse or UnicodeCategory.OtherNotAssigned;
    }

    /// <summary>ASCII punctuation (all non-alphanumeric printable ASCII, so $ + ^ ` count) or any Unicode P* category.</summary>
    private static bool IsPunctuation(Rune r)
    {
        int c = r.Value;
        if (c is >= 33 and <= 47 or >= 58 and <= 64 or >= 91 and <= 96 or >= 123 and <= 126) return true;
        return Rune.GetUnicodeCategory(r) is UnicodeCategory.ConnectorPunctuation or UnicodeCategory.DashPunctuation
            or UnicodeCategory.OpenPunctuation or UnicodeCategory.ClosePunctuation or UnicodeCategory.InitialQuotePunctuation
            or UnicodeCategory.FinalQuotePunctuation or UnicodeCategory.OtherPunctuation;
    }

    /// <summary>The CJK Unified Ideograph blocks BERT treats as one word each (not Hangul, Hiragana or Katakana).</summary>
    private static bool IsChineseChar(int c) =>
        c is >= 0x4E00 and <= 0x9FFF or >= 0x3400 and <= 0x4DBF or >= 0x20000 and <= 0x2A6DF or >= 0x2A700 and <= 0x2B73F
            or >= 0x2B740 and <= 0x2B81F or >= 0x2B820 and <= 0x2CEAF or >= 0xF900 and <= 0xFAFF or >= 0x2F800 and <= 0x2FA1F;
}
