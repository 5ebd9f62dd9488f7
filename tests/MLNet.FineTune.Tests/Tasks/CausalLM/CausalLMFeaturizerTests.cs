using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.Tests.Tokenization;
using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tasks.CausalLM;

/// <summary>Rows to token ids and labels: text, prompt + completion (prompt masked), messages; BOS/EOS, truncation, packing.</summary>
[TestClass]
public sealed class CausalLMFeaturizerTests
{
    private static HfTokenizer Gpt2() => HfTokenizer.FromFolder(TokenizerTestData.Gpt2TokenizerFolder());

    private static long[] Ids(HfTokenizer tokenizer, string text, bool special = true) =>
        tokenizer.Encode(text, special).Ids.Select(i => (long)i).ToArray();

    [TestMethod]
    public void TextIsAllTargetsWithEosAppended()
    {
        var tokenizer = Gpt2();
        var featurizer = new CausalLMFeaturizer(tokenizer, 64);
        var example = featurizer.FromText("Hello world, said the cat.", "row 0");
        var expected = Ids(tokenizer, "Hello world, said the cat.").Append(50256L).ToArray();   // GPT-2 adds no BOS; EOS <|endoftext|>
        Console.WriteLine($"text ids: {string.Join(" ", example.InputIds)}");
        CollectionAssert.AreEqual(expected, example.InputIds);
        CollectionAssert.AreEqual(expected, example.Labels);
        Assert.AreEqual(expected.Length - 1, example.TargetCount);
        // Already ending with EOS: not doubled; without AppendEos: none.
        CollectionAssert.AreEqual(expected, featurizer.FromText("Hello world, said the cat.<|endoftext|>", "row 1").InputIds);
        Assert.AreEqual(expected.Length - 1, new CausalLMFeaturizer(tokenizer, 64, appendEos: false).FromText("Hello world, said the cat.", "r").InputIds.Length);
        // Truncation keeps the first MaxSequenceLength tokens.
        CollectionAssert.AreEqual(expected[..4], new CausalLMFeaturizer(tokenizer, 4).FromText("Hello world, said the cat.", "r").InputIds);
    }

    [TestMethod]
    public void PromptCompletionMasksThePromptAsTrl()
    {
        var tokenizer = Gpt2();
        var featurizer = new CausalLMFeaturizer(tokenizer, 64);
        var example = featurizer.FromPromptCompletion("Q: What is 2+2?\nA:", " 4", "row 3");
        var whole = Ids(tokenizer, "Q: What is 2+2?\nA: 4").Append(50256L).ToArray();
        int promptLength = Ids(tokenizer, "Q: What is 2+2?\nA:").Length;
        Console.WriteLine($"ids {string.Join(" ", example.InputIds)}\nlabels {string.Join(" ", example.Labels)} (prompt {promptLength} tokens)");
        CollectionAssert.AreEqual(whole, example.InputIds);
        CollectionAssert.AreEqual(Enumerable.Repeat(-100L, promptLength).Concat(whole[promptLength..]).ToArray(), example.Labels);
        Assert.AreEqual(2, example.TargetCount, "' 4' and EOS");
    }

