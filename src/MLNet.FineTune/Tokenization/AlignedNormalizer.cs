using System.Globalization;
using System.Text;

namespace MLNet.FineTune.Tokenization;

/// <summary>Unicode normalization (NFC, NFKC) that remembers, for each output UTF-16 unit, the original span it came from.</summary>
internal static class AlignedNormalizer
{
    /// <summary>
    /// Normalizes <c>text[start..end]</c>. Each run of a base character and the combining characters after it is
    /// normalized on its own (composition never crosses such runs), and every output unit maps to the run's span.
    /// </summary>
    public static (string Text, int[] OriginalStart, int[] OriginalEnd) Normalize(string text, int start, int end, NormalizationForm? form)
    {
        var slice = text[start..end];
        if (form is null || slice.IsNormalized(form.Value))
        {
            var s = new int[slice.Length];
            var e = new int[slice.Length];
            for (int i = 0; i < slice.Length; i++) { s[i] = start + i; e[i] = start + i + 1; }
            return (slice, s, e);
        }

        var sb = new StringBuilder(slice.Length);
        var starts = new List<int>(slice.Length);
        var ends = new List<int>(slice.Length);
        int runStart = 0;
        for (int i = 0; i <= slice.Length;)
        {
            int width = i < slice.Length && char.IsSurrogatePair(slice, i) ? 2 : 1;
            bool boundary = i == slice.Length || (i > runStart && !Continues(slice, i));
            if (boundary && i > runStart)
            {
                var normalized = slice[runStart..i].Normalize(form.Value);
                sb.Append(normalized);
                for (int k = 0; k < normalized.Length; k++) { starts.Add(start + runStart); ends.Add(start + i); }
                runStart = i;
            }
            if (i == slice.Length) break;
            i += width;
        }
        return (sb.ToString(), starts.ToArray(), ends.ToArray());
    }

    /// <summary>Whether the character at i joins the preceding run: combining marks, and Hangul vowel/final jamo.</summary>
    private static bool Continues(string s, int i)
    {
        char c = s[i];
        if (c is >= '\u1160' and <= '\u11FF') return true;
        var category = CharUnicodeInfo.GetUnicodeCategory(s, i);
        return category is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark;
    }
}
