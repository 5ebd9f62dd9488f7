using Microsoft.ML.Tokenizers;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// SentencePiece tokenizer from a folder's tokenizer.model (Llama 2 style BPE with byte fallback), encoded by
/// Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>. BOS/EOS follow tokenizer_config.json's
/// <c>add_bos_token</c> (default true) and <c>add_eos_token</c> (default false), as transformers' LlamaTokenizer.
/// </summary>
/// <remarks>
/// Offsets: the library reports them in its normalized text ("▁" dummy prefix, spaces escaped as "▁"). With the
/// identity normalizer Llama models use, that text is the input one-for-one after the prefix, so offsets map back
/// exactly; a model whose normalizer changes the length (nmt_nfkc collapsing spaces) gets approximate offsets.
/// </remarks>
internal sealed class HfSentencePieceTokenizer : HfTokenizer
{
    private readonly SentencePieceTokenizer _sentencePiece;
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<int, string> _idToToken;

    private HfSentencePieceTokenizer(SentencePieceTokenizer sentencePiece, AddedTokens added) : base(added)
    {
        _sentencePiece = sentencePiece;
        _vocab = new Dictionary<string, int>(sentencePiece.Vocabulary, StringComparer.Ordinal);
        _idToToken = [];
        foreach (var (token, id) in _vocab) _idToToken.TryAdd(id, token);
    }

    /// <summary>Whether <see cref="HfTokenizer.Encode"/> starts each sequence with BOS when special tokens are added.</summary>
    public bool AddBos { get; private init; }

    /// <summary>Whether <see cref="HfTokenizer.Encode"/> ends each sequence with EOS when special tokens are added.</summary>
    public bool AddEos { get; private init; }

    internal static HfSentencePieceTokenizer FromFolder(TokenizerFolder files)
    {
        var path = files.PathOf(TokenizerFolder.SentencePieceModel);
        SentencePieceTokenizer sentencePiece;
        try
        {
            using var stream = File.OpenRead(path);
            // BOS/EOS are added by the shared template (so pairs work too), not by the library.
            sentencePiece = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception ex) when (ex is not IOException)
        {
            throw new InvalidDataException($"{path} could not be read as a SentencePiece model: {ex.Message}", ex);
        }

        var specials = new[]
        {
            (Text: files.SpecialToken("bos_token") ?? sentencePiece.BeginningOfSentenceToken, Id: sentencePiece.BeginningOfSentenceId),
            (Text: files.SpecialToken("eos_token") ?? sentencePiece.EndOfSentenceToken, Id: sentencePiece.EndOfSentenceId),
            (Text: files.SpecialToken("unk_token") ?? sentencePiece.UnknownToken, Id: sentencePiece.UnknownId),
        };
        var added = files.AddedTokensDecoder().Concat(specials
            .Select(s => (s.Text, Id: sentencePiece.Vocabulary.TryGetValue(s.Text, out var id) ? id : s.Id))
            .Select(s => new AddedToken(s.Id, s.Text, Special: true)));

        var tokenizer = new HfSentencePieceTokenizer(sentencePiece, new AddedTokens(added))
        {
            AddBos = files.ConfigBool("add_bos_token") ?? true,
            AddEos = files.ConfigBool("add_eos_token") ?? false,
        };
        tokenizer.ResolveSpecialTokens(files, pad: null, unk: sentencePiece.UnknownToken,
            bos: sentencePiece.BeginningOfSentenceToken, eos: sentencePiece.EndOfSentenceToken);
        (int, string)? Special(int? id, bool use) => use && id is { } i ? (i, tokenizer.IdToToken(i) ?? "") : null;
        tokenizer.SetTemplate(PostProcessorTemplate.BosEos(Special(tokenizer.BosTokenId, tokenizer.AddBos), Special(tokenizer.EosTokenId, tokenizer.AddEos)));
        return tokenizer;
    }

    private protected override void EncodePlain(string text, int start, int end, List<RawToken> output)
    {
        var slice = text[start..end];
        var tokens = _sentencePiece.EncodeToTokens(slice, out string? normalized, considerPreTokenization: false, considerNormalization: true);
        normalized ??= slice;
        // Index k of the normalized text is index k - prefix of the slice when the normalizer only escaped spaces.
        int prefix = Math.Max(0, normalized.Length - slice.Length);
        int first = output.Count;
        foreach (var token in tokens)
        {
            var (offset, length) = token.Offset.GetOffsetAndLength(normalized.Length);
            int s = Math.Clamp(offset - prefix, 0, slice.Length);
            int e = Math.Clamp(offset + length - prefix, s, slice.Length);
            // Byte-fallback pieces after the first of a character come back empty: they cover the same character.
            if (e == s && output.Count > first && IsByteToken(token.Value))
                (s, e) = (output[^1].Start - start, output[^1].End - start);
            output.Add(new RawToken(token.Id, token.Value, start + s, start + e));
        }
    }

    private static bool IsByteToken(string value) => value.Length == 6 && value.StartsWith("<0x", StringComparison.Ordinal) && value[5] == '>';

    private protected override string DecodeModelIds(IReadOnlyList<int> ids) => _sentencePiece.Decode(ids, considerSpecialTokens: false) ?? "";

    private protected override int ModelVocabularySize => _idToToken.Count == 0 ? 0 : _idToToken.Keys.Max() + 1;

    private protected override int? ModelTokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;

    private protected override string? ModelIdToToken(int id) => _idToToken.TryGetValue(id, out var t) ? t : null;
}
