using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

using MLNet.FineTune.Tests.Tokenization;

namespace MLNet.FineTune.Tests.Tasks.CausalLM;

/// <summary>
/// The committed tiny causal fixtures (gpt2-tiny, llama-tiny, qwen2-tiny: random weights from transformers, vocabulary
/// 512) as complete Hugging Face folders: their config and weights plus a byte-level BPE tokenizer of 512 tokens
/// trained here on <see cref="Corpus"/> (256 bytes, 254 merges, &lt;|endoftext|&gt; = 510, &lt;|pad|&gt; = 511) and a
/// chat template (Zephyr's), so the causal task runs end to end in tests without ../shared.
/// </summary>
internal static class TinyCausalModels
{
    /// <summary>Short stories in a small vocabulary: the tokenizer's training text and the tests' data.</summary>
    public static readonly string[] Corpus =
    [
        "Tom the cat lives in Paris. Every day Tom walks to the park.",
        "Tom likes fish and milk. In Paris the sun is warm.",
        "One day Tom met a dog in the park. The dog was happy.",
        "Anna has a red ball. She plays with the ball in the garden.",
        "The bird sings in the tree. The tree is green and tall.",
        "Ben and Anna go to school. They read a book about the sea.",
        "The sea is blue. A small boat sails on the sea.",
        "Tom the cat sleeps on the bed in Paris. He dreams of fish.",
        "Q: What does Tom like? A: Tom likes fish.",
        "Q: Where does Tom live? A: Tom lives in Paris.",
    ];

    private static readonly string ChatTemplate = File.ReadAllText(TestPaths.Fixture("chat-templates", "zephyr", "tokenizer_config.json"));

    /// <summary>A folder with the fixture's config and weights and the tiny tokenizer (cached per test run).</summary>
    public static string Folder(string fixture) => Folders.GetOrAdd(fixture, Build);

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> Folders = new();

    /// <summary>This test run's folders, removed when the process exits.</summary>
    private static readonly Lazy<string> Root = new(() =>
    {
        var root = Path.Combine(Path.GetTempPath(), "mlnet-finetune-tests", $"causal-{Guid.NewGuid():N}");
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(root, recursive: true); }
            catch (IOException) { } // a file still mapped by a loaded model: the OS's temp cleanup takes it later
        };
        return root;
    });

    private static string Build(string fixture)
    {
        var dir = Path.Combine(Root.Value, $"{fixture}-with-bpe");
        Directory.CreateDirectory(dir);
        foreach (var file in new[] { "config.json", "model.safetensors", "generation_config.json" })
            File.Copy(TestPaths.Fixture("hf-reference", fixture, file), Path.Combine(dir, file));
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TokenizerJson.Value);
        var template = JsonNode.Parse(ChatTemplate)!["chat_template"]!.GetValue<string>();
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["tokenizer_class"] = "GPT2Tokenizer", ["eos_token"] = "<|endoftext|>", ["pad_token"] = "<|pad|>",
            ["model_max_length"] = 64, ["chat_template"] = template,
        }.ToJsonString());
        return dir;
    }

    private static readonly Lazy<string> TokenizerJson = new(BuildTokenizerJson);

    // GPT-2's pre-tokenizer split (contractions, letters, digits, other, spaces).
    private static readonly Regex Pretokenize = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    private static string BuildTokenizerJson()
    {
        var byteToChar = new char[256];
        for (int b = 0, next = 256; b < 256; b++)
            byteToChar[b] = b is >= '!' and <= '~' or >= '¡' and <= '¬' or >= '®' and <= 'ÿ' ? (char)b : (char)next++;
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) vocab[byteToChar[b].ToString()] = b;

        // Word counts of the corpus, each word as a list of byte-level symbols.
        var words = Corpus.SelectMany(line => Pretokenize.Matches(line).Select(m => m.Value))
            .GroupBy(w => w).Select(g => (Symbols: Encoding.UTF8.GetBytes(g.Key).Select(b => byteToChar[b].ToString()).ToList(), Count: g.Count())).ToList();
        var merges = new List<(string, string)>();
        while (vocab.Count < 510)
        {
            var pairs = new Dictionary<(string, string), int>();
            foreach (var (symbols, count) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    pairs[(symbols[i], symbols[i + 1])] = pairs.GetValueOrDefault((symbols[i], symbols[i + 1])) + count;
            if (pairs.Count == 0) break;
            var best = pairs.OrderByDescending(p => p.Value).ThenBy(p => p.Key.Item1, StringComparer.Ordinal).ThenBy(p => p.Key.Item2, StringComparer.Ordinal).First().Key;
            merges.Add(best);
            vocab[best.Item1 + best.Item2] = vocab.Count;
            foreach (var (symbols, _) in words)
                for (int i = 0; i + 1 < symbols.Count; i++)
                    if (symbols[i] == best.Item1 && symbols[i + 1] == best.Item2) { symbols[i] += symbols[i + 1]; symbols.RemoveAt(i + 1); }
        }
        // Fill to 510 with unused byte pairs so the ids are dense (the corpus may run out of pairs first).
        for (int b = 0; vocab.Count < 510; b++) vocab.TryAdd($"<unused{b}>", vocab.Count);

        return TokenizerTestData.ByteLevelBpeTokenizerJson(vocab, merges, [(510, "<|endoftext|>", false), (511, "<|pad|>", false)]);
    }
}