    [TestMethod]
    public void BadRowsAreNamedErrors()
    {
        var featurizer = new CausalLMFeaturizer(Gpt2(), 8);
        NamedErrors.Expect<ArgumentException>(() => featurizer.FromPromptCompletion("Say hi", "", "row 5 (columns 'Prompt', 'Completion')"), "row 5", "'Completion'", "completion is empty");
        NamedErrors.Expect<ArgumentException>(() => featurizer.FromPromptCompletion("one two three four five six seven eight nine", " ten", "row 2"),
            "row 2", "prompt has 9 tokens", "MaxSequenceLength = 8");
        NamedErrors.Expect<ArgumentException>(() => featurizer.FromText("", "row 0 of column 'Text'"), "row 0 of column 'Text'", "empty");
        NamedErrors.Expect<InvalidOperationException>(() => featurizer.FromMessages("""[{"role": "user", "content": "hi"}]""", "row 1"), "row 1", "chat template");
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => new CausalLMFeaturizer(Gpt2(), 1), "MaxSequenceLength");
    }

    [TestMethod]
    public void MessagesRenderWithTheTemplateAndAddNoSpecialTokens()
    {
        var tokenizer = Gpt2();
        var template = ChatTemplate.FromFolder(TestPaths.Fixture("chat-templates", "zephyr"));
        var featurizer = new CausalLMFeaturizer(tokenizer, 256, template);
        const string json = """[{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]""";
        var example = featurizer.FromMessages(json, "row 0");
        var rendered = template.ApplyJson(json);
        Assert.AreEqual("<|user|>\nName a colour.</s>\n<|assistant|>\nBlue.</s>\n", rendered);
        CollectionAssert.AreEqual(Ids(tokenizer, rendered, special: false), example.InputIds);
        CollectionAssert.AreEqual(example.InputIds, example.Labels);
        NamedErrors.Expect<ArgumentException>(() => featurizer.FromMessages("""{"role": "user"}""", "row 4 of column 'Messages'"), "row 4 of column 'Messages'", "JSON array");
        NamedErrors.Expect<InvalidOperationException>(
            () => new CausalLMFeaturizer(tokenizer, 256, ChatTemplate.FromFolder(TestPaths.Fixture("chat-templates", "mixtral"))).FromMessages("""[{"role": "system", "content": "x"}]""", "row 6"),
            "row 6", "Conversation roles must alternate");
    }

    [TestMethod]
    public void SentencePieceRowsStartWithBosAsTheTokenizerConfigSays()
    {
        var tokenizer = HfTokenizer.FromFolder(TestPaths.SharedOrSkip("models", "stories260K"));   // add_bos_token true, add_eos_token false
        var featurizer = new CausalLMFeaturizer(tokenizer, 64);
        var text = featurizer.FromText("Once upon a time", "row 0");
        var pc = featurizer.FromPromptCompletion("Once upon a time", " there was a cat.", "row 0");
        Console.WriteLine($"text {string.Join(" ", text.InputIds)}; prompt/completion {string.Join(" ", pc.InputIds)} / {string.Join(" ", pc.Labels)}");
        Assert.AreEqual(1L, text.InputIds[0], "BOS <s>");
        Assert.AreEqual(2L, text.InputIds[^1], "EOS </s> appended");
        Assert.AreEqual(1L, pc.InputIds[0]);
        Assert.AreEqual(-100L, pc.Labels[0]);
        CollectionAssert.AreEqual(featurizer.EncodePrompt("Once upon a time"), text.InputIds[..^1]);
    }

    [TestMethod]
    public void PackingKeepsEveryRowAndItsTargets()
    {
        var featurizer = new CausalLMFeaturizer(Gpt2(), 64);
        var rows = new[] { "a cat sat", "the dog ran far away today", "hi", "birds sing in the morning light", "yes" }
            .Select((t, i) => i % 2 == 0 ? featurizer.FromText(t, $"row {i}") : featurizer.FromPromptCompletion("Q:", " " + t, $"row {i}")).ToList();
        var packed = CausalLMFeaturizer.Pack(rows, 12);
        Console.WriteLine($"{rows.Count} rows ({string.Join(", ", rows.Select(r => r.InputIds.Length))} tokens) -> {packed.Count} packs ({string.Join(", ", packed.Select(p => p.InputIds.Length))})");
        Assert.IsTrue(packed.Count < rows.Count);
        Assert.IsTrue(packed.All(p => p.InputIds.Length <= 12 || rows.Any(r => r.InputIds.Length == p.InputIds.Length)));
        CollectionAssert.AreEqual(rows.SelectMany(r => r.InputIds).ToArray(), packed.SelectMany(p => p.InputIds).ToArray());
        Assert.AreEqual(CausalLMLoss.CountTargets(rows), CausalLMLoss.CountTargets(packed), "no target is added at a row boundary");
    }
}
