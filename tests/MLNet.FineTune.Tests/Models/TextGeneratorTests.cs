using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tokenization;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// The one generator (greedy, sampling, repetition penalty, stop tokens/strings, batches with left padding and the
/// cache) against transformers' greedy fixtures, PEFT's adapter logits and stories260K's 121-token reference.
/// </summary>
[TestClass]
public sealed class TextGeneratorTests
{
    private static CausalLanguageModel Load(string fixture) =>
        ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", fixture));

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    [DataRow("qwen2-tiny")]
    public void GreedyEqualsTransformersFixture(string name)
    {
        var fixture = CausalFixture.Load(name);
        using var model = Load(name);
        var result = TextGenerator.Generate(model, [fixture.GeneratePrompt], new GenerationOptions { MaxNewTokens = fixture.MaxNewTokens })[0];
        var ours = fixture.GeneratePrompt.Concat(result.Tokens).ToArray();
        Console.WriteLine($"{name}: transformers {string.Join(" ", fixture.GreedyTokens)}\n{name}: ours         {string.Join(" ", ours)} ({result.StopReason})");
        CollectionAssert.AreEqual(fixture.GreedyTokens, ours);
        Assert.AreEqual(GenerationStopReason.MaxNewTokens, result.StopReason);
    }

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    [DataRow("qwen2-tiny")]
    public void GreedyWithPeftsAdapterPicksTheArgmaxOfPeftsLogits(string name)
    {
        // The adapter fixtures hold PEFT's logits for input_ids (no generated sequence): the greedy next token after
        // every prefix of every row must be the argmax of PEFT's logits at that position.
        var fixture = CausalFixture.Load(name);
        using var model = Load(name);
        PeftModel.LoadAdapter(model, Path.Combine(fixture.Folder, "adapter"));
        var expected = SafeTensors.Load(Path.Combine(fixture.Folder, "adapter", "expected.safetensors"))["logits"];   // (B, T, V)
        var prefixes = new List<IReadOnlyList<long>>();
        var argmax = new List<long>();
        for (int row = 0; row < fixture.InputIds.Length; row++)
            for (int k = 1; k <= fixture.InputIds[row].Length; k++)
            {
                prefixes.Add(fixture.InputIds[row][..k]);
                argmax.Add(expected[row, k - 1].argmax().item<long>());
            }
        // All prefixes in one left-padded batch: every row sits at a different padding offset.
        var ours = TextGenerator.Generate(model, prefixes, new GenerationOptions { MaxNewTokens = 1, BatchSize = prefixes.Count });
        int mismatches = ours.Zip(argmax).Count(p => p.First.Tokens[0] != p.Second);
        Console.WriteLine($"{name} + PEFT adapter: {prefixes.Count} prefixes, {mismatches} next tokens differ from the argmax of PEFT's logits");
        CollectionAssert.AreEqual(argmax, ours.Select(o => o.Tokens[0]).ToList());

        // Without the adapter's effect the choices differ somewhere (the adapter matters for generation).
        var baseArgmax = Enumerable.Range(0, prefixes.Count).Select(i => fixture.Logits[i / fixture.InputIds[0].Length, i % fixture.InputIds[0].Length].argmax().item<long>());
        Assert.IsTrue(baseArgmax.Zip(argmax).Any(p => p.First != p.Second), "PEFT's adapter changes at least one greedy choice");
    }

