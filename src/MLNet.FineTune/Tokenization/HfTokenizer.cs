using System.Text;
using System.Text.Json;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// A tokenizer that reproduces a Hugging Face fast tokenizer (ids, character offsets, special tokens, pairs, and the
/// overflowing windows used for extractive question answering), built from the files of a Hugging Face model folder on
/// top of Microsoft.ML.Tokenizers.
/// </summary>
/// <remarks>
/// <see cref="FromFolder"/> picks the implementation from the files present:
/// <list type="table">
/// <listheader><term>file</term><description>tokenizer</description></listheader>
/// <item><term>tokenizer.json, model "WordPiece"</term><description><see cref="HfWordPieceTokenizer"/> (BERT family; settings from its BertNormalizer)</description></item>
/// <item><term>tokenizer.json, byte-level "BPE"</term><description><see cref="HfByteLevelBpeTokenizer"/> (GPT-2, RoBERTa, Llama 3, Qwen2)</description></item>
/// <item><term>vocab.txt</term><description><see cref="HfWordPieceTokenizer"/>; lower-casing from tokenizer_config.json <c>do_lower_case</c></description></item>
/// <item><term>tokenizer.model</term><description><see cref="HfSentencePieceTokenizer"/> (Llama 2 style SentencePiece BPE)</description></item>
/// </list>
/// All offsets are UTF-16 indices into the string that was passed in (see <see cref="HfEncoding"/>).
/// </remarks>
internal abstract class HfTokenizer
{
    private readonly AddedTokens _addedTokens;
    private PostProcessorTemplate _template = PostProcessorTemplate.None;

    private protected HfTokenizer(AddedTokens addedTokens) => _addedTokens = addedTokens;

    /// <summary>
    /// Loads the tokenizer of a Hugging Face model folder: tokenizer.json (WordPiece or byte-level BPE), else
    /// tokenizer.model (SentencePiece), else vocab.txt (WordPiece), with tokenizer_config.json / config.json for settings.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder has none of the tokenizer files.</exception>
    /// <exception cref="NotSupportedException">tokenizer.json describes a model this library does not implement, and no other file can stand in.</exception>
    public static HfTokenizer FromFolder(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"Tokenizer folder not found: '{folder}'.");
        var files = new TokenizerFolder(folder);

        if (files.Has(TokenizerFolder.TokenizerJson))
        {
            var path = files.PathOf(TokenizerFolder.TokenizerJson);
            using var doc = ReadTokenizerJson(path);
            var root = doc.RootElement;
            var modelType = root.TryGetProperty("model", out var model) && model.TryGetProperty("type", out var t) ? t.GetString() : null;
            if (modelType == "WordPiece")
                return HfWordPieceTokenizer.FromTokenizerJson(files, root, path);
            if (modelType == "BPE" && HfByteLevelBpeTokenizer.IsByteLevel(root))
                return HfByteLevelBpeTokenizer.FromTokenizerJson(files, root, path);
            // Llama 2 style folders also ship tokenizer.json (a SentencePiece-like BPE); their tokenizer.model is the source.
            if (!files.Has(TokenizerFolder.SentencePieceModel) && !files.Has(TokenizerFolder.VocabTxt))
                throw new NotSupportedException(
                    $"{path}: tokenizer model '{modelType ?? "(none)"}' is not supported (supported: WordPiece, byte-level BPE), " +
                    $"and the folder has neither {TokenizerFolder.SentencePieceModel} nor {TokenizerFolder.VocabTxt} to use instead.");
        }
        if (files.Has(TokenizerFolder.SentencePieceModel))
            return HfSentencePieceTokenizer.FromFolder(files);
        if (files.Has(TokenizerFolder.VocabTxt))
            return HfWordPieceTokenizer.FromVocabTxt(files);

