using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// stories260K (llama2.c's TinyStories Llama converted to Hugging Face's layout; read from ../shared, never committed):
/// a real pretrained model, so trained RMSNorm weights, GQA and RoPE all shape the output.
/// Its fixture: expected.json greedy_from_bos (121 ids: &lt;s&gt; + 120 greedy tokens, from transformers 5.17) and
/// expected.safetensors prompt_logits [1, 512], the logits after the single token &lt;s&gt;.
/// </summary>
[TestClass]
public sealed class StoriesParityTests
{
    private static (string Folder, long Bos, long Eos, long[] Greedy, Tensor BosLogits, JsonObject Expected) LoadFixture()
    {
        var folder = TestPaths.SharedOrSkip("models", "stories260K");
        var config = HfConfig.Load(folder);
        long bos = config.GetInt("bos_token_id");
        var tokenizerConfig = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer_config.json")))!;
        Assert.AreEqual("<s>", tokenizerConfig["bos_token"]!.GetValue<string>(), "tokenizer_config's BOS should be <s>");
        var generation = HfConfig.Load(Path.Combine(folder, "generation_config.json"));
        Assert.AreEqual(bos, generation.GetInt("bos_token_id"), "config.json and generation_config.json disagree on BOS");
        var expected = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "fixture", "expected.json")))!;
        var greedy = expected["greedy_from_bos"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray();
        var logits = SafeTensors.Load(Path.Combine(folder, "fixture", "expected.safetensors"))["prompt_logits"];
        return (folder, bos, generation.GetInt("eos_token_id"), greedy, logits, expected);
    }

    [TestMethod]
    public void GreedyFromBosReproducesTransformers()
    {
        var f = LoadFixture();
        Assert.AreEqual(121, f.Greedy.Length);
        Assert.AreEqual(f.Bos, f.Greedy[0]);
        using var model = ModelFactory.FromPretrainedCausalLM(f.Folder);
        Assert.IsTrue(model.TiedWordEmbeddings);
        var started = DateTime.UtcNow;
        var ours = GreedyDecoder.Generate(model, [f.Bos], f.Greedy.Length - 1, [f.Eos]);
        var elapsed = DateTime.UtcNow - started;
        int mismatches = ours.Zip(f.Greedy).Count(p => p.First != p.Second) + Math.Abs(ours.Length - f.Greedy.Length);
        int firstDiff = ours.Zip(f.Greedy).TakeWhile(p => p.First == p.Second).Count();
        Console.WriteLine($"stories260K: greedy from <s> ({f.Bos}): {ours.Length} tokens, {mismatches} mismatches (first difference at {(mismatches == 0 ? "none" : firstDiff)}), {elapsed.TotalMilliseconds:F0} ms with the cache");
        Console.WriteLine($"ours: {string.Join(" ", ours.Take(24))} ...");
        CollectionAssert.AreEqual(f.Greedy, ours);
    }

    [TestMethod]
    public void LogitsAfterBosMatchTransformers()
    {
        var f = LoadFixture();
        using var model = ModelFactory.FromPretrainedCausalLM(f.Folder);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.call(tensor(new[] { f.Bos }, [1, 1]));                  // (1, 1, 512)
        var ours = logits.select(1, 0);                                             // (1, 512)
        CollectionAssert.AreEqual(f.BosLogits.shape, ours.shape);
        double error = (ours - f.BosLogits).abs().max().item<float>();
        Console.WriteLine($"stories260K: logits after <s>, max |ours - transformers| = {error:E3} (max |logit| {f.BosLogits.abs().max().item<float>():F3})");
        Assert.IsTrue(error <= 1e-4, $"max error {error:E3} > 1e-4");
    }

    [TestMethod]
    public void LeftPaddedBatchDecodesLikeSinglePrompts()
    {
        // Batched generation with left padding must give each prompt the continuation it gets alone.
        var f = LoadFixture();
        var prompts = f.Expected["tokenization_with_bos"]!.AsObject()
            .Select(p => (IReadOnlyList<long>)p.Value!.AsArray().Select(v => v!.GetValue<long>()).ToList()).ToList();
        Assert.IsTrue(prompts.Select(p => p.Count).Distinct().Count() > 1, "prompts of different lengths are needed to pad");
        using var model = ModelFactory.FromPretrainedCausalLM(f.Folder);
        var batched = GreedyDecoder.Generate(model, prompts, 20, [f.Eos]);
        int differing = 0;
        for (int i = 0; i < prompts.Count; i++)
        {
            var alone = GreedyDecoder.Generate(model, prompts[i], 20, [f.Eos]);
            if (!alone.SequenceEqual(batched[i])) differing++;
            Console.WriteLine($"prompt {i} ({prompts[i].Count} tokens, padded by {prompts.Max(p => p.Count) - prompts[i].Count}): alone == batched: {alone.SequenceEqual(batched[i])}");
        }
        Console.WriteLine($"stories260K: {differing} of {prompts.Count} left-padded rows differ from their single-prompt decode");
        Assert.AreEqual(0, differing);
    }
}