    private static (string Folder, long Bos, long Eos, long[] Greedy) Stories()
    {
        var folder = TestPaths.SharedOrSkip("models", "stories260K");
        var expected = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "fixture", "expected.json")))!;
        var greedy = expected["greedy_from_bos"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray();
        var config = HfConfig.Load(folder);
        return (folder, config.GetInt("bos_token_id"), config.GetInt("eos_token_id"), greedy);
    }

    [TestMethod]
    public void StoriesGreedyReproducesTheReferenceAndStopsAtStrings()
    {
        var s = Stories();
        using var model = ModelFactory.FromPretrainedCausalLM(s.Folder);
        var tokenizer = HfTokenizer.FromFolder(s.Folder);
        var result = TextGenerator.Generate(model, [[s.Bos]], new GenerationOptions { MaxNewTokens = s.Greedy.Length - 1 }, [s.Eos])[0];
        var ours = new[] { s.Bos }.Concat(result.Tokens).ToArray();
        Console.WriteLine($"stories260K: {ours.Length} tokens, stop: {result.StopReason}; equal to transformers: {ours.SequenceEqual(s.Greedy)}");
        CollectionAssert.AreEqual(s.Greedy, ours);

        // A stop string that first appears inside token 20's text ends the row there, the text cut after it.
        string Decode(IReadOnlyList<long> ids) => tokenizer.Decode(ids.Select(i => (int)i));
        var full = Decode(result.Tokens);
        var upTo20 = Decode(result.Tokens[..20]);
        var before = Decode(result.Tokens[..19]);
        var stop = upTo20[Math.Max(0, before.Length - 2)..].Trim();
        Assert.IsFalse(before.Contains(stop, StringComparison.Ordinal), $"'{stop}' must first appear at token 20");
        var stopped = TextGenerator.Generate(model, [[s.Bos]], new GenerationOptions { MaxNewTokens = 100, StopStrings = ["never there", stop] }, [s.Eos], decode: Decode)[0];
        Console.WriteLine($"stop string '{stop}': {stopped.Tokens.Length} tokens, reason {stopped.StopReason}, kept text: '{Decode(stopped.Tokens)[..stopped.StopStringEnd!.Value]}'");
        Assert.AreEqual(GenerationStopReason.StopString, stopped.StopReason);
        CollectionAssert.AreEqual(result.Tokens[..20], stopped.Tokens);
        Assert.IsTrue(Decode(stopped.Tokens)[..stopped.StopStringEnd!.Value].EndsWith(stop, StringComparison.Ordinal));
        Assert.IsTrue(full.StartsWith(Decode(stopped.Tokens), StringComparison.Ordinal));

        NamedErrors.Expect<ArgumentException>(() => TextGenerator.Generate(model, [[s.Bos]], new GenerationOptions { StopStrings = ["x"] }), "StopStrings", "decode");
    }

    [TestMethod]
    public void StopTokensEndARowAndAreKept()
    {
        // llama-tiny greedily continues its prompt with 119 137 454 ...: 137 as a stop token ends the row right after it.
        using var model = Load("llama-tiny");
        long[] prompt = [5, 17, 99, 230, 41, 8, 77, 300];
        var both = TextGenerator.Generate(model, [prompt, [12, 13, 14, 15]], new GenerationOptions { MaxNewTokens = 12, StopTokenIds = [137] });
        Console.WriteLine($"row 0: {string.Join(" ", both[0].Tokens)} ({both[0].StopReason}); row 1: {string.Join(" ", both[1].Tokens)} ({both[1].StopReason})");
        CollectionAssert.AreEqual(new long[] { 119, 137 }, both[0].Tokens);
        Assert.AreEqual(GenerationStopReason.StopToken, both[0].StopReason);
        var alone = TextGenerator.Generate(model, [[12, 13, 14, 15]], new GenerationOptions { MaxNewTokens = 12, StopTokenIds = [137] })[0];
        CollectionAssert.AreEqual(alone.Tokens, both[1].Tokens, "a row that ended early does not disturb the others");
    }

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    [DataRow("qwen2-tiny")]
    public void BatchedLeftPaddedEqualsOneByOneWithRepetitionPenalty(string name)
    {
        using var model = Load(name);
        IReadOnlyList<long>[] prompts = [[5, 17, 99, 230, 41, 8, 77, 300], [12, 13, 14], [400, 3, 77, 250, 9], [7]];
        var options = new GenerationOptions { MaxNewTokens = 16, RepetitionPenalty = 1.3, BatchSize = 4 };
        var batched = TextGenerator.Generate(model, prompts, options);
        var single = prompts.Select(p => TextGenerator.Generate(model, [p], options with { BatchSize = 1 })[0]).ToArray();
        var plain = TextGenerator.Generate(model, prompts, options with { RepetitionPenalty = 1.0 });
        int differing = batched.Zip(single).Count(p => !p.First.Tokens.SequenceEqual(p.Second.Tokens));
        int penalized = batched.Zip(plain).Count(p => !p.First.Tokens.SequenceEqual(p.Second.Tokens));
        Console.WriteLine($"{name}: {differing} of {prompts.Length} batched rows differ from one-by-one; the penalty changed {penalized} rows");
        for (int i = 0; i < prompts.Length; i++) CollectionAssert.AreEqual(single[i].Tokens, batched[i].Tokens, $"row {i}");
        Assert.IsTrue(penalized > 0, "a 1.3 repetition penalty changes some 16-token greedy continuation");
    }

    [TestMethod]
    public void SeededSamplingIsReproducibleAndColdSamplingIsGreedy()
    {
        var s = Stories();
        using var model = ModelFactory.FromPretrainedCausalLM(s.Folder);
        IReadOnlyList<long>[] prompts = [[s.Bos], [s.Bos, 403]];
        var sampling = new GenerationOptions { MaxNewTokens = 40, DoSample = true, Temperature = 1.0, TopK = 50, TopP = 0.95, Seed = 7 };
        var first = TextGenerator.Generate(model, prompts, sampling, [s.Eos]);
        var again = TextGenerator.Generate(model, prompts, sampling, [s.Eos]);
        var otherSeed = TextGenerator.Generate(model, prompts, sampling with { Seed = 8 }, [s.Eos]);
        var greedy = TextGenerator.Generate(model, prompts, new GenerationOptions { MaxNewTokens = 40 }, [s.Eos]);
        var cold = TextGenerator.Generate(model, prompts, sampling with { Temperature = 1e-4 }, [s.Eos]);
        var zero = TextGenerator.Generate(model, prompts, sampling with { Temperature = 0 }, [s.Eos]);
        bool Same(GeneratedSequence[] a, GeneratedSequence[] b) => a.Zip(b).All(p => p.First.Tokens.SequenceEqual(p.Second.Tokens));
        Console.WriteLine($"seed 7 twice equal: {Same(first, again)}; seed 8 equal to seed 7: {Same(first, otherSeed)}; sampled equal to greedy: {Same(first, greedy)}; T=1e-4 equal to greedy: {Same(cold, greedy)}; T=0: {Same(zero, greedy)}");
        Assert.IsTrue(Same(first, again), "same seed, same text");
        Assert.IsFalse(Same(first, otherSeed), "another seed gives another sample");
        Assert.IsFalse(Same(first, greedy), "sampling at T=1 leaves the greedy path");
        Assert.IsTrue(Same(cold, greedy), "T -> 0 is greedy");
        Assert.IsTrue(Same(zero, greedy), "T = 0 means greedy");
    }

    [TestMethod]
    public void ProcessorsAndWarpersMatchTransformersOnAHandWorkedCase()
    {
        using var scope = NewDisposeScope();
        // Repetition penalty 2 on seen tokens {0, 1}: 2 -> 1 (divided), -2 -> -4 (multiplied), unseen 1 stays.
        var penalized = TextGenerator.PenalizeRepetition(tensor(new[] { 2f, -2f, 1f }).unsqueeze(0), [new HashSet<long> { 0, 1 }], 2.0);
        CollectionAssert.AreEqual(new[] { 1f, -4f, 1f }, penalized.data<float>().ToArray());

        // Top-k 2 keeps the two largest.
        var warpedK = TextGenerator.WarpForSampling(tensor(new[] { 1f, 3f, 2f, 0f }).unsqueeze(0), new GenerationOptions { TopK = 2 });
        CollectionAssert.AreEqual(new[] { float.NegativeInfinity, 3f, 2f, float.NegativeInfinity }, warpedK.data<float>().ToArray());
        var logits = tensor(new[] { 0.5f, 0.3f, 0.15f, 0.05f }).log().unsqueeze(0);
        var warpedP = TextGenerator.WarpForSampling(logits, new GenerationOptions { TopK = 0, TopP = 0.6 });
        var kept = warpedP.data<float>().Select(v => !float.IsNegativeInfinity(v)).ToArray();
        Console.WriteLine($"top-p 0.6 keeps {string.Join(", ", kept)}");
        // Ascending: 0.05 (cum 0.05), 0.15 (0.20), 0.3 (0.50), 0.5 (1.0); removed where cum <= 0.4: 0.05 and 0.15.
        CollectionAssert.AreEqual(new[] { true, true, false, false }, kept);
        var temperature = TextGenerator.WarpForSampling(tensor(new[] { 1f, 2f }).unsqueeze(0), new GenerationOptions { TopK = 0, Temperature = 0.5 });
        CollectionAssert.AreEqual(new[] { 2f, 4f }, temperature.data<float>().ToArray());

        NamedErrors.Expect<ArgumentOutOfRangeException>(() => new GenerationOptions { TopP = 0 }.Validate(), "TopP");
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => new GenerationOptions { Temperature = -1 }.Validate(), "Temperature");
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => new GenerationOptions { RepetitionPenalty = 0 }.Validate(), "RepetitionPenalty");
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => new GenerationOptions { MaxNewTokens = -1 }.Validate(), "MaxNewTokens");
    }
}
