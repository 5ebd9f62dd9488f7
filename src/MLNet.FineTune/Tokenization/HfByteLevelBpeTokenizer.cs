using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// Byte-level BPE read from a Hugging Face tokenizer.json (GPT-2, RoBERTa, Llama 3, Qwen2): the pre-tokenizer's regex
/// split is done here, each piece is encoded by Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> (byte level, the
/// vocabulary and merges of tokenizer.json), and offsets are mapped back to the original text.
/// </summary>
internal sealed class HfByteLevelBpeTokenizer : HfTokenizer
{
    /// <summary>GPT-2's pre-tokenizer regex, what ByteLevel(use_regex=true) uses.</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly BpeTokenizer _bpe;
    private readonly Regex _split;
    private readonly bool _addPrefixSpace;
    private readonly bool _trimOffsets;
    private readonly bool _ignoreMerges;
    private readonly NormalizationForm? _normalization;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;

    private HfByteLevelBpeTokenizer(Dictionary<string, int> vocab, IEnumerable<string> merges, Regex split, bool addPrefixSpace,
        bool trimOffsets, bool ignoreMerges, NormalizationForm? normalization, AddedTokens added)
        : base(added)
    {
        _vocab = vocab;
        _idToToken = [];
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        _split = split;
        _addPrefixSpace = addPrefixSpace;
        _trimOffsets = trimOffsets;
        _ignoreMerges = ignoreMerges;
        _normalization = normalization;
        _bpe = BpeTokenizer.Create(new BpeOptions(vocab) { Merges = merges, ByteLevel = true });
    }

    /// <summary>Whether a tokenizer.json describes a byte-level BPE (a ByteLevel pre-tokenizer or decoder).</summary>
    internal static bool IsByteLevel(JsonElement root) =>
        Mentions(root, "pre_tokenizer", "ByteLevel") || Mentions(root, "decoder", "ByteLevel");

    private static bool Mentions(JsonElement root, string section, string type) =>
        root.TryGetProperty(section, out var s) && s.ValueKind == JsonValueKind.Object && Flatten(s).Any(e => e.GetProperty("type").GetString() == type);

    /// <summary>A component and, for "Sequence", its parts.</summary>
    private static IEnumerable<JsonElement> Flatten(JsonElement component)
    {
        if (component.GetProperty("type").GetString() != "Sequence") return [component];
        var list = component.TryGetProperty("pretokenizers", out var p) ? p
            : component.TryGetProperty("normalizers", out var n) ? n
            : component.TryGetProperty("decoders", out var d) ? d
            : component.GetProperty("processors");
        return list.EnumerateArray().SelectMany(Flatten);
    }

