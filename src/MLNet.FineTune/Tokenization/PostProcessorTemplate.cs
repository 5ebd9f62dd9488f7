using System.Text.Json;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// A token produced by a tokenizer model, before special tokens are added; offsets index the original text. Word is the
/// index of the pre-token (word, regex piece) it came from, counted within one call of the model.
/// </summary>
internal readonly record struct RawToken(int Id, string Value, int Start, int End, int Word = 0);

/// <summary>
/// Where special tokens go around one sequence or a pair, and which token type each part gets: Hugging Face's
/// <c>TemplateProcessing</c> (BERT's <c>[CLS] $A [SEP] $B [SEP]</c>, Llama's <c>&lt;s&gt; $A</c>), which also expresses
/// <c>BertProcessing</c> and <c>RobertaProcessing</c>.
/// </summary>
internal sealed class PostProcessorTemplate
{
    /// <summary>One template item: either special tokens (Sequence = null) or the tokens of sequence 0 (A) or 1 (B).</summary>
    internal readonly record struct Piece(int? Sequence, IReadOnlyList<(int Id, string Token)> Specials, int TypeId);

    public PostProcessorTemplate(IReadOnlyList<Piece> single, IReadOnlyList<Piece> pair)
    {
        Single = single;
        Pair = pair;
    }

    public IReadOnlyList<Piece> Single { get; }
    public IReadOnlyList<Piece> Pair { get; }

    /// <summary>No special tokens; the second sequence of a pair gets token type 1.</summary>
    public static PostProcessorTemplate None { get; } = new(
        [new Piece(0, [], 0)],
        [new Piece(0, [], 0), new Piece(1, [], 1)]);

    /// <summary>Number of special tokens the template adds around one sequence (pair: false) or a pair (pair: true).</summary>
    public int AddedTokens(bool pair) => (pair ? Pair : Single).Sum(p => p.Specials.Count);

    /// <summary>BERT: <c>[CLS] A [SEP]</c> and <c>[CLS] A [SEP] B [SEP]</c>, B and its [SEP] with type 1.</summary>
    public static PostProcessorTemplate Bert((int Id, string Token) cls, (int Id, string Token) sep) => new(
        [new Piece(null, [cls], 0), new Piece(0, [], 0), new Piece(null, [sep], 0)],
        [new Piece(null, [cls], 0), new Piece(0, [], 0), new Piece(null, [sep], 0), new Piece(1, [], 1), new Piece(null, [sep], 1)]);

    /// <summary>RoBERTa: <c>&lt;s&gt; A &lt;/s&gt;</c> and <c>&lt;s&gt; A &lt;/s&gt;&lt;/s&gt; B &lt;/s&gt;</c>, all type 0 (RoBERTa has one token type).</summary>
    public static PostProcessorTemplate Roberta((int Id, string Token) cls, (int Id, string Token) sep) => new(
        [new Piece(null, [cls], 0), new Piece(0, [], 0), new Piece(null, [sep], 0)],
        [new Piece(null, [cls], 0), new Piece(0, [], 0), new Piece(null, [sep, sep], 0), new Piece(1, [], 0), new Piece(null, [sep], 0)]);

    /// <summary>Llama (SentencePiece) style: optional BOS before and EOS after each sequence; the second sequence has type 1.</summary>
    public static PostProcessorTemplate BosEos((int Id, string Token)? bos, (int Id, string Token)? eos)
    {
        List<Piece> Around(int sequence)
        {
            var pieces = new List<Piece>();
            if (bos is { } b) pieces.Add(new Piece(null, [b], sequence));
            pieces.Add(new Piece(sequence, [], sequence));
            if (eos is { } e) pieces.Add(new Piece(null, [e], sequence));
            return pieces;
        }
        return new PostProcessorTemplate(Around(0), [.. Around(0), .. Around(1)]);
    }

    /// <summary>Reads a <c>TemplateProcessing</c> object of tokenizer.json.</summary>
    public static PostProcessorTemplate FromTemplateProcessing(JsonElement processor, string source)
    {
        var specials = new Dictionary<string, List<(int, string)>>(StringComparer.Ordinal);
        if (processor.TryGetProperty("special_tokens", out var st) && st.ValueKind == JsonValueKind.Object)
        {
            foreach (var entry in st.EnumerateObject())
            {
                var ids = entry.Value.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToList();
                var tokens = entry.Value.GetProperty("tokens").EnumerateArray().Select(e => e.GetString() ?? "").ToList();
                if (ids.Count != tokens.Count)
                    throw new InvalidDataException($"{source}: post_processor.special_tokens['{entry.Name}'] has {ids.Count} ids but {tokens.Count} tokens.");
                specials[entry.Name] = ids.Zip(tokens).Select(x => (x.First, x.Second)).ToList();
            }
        }

        List<Piece> Read(string name)
        {
            if (!processor.TryGetProperty(name, out var items) || items.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{source}: post_processor (TemplateProcessing) has no '{name}' template.");
            var pieces = new List<Piece>();
            foreach (var item in items.EnumerateArray())
            {
                if (item.TryGetProperty("Sequence", out var seq))
                {
                    var which = seq.GetProperty("id").GetString();
                    pieces.Add(new Piece(which == "B" ? 1 : 0, [], seq.TryGetProperty("type_id", out var t) ? t.GetInt32() : 0));
                }
                else if (item.TryGetProperty("SpecialToken", out var sp))
                {
                    var id = sp.GetProperty("id").GetString() ?? "";
                    if (!specials.TryGetValue(id, out var tokens))
                        throw new InvalidDataException($"{source}: post_processor template uses special token '{id}' that special_tokens does not define.");
                    pieces.Add(new Piece(null, tokens, sp.TryGetProperty("type_id", out var t) ? t.GetInt32() : 0));
                }
                else
                    throw new InvalidDataException($"{source}: post_processor template item {item} is neither Sequence nor SpecialToken.");
            }
            return pieces;
        }

        return new PostProcessorTemplate(Read("single"), Read("pair"));
    }
}
