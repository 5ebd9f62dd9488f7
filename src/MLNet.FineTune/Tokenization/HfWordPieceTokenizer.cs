using System.Text;
using System.Text.Json;
using Microsoft.ML.Tokenizers;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// BERT-family WordPiece tokenizer equal to Hugging Face's BertTokenizerFast: a BERT normalizer/pre-tokenizer that keeps
/// offsets into the original text, then Microsoft.ML.Tokenizers' <see cref="WordPieceTokenizer"/> on each word.
/// </summary>
internal sealed class HfWordPieceTokenizer : HfTokenizer
{
    private readonly WordPieceTokenizer _wordPiece;
    private readonly BertBasicTokenizer _basic;
    private readonly Dictionary<string, int> _vocab;
    private readonly string?[] _idToToken;

    private HfWordPieceTokenizer(IReadOnlyList<string?> vocabById, BertBasicTokenizer basic, string unkToken, string prefix, int maxInputCharsPerWord, AddedTokens added)
        : base(added)
    {
        _basic = basic;
        _idToToken = vocabById.ToArray();
        _vocab = new Dictionary<string, int>(vocabById.Count, StringComparer.Ordinal);
        for (int id = 0; id < vocabById.Count; id++)
            if (vocabById[id] is { } token) _vocab[token] = id; // a repeated line: the later id wins, as in Hugging Face
        if (!_vocab.ContainsKey(unkToken))
            throw new InvalidDataException($"The unknown token '{unkToken}' is not in the WordPiece vocabulary.");

        // The library reads a vocab.txt stream: one token per line, id = line number, empty lines skipped. Earlier copies
        // of a repeated token become empty lines so that ids stay the same and the library does not reject duplicates.
        var text = new StringBuilder();
        for (int id = 0; id < vocabById.Count; id++)
            text.Append(vocabById[id] is { } t && _vocab[t] == id ? t : "").Append('\n');
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(text.ToString()));
        _wordPiece = WordPieceTokenizer.Create(stream, new WordPieceOptions
        {
            UnknownToken = unkToken,
            ContinuingSubwordPrefix = prefix,
            // The library counts UTF-16 units; Hugging Face counts code points, which this class checks itself. A word
            // within the code-point limit has at most twice as many UTF-16 units, so the library's own check never fires.
            MaxInputCharsPerWord = 2 * maxInputCharsPerWord,
        });
        MaxInputCharsPerWord = maxInputCharsPerWord;
    }

    /// <summary>Whether text is lower-cased before WordPiece (uncased models).</summary>
    public bool LowerCase => _basic.LowerCase;

    /// <summary>Whether accents are removed (NFD, nonspacing marks dropped); follows <see cref="LowerCase"/> unless configured.</summary>
    public bool StripAccents => _basic.StripAccents;

    /// <summary>Words longer than this many code points become the unknown token, as in Hugging Face.</summary>
    public int MaxInputCharsPerWord { get; }

    internal static HfWordPieceTokenizer FromVocabTxt(TokenizerFolder files)
    {
        var path = files.PathOf(TokenizerFolder.VocabTxt);
        var lines = new List<string?>();
        foreach (var line in File.ReadLines(path, Encoding.UTF8))
            lines.Add(line.TrimEnd() is { Length: > 0 } t ? t : null);
        if (lines.All(l => l is null))
            throw new InvalidDataException($"{path} holds no tokens.");

        bool lowerCase = files.ConfigBool("do_lower_case") ?? InferLowerCase(files);
        var basic = new BertBasicTokenizer(
            cleanText: true,
            handleChineseChars: files.ConfigBool("tokenize_chinese_chars") ?? true,
            stripAccents: files.ConfigBool("strip_accents") ?? lowerCase,
            lowerCase: lowerCase);

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < lines.Count; i++) if (lines[i] is { } t) vocab[t] = i;
        string unk = files.SpecialToken("unk_token") ?? "[UNK]";
        // BERT's special tokens are added tokens in Hugging Face: matched whole in the raw text, skipped by decode.
        var specials = new[] { unk, files.SpecialToken("sep_token") ?? "[SEP]", files.SpecialToken("pad_token") ?? "[PAD]",
            files.SpecialToken("cls_token") ?? "[CLS]", files.SpecialToken("mask_token") ?? "[MASK]" };
        var added = files.AddedTokensDecoder()
            .Concat(specials.Where(vocab.ContainsKey).Select(s => new AddedToken(vocab[s], s, Special: true)));

        var tokenizer = new HfWordPieceTokenizer(lines, basic, unk, "##", 100, new AddedTokens(added));
        tokenizer.ResolveSpecialTokens(files, cls: "[CLS]", sep: "[SEP]", pad: "[PAD]", unk: "[UNK]", mask: "[MASK]");
        if (tokenizer.ClsTokenId is { } cls && tokenizer.SepTokenId is { } sep)
            tokenizer.SetTemplate(PostProcessorTemplate.Bert((cls, tokenizer.IdToToken(cls)!), (sep, tokenizer.IdToToken(sep)!)));
        return tokenizer;
    }

    internal static HfWordPieceTokenizer FromTokenizerJson(TokenizerFolder files, JsonElement root, string path)
    {
        var model = root.GetProperty("model");
        var vocab = ReadVocab(model, path);
        var byId = new string?[vocab.Values.Max() + 1];
        foreach (var (token, id) in vocab) byId[id] = token;

        string unk = model.TryGetProperty("unk_token", out var u) && u.GetString() is { } us ? us : "[UNK]";
        string prefix = model.TryGetProperty("continuing_subword_prefix", out var p) && p.GetString() is { } ps ? ps : "##";
        int maxChars = model.TryGetProperty("max_input_chars_per_word", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt32() : 100;

        var basic = ReadBertNormalizer(root, path);
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object
            && pre.GetProperty("type").GetString() is { } preType && preType != "BertPreTokenizer")
            throw new NotSupportedException($"{path}: pre_tokenizer '{preType}' is not supported with WordPiece (supported: BertPreTokenizer).");

        var tokenizer = new HfWordPieceTokenizer(byId, basic, unk, prefix, maxChars, new AddedTokens(ReadAddedTokens(root)));
        tokenizer.ResolveSpecialTokens(files, cls: "[CLS]", sep: "[SEP]", pad: "[PAD]", unk: unk, mask: "[MASK]");
        tokenizer.SetTemplate(ReadPostProcessor(root, path) ?? PostProcessorTemplate.None);
        return tokenizer;
    }

    /// <summary>
    /// transformers' BertTokenizer lower-cases unless told otherwise; a folder named like a cased checkpoint
    /// ("bert-base-cased", "_name_or_path" in config.json) is taken as cased.
    /// </summary>
    private static bool InferLowerCase(TokenizerFolder files)
    {
        var names = new[] { Path.GetFileName(Path.TrimEndingDirectorySeparator(files.Folder)), files.SpecialToken("name_or_path") ?? "", files.ModelConfigString("_name_or_path") ?? "" };
        bool cased = names.Any(n => n.Contains("cased", StringComparison.OrdinalIgnoreCase) && !n.Contains("uncased", StringComparison.OrdinalIgnoreCase));
        return !cased;
    }

    private static BertBasicTokenizer ReadBertNormalizer(JsonElement root, string path)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind != JsonValueKind.Object)
            return new BertBasicTokenizer(cleanText: false, handleChineseChars: false, stripAccents: false, lowerCase: false);
        var type = n.GetProperty("type").GetString();
        if (type != "BertNormalizer")
            throw new NotSupportedException($"{path}: normalizer '{type}' is not supported with WordPiece (supported: BertNormalizer).");
        bool Flag(string name, bool fallback) => n.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
        bool lower = Flag("lowercase", true);
        return new BertBasicTokenizer(Flag("clean_text", true), Flag("handle_chinese_chars", true), Flag("strip_accents", lower), lower);
    }

    /// <summary>tokenizer.json's <c>model.vocab</c> object (token -> id), as WordPiece and BPE models store it.</summary>
    internal static Dictionary<string, int> ReadVocab(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out var vocabJson) || vocabJson.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: model.vocab is missing.");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in vocabJson.EnumerateObject()) vocab[p.Name] = p.Value.GetInt32();
        return vocab;
    }

    /// <summary>tokenizer.json's "added_tokens".</summary>
    internal static IEnumerable<AddedToken> ReadAddedTokens(JsonElement root)
    {
        if (!root.TryGetProperty("added_tokens", out var list) || list.ValueKind != JsonValueKind.Array) yield break;
        foreach (var t in list.EnumerateArray())
            yield return TokenizerFolder.ReadAddedToken(t.GetProperty("id").GetInt32(), t.GetProperty("content").GetString() ?? "", t);
    }

    /// <summary>tokenizer.json's post_processor as a template (TemplateProcessing, BertProcessing, RobertaProcessing), or null when it adds nothing.</summary>
    internal static PostProcessorTemplate? ReadPostProcessor(JsonElement root, string path)
    {
        if (!root.TryGetProperty("post_processor", out var pp) || pp.ValueKind != JsonValueKind.Object) return null;
        return ReadProcessor(pp, path);

        static PostProcessorTemplate? ReadProcessor(JsonElement pp, string path)
        {
            (int, string) Pair(string name) => (pp.GetProperty(name)[1].GetInt32(), pp.GetProperty(name)[0].GetString() ?? "");
            switch (pp.GetProperty("type").GetString())
            {
                case "TemplateProcessing": return PostProcessorTemplate.FromTemplateProcessing(pp, path);
                case "BertProcessing": return PostProcessorTemplate.Bert(Pair("cls"), Pair("sep"));
                case "RobertaProcessing": return PostProcessorTemplate.Roberta(Pair("cls"), Pair("sep"));
                case "ByteLevel": return null;
                case "Sequence":
                    PostProcessorTemplate? found = null;
                    foreach (var inner in pp.GetProperty("processors").EnumerateArray())
                        found = ReadProcessor(inner, path) ?? found;
                    return found;
                case var other: throw new NotSupportedException($"{path}: post_processor '{other}' is not supported.");
            }
        }
    }

    private protected override void EncodePlain(string text, int start, int end, List<RawToken> output)
    {
        int index = -1;
        foreach (var word in _basic.Split(text, start, end))
        {
            index++;
            if (word.CodePoints > MaxInputCharsPerWord)
            {
                var (s, e) = word.Span(0, word.Text.Length);
                output.Add(new RawToken(_wordPiece.UnknownTokenId, _wordPiece.UnknownToken, s, e, index));
                continue;
            }
            // One word at a time, with the library's own pre-tokenizer and normalizer off: offsets come back relative to the word.
            foreach (var token in _wordPiece.EncodeToTokens(word.Text, out _, considerPreTokenization: false, considerNormalization: false))
            {
                var (offset, length) = token.Offset.GetOffsetAndLength(word.Text.Length);
                var (s, e) = word.Span(offset, offset + length);
                output.Add(new RawToken(token.Id, token.Value, s, e, index));
            }
        }
    }

    private protected override string DecodeModelIds(IReadOnlyList<int> ids) => _wordPiece.Decode(ids) ?? "";

    private protected override string JoinDecodedParts(List<string> parts) => string.Join(" ", parts.Where(p => p.Length > 0));

    private protected override int ModelVocabularySize => _idToToken.Length;

    private protected override int? ModelTokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;

    private protected override string? ModelIdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;
}