        throw new FileNotFoundException(
            $"No tokenizer files in '{folder}': looked for {TokenizerFolder.TokenizerJson}, {TokenizerFolder.VocabTxt} and {TokenizerFolder.SentencePieceModel}.");
    }

    private static JsonDocument ReadTokenizerJson(string path)
    {
        try { return JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException ex) { throw new InvalidDataException($"{path} is not valid JSON: {ex.Message}", ex); }
    }

    /// <summary>Id of the classification token ([CLS], &lt;s&gt; for RoBERTa), or null.</summary>
    public int? ClsTokenId { get; private protected set; }
    /// <summary>Id of the separator token ([SEP], &lt;/s&gt; for RoBERTa), or null.</summary>
    public int? SepTokenId { get; private protected set; }
    /// <summary>Id of the padding token, or null when the tokenizer defines none (GPT-2, Llama).</summary>
    public int? PadTokenId { get; private protected set; }
    /// <summary>Id of the unknown token, or null (byte-level BPE never needs one).</summary>
    public int? UnkTokenId { get; private protected set; }
    /// <summary>Id of the beginning-of-sequence token, or null.</summary>
    public int? BosTokenId { get; private protected set; }
    /// <summary>Id of the end-of-sequence token, or null.</summary>
    public int? EosTokenId { get; private protected set; }
    /// <summary>Id of the mask token ([MASK]), or null.</summary>
    public int? MaskTokenId { get; private protected set; }

    /// <summary>tokenizer_config.json's <c>model_max_length</c> when it is a real limit, else null.</summary>
    public int? ModelMaxLength { get; private protected set; }

    /// <summary>Number of embedding rows the ids need: one more than the largest id of the vocabulary and the added tokens.</summary>
    public int VocabularySize => Math.Max(ModelVocabularySize, _addedTokens.All.Select(t => t.Id + 1).DefaultIfEmpty(0).Max());

    /// <summary>Ids of the special tokens (those <see cref="Decode"/> can skip).</summary>
    public IReadOnlyCollection<int> SpecialTokenIds => _addedTokens.All.Where(t => t.Special).Select(t => t.Id).ToArray();

    /// <summary>The id of a vocabulary or added token, or null when it has none.</summary>
    public int? TokenToId(string token) => _addedTokens.Find(token)?.Id ?? ModelTokenToId(token);

    /// <summary>The vocabulary string of an id, or null when the id is out of range.</summary>
    public string? IdToToken(int id) => _addedTokens.TryGet(id, out var t) ? t.Content : ModelIdToToken(id);

    /// <summary>Encodes one text.</summary>
    /// <param name="text">The text.</param>
    /// <param name="addSpecialTokens">Add the model's special tokens ([CLS] ... [SEP], &lt;s&gt; ...), as Hugging Face does by default.</param>
    /// <param name="maxLength">When set, the text's tokens are cut from the end so that the result (special tokens included) has at most this many.</param>
    public HfEncoding Encode(string text, bool addSpecialTokens = true, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        var a = EncodeRaw(text);
        if (maxLength is { } max)
            a = Take(a, max - CheckRoom(max, addSpecialTokens ? _template.AddedTokens(pair: false) : 0, nameof(maxLength)));
        return Assemble(a, null, addSpecialTokens, padTo: 0);
    }

    /// <summary>Encodes a pair of texts (sentence pair, question and context): token type ids tell the two apart.</summary>
    /// <param name="first">First text (token type 0).</param>
    /// <param name="second">Second text (token type 1 for BERT-style models).</param>
    /// <param name="addSpecialTokens">Add the model's special tokens, e.g. [CLS] A [SEP] B [SEP].</param>
    /// <param name="maxLength">When set, tokens are removed from the longer text first (Hugging Face's "longest_first").</param>
    public HfEncoding EncodePair(string first, string second, bool addSpecialTokens = true, int? maxLength = null)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        var a = EncodeRaw(first);
        var b = EncodeRaw(second);
        if (maxLength is { } max)
        {
            int budget = max - CheckRoom(max, addSpecialTokens ? _template.AddedTokens(pair: true) : 0, nameof(maxLength));
            if (a.Count + b.Count > budget)
            {
                // Hugging Face tokenizers' longest_first: the shorter keeps its length when it can, else both get half.
                int n1 = Math.Min(a.Count, b.Count), n2 = Math.Max(a.Count, b.Count);
                n2 = n1 > budget ? n1 : Math.Max(n1, budget - n1);
                if (n1 + n2 > budget) { n1 = budget / 2; n2 = n1 + budget % 2; }
                if (a.Count > b.Count) (n1, n2) = (n2, n1);
                a = Take(a, n1);
                b = Take(b, n2);
            }
        }
        return Assemble(a, b, addSpecialTokens, padTo: 0);
    }

    /// <summary>
    /// Encodes a question with a context that may be too long for the model, as Hugging Face fast tokenizers do with
    /// <c>truncation="only_second", max_length, stride, return_overflowing_tokens=True</c>: the question is kept whole
    /// in every window and the context is cut into windows of <c>maxLength - questionTokens - specialTokens</c> tokens,
    /// each starting <paramref name="stride"/> tokens before the previous one ended.
    /// </summary>
    /// <param name="question">First sequence, repeated in every window (token type 0, sequence id 0).</param>
    /// <param name="context">Second sequence, split into windows (sequence id 1).</param>
    /// <param name="maxLength">Length of each window, special tokens included.</param>
    /// <param name="stride">Number of context tokens shared by consecutive windows.</param>
    /// <param name="padToMaxLength">Pad every window to <paramref name="maxLength"/> (Hugging Face's padding="max_length").</param>
    /// <param name="windowing">
    /// <see cref="ContextWindowing.WholeContext"/> (default) covers the whole context, as Hugging Face tokenizers up to
    /// 0.22.2 do; <see cref="ContextWindowing.Tokenizers023"/> reproduces tokenizers 0.23.1-0.23.2 (transformers 5.x),
    /// whose truncation early exit drops the context past about maxLength tokens.
    /// </param>
    /// <returns>The windows in order; a context that fits gives one window.</returns>
    /// <exception cref="ArgumentException">The question leaves no room for context, or the stride is not smaller than the context room.</exception>
    /// <exception cref="InvalidOperationException">Padding was asked for and the tokenizer has no padding token.</exception>
    public IReadOnlyList<HfEncoding> EncodePairWindows(string question, string context, int maxLength, int stride, bool padToMaxLength = true,
        ContextWindowing windowing = ContextWindowing.WholeContext)
    {
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(context);
        ArgumentOutOfRangeException.ThrowIfNegative(stride);
        var a = EncodeRaw(question);
        var b = EncodeRaw(context);
        if (windowing == ContextWindowing.Tokenizers023)
            b = StopAfterWordReaching(b, maxLength);
        int padTo = padToMaxLength ? maxLength : 0;
        int added = _template.AddedTokens(pair: true);
        if (a.Count + b.Count + added <= maxLength)
            return [Assemble(a, b, addSpecialTokens: true, padTo)];

        int window = maxLength - added - a.Count;
        if (window <= 0)
            throw new ArgumentException(
                $"The question has {a.Count} tokens; with {added} special tokens it leaves no room for context in maxLength = {maxLength}.", nameof(question));
        if (stride >= window)
            throw new ArgumentException(
                $"stride ({stride}) must be smaller than the context tokens per window ({window} = maxLength {maxLength} - question {a.Count} - special {added}).", nameof(stride));

        var windows = new List<HfEncoding>();
        for (int start = 0; ; start += window - stride)
        {
            int end = Math.Min(start + window, b.Count);
            windows.Add(Assemble(a, b.GetRange(start, end - start), addSpecialTokens: true, padTo));
            if (end == b.Count) break;
        }
        return windows;
    }

    /// <summary>Turns ids back into text.</summary>
    /// <param name="ids">Token ids.</param>
    /// <param name="skipSpecialTokens">Leave out special tokens ([CLS], &lt;s&gt;, &lt;|endoftext|&gt;, ...).</param>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var parts = new List<string>();
        var run = new List<int>();
        void Flush()
        {
            if (run.Count == 0) return;
            parts.Add(DecodeModelIds(run));
            run.Clear();
        }
        foreach (var id in ids)
        {
            if (_addedTokens.TryGet(id, out var token))
            {
                if (skipSpecialTokens && token.Special) continue;
                Flush();
                parts.Add(token.Content);
            }
            else
                run.Add(id);
        }
        Flush();
        return JoinDecodedParts(parts);
    }

    /// <summary>Sets the special-token layout (from tokenizer.json's post_processor or the tokenizer family).</summary>
    private protected void SetTemplate(PostProcessorTemplate template) => _template = template;

    /// <summary>Model tokens for the plain text <c>text[start..end]</c> (no added tokens inside); offsets are absolute in <paramref name="text"/>.</summary>
    private protected abstract void EncodePlain(string text, int start, int end, List<RawToken> output);

    /// <summary>Decodes ids that are all model-vocabulary ids.</summary>
    private protected abstract string DecodeModelIds(IReadOnlyList<int> ids);

    /// <summary>How decoded pieces around added tokens are joined (WordPiece puts spaces between words).</summary>
    private protected virtual string JoinDecodedParts(List<string> parts) => string.Concat(parts);

    private protected abstract int ModelVocabularySize { get; }
    private protected abstract int? ModelTokenToId(string token);
    private protected abstract string? ModelIdToToken(int id);

    /// <summary>The token and id named by a tokenizer setting ("bos_token"), else the given default text if it is in the vocabulary.</summary>
    private protected int? ResolveSpecial(TokenizerFolder files, string key, string? defaultText = null)
    {
        var text = files.SpecialToken(key) ?? defaultText;
        return text is null ? null : TokenToId(text);
    }

    /// <summary>Reads the special token ids a folder names; config.json's ids fill what the tokenizer files leave out.</summary>
    private protected void ResolveSpecialTokens(TokenizerFolder files, string? cls = null, string? sep = null, string? pad = null,
        string? unk = null, string? bos = null, string? eos = null, string? mask = null)
    {
        ClsTokenId = ResolveSpecial(files, "cls_token", cls);
        SepTokenId = ResolveSpecial(files, "sep_token", sep);
        PadTokenId = ResolveSpecial(files, "pad_token", pad) ?? files.ModelConfigTokenId("pad_token_id");
        UnkTokenId = ResolveSpecial(files, "unk_token", unk);
        BosTokenId = ResolveSpecial(files, "bos_token", bos) ?? files.ModelConfigTokenId("bos_token_id");
        EosTokenId = ResolveSpecial(files, "eos_token", eos) ?? files.ModelConfigTokenId("eos_token_id");
        MaskTokenId = ResolveSpecial(files, "mask_token", mask);
        // transformers writes a huge sentinel (1e30) when the limit is unknown.
        ModelMaxLength = files.ConfigInt("model_max_length") is { } m and > 0 and < 1_000_000_000 ? (int)m : null;
    }

    private List<RawToken> EncodeRaw(string text)
    {
        var tokens = new List<RawToken>();
        int words = 0; // pre-token index across the whole text: each model call numbers its words from 0
        foreach (var segment in _addedTokens.Split(text))
        {
            if (segment.Token is { } added)
                tokens.Add(new RawToken(added.Id, added.Content, segment.Start, segment.End, words++));
            else if (segment.End > segment.Start)
            {
                int first = tokens.Count;
                EncodePlain(text, segment.Start, segment.End, tokens);
                int last = words;
                for (int i = first; i < tokens.Count; i++)
                {
                    tokens[i] = tokens[i] with { Word = words + tokens[i].Word };
                    last = Math.Max(last, tokens[i].Word + 1);
                }
                words = last;
            }
        }
        return tokens;
    }

    /// <summary>
    /// tokenizers 0.23.1-0.23.2 stop tokenizing a truncated sequence after the first word at which it holds at least
    /// <paramref name="maxTokens"/> tokens; the rest of the text never reaches the overflow windows.
    /// </summary>
    private static List<RawToken> StopAfterWordReaching(List<RawToken> tokens, int maxTokens)
    {
        for (int i = maxTokens - 1; i < tokens.Count; i++)
            if (i + 1 == tokens.Count || tokens[i + 1].Word != tokens[i].Word)
                return tokens.GetRange(0, i + 1);
        return tokens;
    }

    private static int CheckRoom(int maxLength, int added, string paramName)
    {
        if (maxLength <= added)
            throw new ArgumentOutOfRangeException(paramName, maxLength, $"maxLength must be larger than the {added} special tokens it has to hold.");
        return added;
    }

    private static List<RawToken> Take(List<RawToken> tokens, int count) => count >= tokens.Count ? tokens : tokens.GetRange(0, count);

    private HfEncoding Assemble(List<RawToken> a, List<RawToken>? b, bool addSpecialTokens, int padTo)
    {
        var pieces = b is null ? _template.Single : _template.Pair;
        int length = pieces.Sum(p => p.Sequence switch { 0 => a.Count, 1 => b!.Count, _ => addSpecialTokens ? p.Specials.Count : 0 });
        int total = Math.Max(length, padTo);
        if (total > length && PadTokenId is null)
            throw new InvalidOperationException("Padding was requested but this tokenizer has no padding token (pad_token in tokenizer_config.json).");

        var ids = new int[total];
        var tokens = new string[total];
        var types = new int[total];
        var mask = new int[total];
        var offsets = new (int, int)[total];
        var sequenceIds = new int?[total];
        int i = 0;
        foreach (var piece in pieces)
        {
            if (piece.Sequence is { } s)
            {
                foreach (var t in s == 0 ? a : b!)
                {
                    ids[i] = t.Id; tokens[i] = t.Value; types[i] = piece.TypeId; mask[i] = 1; offsets[i] = (t.Start, t.End); sequenceIds[i] = s;
                    i++;
                }
            }
            else if (addSpecialTokens)
            {
                foreach (var (id, token) in piece.Specials)
                {
                    ids[i] = id; tokens[i] = token; types[i] = piece.TypeId; mask[i] = 1;
                    i++;
                }
            }
        }
        var padToken = PadTokenId is { } p ? IdToToken(p) ?? "" : "";
        for (; i < total; i++) { ids[i] = PadTokenId!.Value; tokens[i] = padToken; }
        return new HfEncoding(ids, tokens, types, mask, offsets, sequenceIds);
    }
}

/// <summary>How <see cref="HfTokenizer.EncodePairWindows"/> cuts a long context into windows.</summary>
internal enum ContextWindowing
{
    /// <summary>
    /// Windows over the whole context: each starts <c>stride</c> tokens before the previous one ended, until the
    /// context's last token (Hugging Face tokenizers up to 0.22.2, and the fix proposed in huggingface/tokenizers#2098).
    /// </summary>
    WholeContext,

    /// <summary>
    /// Bit-for-bit what transformers 5.x with tokenizers 0.23.1-0.23.2 returns: the context is tokenized word by word only
    /// until it holds maxLength tokens, so at most the first windows exist and later context is silently dropped
    /// (huggingface/tokenizers#2091). For parity checks against those versions only.
    /// </summary>
    Tokenizers023,
}
