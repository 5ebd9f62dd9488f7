using System.Globalization;
using System.Text;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// The official SQuAD answer normalisation (identical in evaluate-v1.1.py and evaluate-v2.0.py), with Python 3
/// string semantics: <c>lower</c>, drop <c>string.punctuation</c>, replace the whole words a/an/the
/// (<c>\b(a|an|the)\b</c>) by a space, then collapse whitespace (<c>" ".join(s.split())</c>).
/// </summary>
/// <remarks>
/// Where .NET and Python differ, Python wins: <c>str.lower</c> maps U+0130 to "i\u0307" and a final capital sigma to
/// "ς"; Python's <c>\w</c> is letters, numbers and '_' (not combining marks, which .NET's <c>\w</c> includes);
/// <c>str.split()</c> also splits on U+001C..U+001F. Text is walked by code point, as Python does.
/// </remarks>
internal static class SquadAnswerNormalizer
{
    // Python's string.punctuation: ASCII only.
    private const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    /// <summary>The normalised answer.</summary>
    public static string Normalize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return CollapseWhitespace(RemoveArticles(RemovePunctuation(PythonLower(text))));
    }

    /// <summary>The normalised answer split into tokens (<c>normalize_answer(s).split()</c>); empty for "".</summary>
    public static string[] Tokens(string text)
    {
        var normalized = Normalize(text);
        return normalized.Length == 0 ? [] : normalized.Split(' ');
    }

    /// <summary>Python 3 <c>str.lower()</c>: full lowercase mapping plus the Final_Sigma rule.</summary>
    internal static string PythonLower(string text)
    {
        var sb = new StringBuilder(text.Length);
        for (var i = 0; i < text.Length;)
        {
            var codePoint = CodePointAt(text, i, out var length);
            if (codePoint == 0x0130)
                sb.Append("i\u0307");                       // the one unconditional multi-character lowercase
            else if (codePoint == 0x03A3)
                sb.Append(IsFinalSigma(text, i) ? 'ς' : 'σ');
            else if (IsSurrogate(codePoint))
                sb.Append((char)codePoint);                 // a lone surrogate stays as it is
            else
                sb.Append(Rune.ToLowerInvariant(new Rune(codePoint)).ToString());
            i += length;
        }
        return sb.ToString();
    }

    private static string RemovePunctuation(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (var c in text)
            if (!Punctuation.Contains(c)) sb.Append(c);
        return sb.ToString();
    }

    /// <summary>
    /// <c>re.sub(r"\b(a|an|the)\b", " ", s)</c>: with a word boundary on both sides and only word characters
    /// inside, a match is exactly a maximal run of word characters that spells a, an or the.
    /// </summary>
    private static string RemoveArticles(string text)
    {
        var sb = new StringBuilder(text.Length);
        var i = 0;
        while (i < text.Length)
        {
            var runStart = i;
            int length;
            while (i < text.Length && IsPythonWordChar(CodePointAt(text, i, out length)))
                i += length;
            if (i > runStart)
            {
                var word = text.AsSpan(runStart, i - runStart);
                if (word is "a" or "an" or "the") sb.Append(' ');
                else sb.Append(word);
                continue;
            }
            CodePointAt(text, i, out length);
            sb.Append(text, i, length);
            i += length;
        }
        return sb.ToString();
    }

    /// <summary><c>" ".join(s.split())</c>.</summary>
    private static string CollapseWhitespace(string text)
    {
        var sb = new StringBuilder(text.Length);
        var i = 0;
        while (i < text.Length)
        {
            while (i < text.Length && IsPythonWhitespace(text[i])) i++;
            var start = i;
            while (i < text.Length && !IsPythonWhitespace(text[i])) i++;
            if (i > start)
            {
                if (sb.Length > 0) sb.Append(' ');
                sb.Append(text, start, i - start);
            }
        }
        return sb.ToString();
    }

    /// <summary>Python's <c>\w</c> on str: <c>str.isalnum()</c> (letters and numbers) or '_'.</summary>
    internal static bool IsPythonWordChar(int codePoint) =>
        codePoint == '_' || CharUnicodeInfo.GetUnicodeCategory(codePoint) is
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
            or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter
            or UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber;

    /// <summary>The code point at <paramref name="index"/> (a pair of surrogates, or one UTF-16 unit, lone surrogates included, as Python sees them).</summary>
    private static int CodePointAt(string text, int index, out int length)
    {
        if (char.IsHighSurrogate(text[index]) && index + 1 < text.Length && char.IsLowSurrogate(text[index + 1]))
        {
            length = 2;
            return char.ConvertToUtf32(text[index], text[index + 1]);
        }
        length = 1;
        return text[index];
    }

    private static bool IsSurrogate(int codePoint) => codePoint is >= 0xD800 and <= 0xDFFF;

    /// <summary>Python's <c>str.isspace()</c>: space separators and the bidi whitespace/separator controls (all in the BMP).</summary>
    internal static bool IsPythonWhitespace(char c) => c switch
    {
        >= '\u0009' and <= '\u000D' => true,
        >= '\u001C' and <= '\u0020' => true,
        '\u0085' or '\u00A0' or '\u1680' or '\u2028' or '\u2029' or '\u202F' or '\u205F' or '\u3000' => true,
        >= '\u2000' and <= '\u200A' => true,
        _ => false,
    };

    /// <summary>
    /// Unicode's Final_Sigma context as CPython tests it: a cased letter before (skipping case-ignorable
    /// characters), and no cased letter after (skipping case-ignorable characters).
    /// </summary>
    private static bool IsFinalSigma(string text, int sigmaIndex)
    {
        var j = sigmaIndex;
        var before = -1;
        while (j > 0)
        {
            // Step back one code point: two units when they form a surrogate pair.
            j -= j >= 2 && char.IsLowSurrogate(text[j - 1]) && char.IsHighSurrogate(text[j - 2]) ? 2 : 1;
            var codePoint = CodePointAt(text, j, out _);
            if (!IsCaseIgnorable(codePoint)) { before = codePoint; break; }
        }
        if (before < 0 || !IsCased(before)) return false;

        var k = sigmaIndex + 1;
        while (k < text.Length)
        {
            var after = CodePointAt(text, k, out var length);
            if (!IsCaseIgnorable(after)) return !IsCased(after);
            k += length;
        }
        return true;
    }

    // Cased: Lu, Ll, Lt plus the Other_Lowercase/Other_Uppercase characters that are not case-ignorable.
    private static bool IsCased(int codePoint)
    {
        var category = CharUnicodeInfo.GetUnicodeCategory(codePoint);
        if (category is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter)
            return true;
        return codePoint is 0x00AA or 0x00BA
            or >= 0x2160 and <= 0x217F                      // Roman numerals
            or >= 0x24B6 and <= 0x24E9                      // circled Latin letters
            or >= 0x1F130 and <= 0x1F149 or >= 0x1F150 and <= 0x1F169 or >= 0x1F170 and <= 0x1F189;
    }

    // Case_Ignorable: Mn, Me, Cf, Lm, Sk plus Word_Break MidLetter, MidNumLet and Single_Quote.
    private static bool IsCaseIgnorable(int codePoint)
    {
        var category = CharUnicodeInfo.GetUnicodeCategory(codePoint);
        if (category is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol)
            return true;
        return codePoint is 0x0027 or 0x002E or 0x003A or 0x00B7 or 0x0387 or 0x055F or 0x05F4 or 0x2018 or 0x2019
            or 0x2024 or 0x2027 or 0xFE13 or 0xFE52 or 0xFE55 or 0xFF07 or 0xFF0E or 0xFF1A;
    }
}