    internal static HfByteLevelBpeTokenizer FromTokenizerJson(TokenizerFolder files, JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        var vocab = HfWordPieceTokenizer.ReadVocab(model, path);

        // Merges are "a b" strings (older files) or ["a", "b"] pairs (tokenizers 0.20+); byte-level tokens hold no spaces.
        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergesJson))
            foreach (var m in mergesJson.EnumerateArray())
                merges.Add(m.ValueKind == JsonValueKind.Array ? m[0].GetString() + " " + m[1].GetString() : m.GetString() ?? "");
        bool ignoreMerges = model.TryGetProperty("ignore_merges", out var im) && im.ValueKind == JsonValueKind.True;
        foreach (var option in new[] { "continuing_subword_prefix", "end_of_word_suffix" })
            if (model.TryGetProperty(option, out var v) && v.ValueKind == JsonValueKind.String && v.GetString()!.Length > 0)
                throw new NotSupportedException($"{path}: model.{option} is not supported for byte-level BPE.");

        // Pre-tokenizer: ByteLevel alone (GPT-2 regex), or Split(regex) followed by ByteLevel(use_regex=false) (Llama 3, Qwen2).
        Regex? split = null;
        bool addPrefixSpace = false;
        foreach (var pre in root.TryGetProperty("pre_tokenizer", out var preJson) && preJson.ValueKind == JsonValueKind.Object ? Flatten(preJson) : [])
        {
            switch (pre.GetProperty("type").GetString())
            {
                case "ByteLevel":
                    addPrefixSpace = pre.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.True;
                    bool useRegex = !pre.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
                    if (useRegex)
                    {
                        if (split is not null)
                            throw new NotSupportedException($"{path}: a Split pre-tokenizer followed by ByteLevel(use_regex=true) is not supported.");
                        split = new Regex(Gpt2Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
                    }
                    break;
                case "Split":
                    if (split is not null)
                        throw new NotSupportedException($"{path}: more than one regex pre-tokenizer is not supported.");
                    var behavior = pre.TryGetProperty("behavior", out var b) ? b.GetString() : "Isolated";
                    if (behavior != "Isolated" || (pre.TryGetProperty("invert", out var inv) && inv.ValueKind == JsonValueKind.True))
                        throw new NotSupportedException($"{path}: Split pre-tokenizer with behavior '{behavior}' (or invert) is not supported; only Isolated.");
                    var pattern = pre.GetProperty("pattern");
                    split = new Regex(
                        pattern.TryGetProperty("Regex", out var rx) ? rx.GetString()! : Regex.Escape(pattern.GetProperty("String").GetString()!),
                        RegexOptions.Compiled | RegexOptions.CultureInvariant);
                    break;
                case var other:
                    throw new NotSupportedException($"{path}: pre_tokenizer '{other}' is not supported for byte-level BPE (supported: ByteLevel, Split).");
            }
        }

        NormalizationForm? normalization = null;
        foreach (var n in root.TryGetProperty("normalizer", out var nJson) && nJson.ValueKind == JsonValueKind.Object ? Flatten(nJson) : [])
        {
            normalization = n.GetProperty("type").GetString() switch
            {
                "NFC" => NormalizationForm.FormC,
                "NFKC" => NormalizationForm.FormKC,
                var other => throw new NotSupportedException($"{path}: normalizer '{other}' is not supported for byte-level BPE (supported: NFC, NFKC)."),
            };
        }

        // Offsets trimming (leading/trailing spaces left out of a token's span) is a post-processor option.
        bool trimOffsets = false;
        if (root.TryGetProperty("post_processor", out var ppJson) && ppJson.ValueKind == JsonValueKind.Object)
            foreach (var pp in Flatten(ppJson))
                if (pp.GetProperty("type").GetString() is "ByteLevel" or "RobertaProcessing" && pp.TryGetProperty("trim_offsets", out var to))
                    trimOffsets = to.ValueKind == JsonValueKind.True;

        var tokenizer = new HfByteLevelBpeTokenizer(vocab, merges, split ?? new Regex(@"[\s\S]+", RegexOptions.Compiled), addPrefixSpace,
            trimOffsets, ignoreMerges, normalization, new AddedTokens(HfWordPieceTokenizer.ReadAddedTokens(root)));
        tokenizer.ResolveSpecialTokens(files);
        tokenizer.SetTemplate(HfWordPieceTokenizer.ReadPostProcessor(root, path) ?? PostProcessorTemplate.None);
        return tokenizer;
    }

    private protected override void EncodePlain(string text, int start, int end, List<RawToken> output)
    {
        var (normalized, origStart, origEnd) = AlignedNormalizer.Normalize(text, start, end, _normalization);
        int first = output.Count;
        bool prefixed = false;
        int position = 0;
        int piece = -1;
        foreach (Match match in _split.Matches(normalized))
        {
            // Split "Isolated": the text between matches is a piece too (the GPT-2 pattern leaves none).
            if (match.Index > position) EncodePiece(position, match.Index);
            EncodePiece(match.Index, match.Index + match.Length);
            position = match.Index + match.Length;
        }
        if (position < normalized.Length) EncodePiece(position, normalized.Length);

        void EncodePiece(int pieceStart, int pieceEnd)
        {
            piece++;
            var pieceText = normalized[pieceStart..pieceEnd];
            // add_prefix_space: "hello" is encoded as " hello" so that it gets the same ids as inside a sentence.
            int shift = 0;
            if (_addPrefixSpace && !prefixed && pieceStart == 0 && normalized.Length > 0 && normalized[0] != ' ')
            {
                pieceText = " " + pieceText;
                shift = 1;
            }
            prefixed = true;

            if (_ignoreMerges && _vocab.TryGetValue(ByteLevelForm(pieceText), out int wholeId))
            {
                AddToken(wholeId, _idToToken[wholeId], 0, pieceText.Length);
                return;
            }
            foreach (var token in _bpe.EncodeToTokens(pieceText, out _, considerPreTokenization: false, considerNormalization: false))
            {
                var (offset, length) = token.Offset.GetOffsetAndLength(pieceText.Length);
                AddToken(token.Id, token.Value, offset, offset + length);
            }

            void AddToken(int id, string value, int s, int e)
            {
                // Back from the piece to the normalized text (the prefix space belongs to no character) and then to the original.
                s = Math.Max(s - shift, 0) + pieceStart;
                e = Math.Max(e - shift, 0) + pieceStart;
                int os = s < e ? origStart[s] : (s < origStart.Length ? origStart[s] : end);
                int oe = s < e ? origEnd[e - 1] : os;
                output.Add(new RawToken(id, value, os, oe, piece));
            }
        }

        for (int i = first; i < output.Count; i++)
        {
            var t = output[i];
            var (s, e) = WidenToCodePoints(text, t.Start, t.End);
            if (_trimOffsets) (s, e) = TrimSpaces(t.Value, s, e, isFirst: s == 0);
            output[i] = t with { Start = s, End = e };
        }
    }

    /// <summary>
    /// A token holding some bytes of a character outside the BMP covers the whole character (both UTF-16 units), as
    /// Hugging Face's offsets cover whole code points; the library can end such a span between the two units.
    /// </summary>
    private static (int, int) WidenToCodePoints(string text, int s, int e)
    {
        if (s > 0 && s < text.Length && char.IsLowSurrogate(text[s]) && char.IsHighSurrogate(text[s - 1])) s--;
        if (e > 0 && e < text.Length && char.IsHighSurrogate(text[e - 1]) && char.IsLowSurrogate(text[e])) e++;
        return (s, e);
    }

    /// <summary>Hugging Face's trim_offsets: leading and trailing 'Ġ' (space bytes) are left out of the span.</summary>
    private (int, int) TrimSpaces(string value, int s, int e, bool isFirst)
    {
        const char space = '\u0120';
        int leading = 0, trailing = 0;
        while (leading < value.Length && value[leading] == space) leading++;
        while (trailing < value.Length && value[value.Length - 1 - trailing] == space) trailing++;
        if (leading > 0 && !(isFirst && _addPrefixSpace && leading == 1)) s = Math.Min(s + leading, e);
        if (trailing > 0 && e >= trailing) e = Math.Max(e - trailing, s);
        return (s, e);
    }

    private static readonly char[] ByteToUnicode = BuildByteToUnicode();

    /// <summary>GPT-2's reversible byte-to-character table: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    private static char[] BuildByteToUnicode()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
            table[b] = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ' ? (char)b : (char)next++;
        return table;
    }

    private static string ByteLevelForm(string piece)
    {
        var bytes = Encoding.UTF8.GetBytes(piece);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToUnicode[bytes[i]];
        return new string(chars);
    }

    private protected override string DecodeModelIds(IReadOnlyList<int> ids) => _bpe.Decode(ids) ?? "";

    private protected override int ModelVocabularySize => _idToToken.Count == 0 ? 0 : _idToToken.Keys.Max() + 1;

    private protected override int? ModelTokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;

    private protected override string? ModelIdToToken(int id) => _idToToken.TryGetValue(id, out var t) ? t : null;
}
