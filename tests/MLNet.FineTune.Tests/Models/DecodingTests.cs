using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>Padding, positions, the cache, stopping and sliding windows of the causal models and the greedy decoder.</summary>
[TestClass]
public sealed class DecodingTests
{
    private static CausalLanguageModel Load(string fixture) =>
        ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", fixture));

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    [DataRow("qwen2-tiny")]
    public void LeftPaddedRowsGiveTheLogitsOfTheUnpaddedPrompt(string fixture)
    {
        // Row 1 is a 5-token prompt left-padded to 8: with the mask, its real positions must get the logits the
        // prompt gets alone (positions from the mask's cumsum start at 0 after the padding).
        using var model = Load(fixture);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long[] longPrompt = [5, 17, 99, 230, 41, 8, 77, 300], shortPrompt = [12, 13, 14, 15, 16];
        var ids = tensor(longPrompt.Concat(new long[] { 0, 0, 0 }).Concat(shortPrompt).ToArray(), [2, 8]);
        var mask = tensor(Enumerable.Repeat(1L, 8).Concat([0, 0, 0, 1, 1, 1, 1, 1]).ToArray(), [2, 8]);
        var batched = model.call(ids, mask);                                             // (2, 8, V)
        var aloneShort = model.call(tensor(shortPrompt, [1, 5]));
        var aloneLong = model.call(tensor(longPrompt, [1, 8]));
        double errorShort = (batched[1].narrow(0, 3, 5) - aloneShort[0]).abs().max().item<float>();
        double errorLong = (batched[0] - aloneLong[0]).abs().max().item<float>();
        Assert.IsFalse(batched.isnan().any().item<bool>(), "padding produced NaN");
        Console.WriteLine($"{fixture}: left-padded row vs alone max |diff| = {errorShort:E3}; unpadded row {errorLong:E3}");
        Assert.IsTrue(errorShort <= 1e-5 && errorLong <= 1e-5);
    }

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    public void BatchedGreedyWithPaddingEqualsSinglePrompts(string fixture)
    {
        using var model = Load(fixture);
        IReadOnlyList<long>[] prompts = [[5, 17, 99, 230, 41, 8, 77, 300], [12, 13, 14], [400, 3, 77, 250, 9]];
        var batched = GreedyDecoder.Generate(model, prompts, 10);
        var single = prompts.Select(p => GreedyDecoder.Generate(model, p, 10)).ToArray();
        int differing = batched.Zip(single).Count(p => !p.First.SequenceEqual(p.Second));
        Console.WriteLine($"{fixture}: {differing} of {prompts.Length} batched rows differ from single-prompt decoding");
        for (int i = 0; i < prompts.Length; i++) CollectionAssert.AreEqual(single[i], batched[i], $"row {i}");
    }

    [TestMethod]
    public void GenerationStopsAtEndOfSequence()
    {
        // llama-tiny greedily continues its prompt with 119 137 454 ...: naming 137 as EOS must stop right after it.
        using var model = Load("llama-tiny");
        long[] prompt = [5, 17, 99, 230, 41, 8, 77, 300];
        var tokens = GreedyDecoder.Generate(model, prompt, 12, eosTokenIds: [137]);
        Console.WriteLine($"with EOS 137: {string.Join(" ", tokens)}");
        CollectionAssert.AreEqual(prompt.Concat(new long[] { 119, 137 }).ToArray(), tokens);
        // A row that ends early stops growing while another row continues.
        var both = GreedyDecoder.Generate(model, [prompt, [12, 13, 14, 15]], 12, eosTokenIds: [137]);
        CollectionAssert.AreEqual(tokens, both[0]);
        CollectionAssert.AreEqual(GreedyDecoder.Generate(model, [12, 13, 14, 15], 12, [137]), both[1]);
    }

    [TestMethod]
    public void CacheGrowsPerCallAndReleasesOnDispose()
    {
        using var model = Load("qwen2-tiny");
        using var noGrad = no_grad();
        var cache = model.CreateCache();
        Assert.AreEqual(model.NumLayers, cache.NumLayers);
        using (NewDisposeScope())
        {
            model.call(tensor(new long[] { 1, 2, 3 }, [1, 3]), cache: cache);
            model.call(tensor(new long[] { 4 }, [1, 1]), cache: cache);
        }
        // The scope above is gone; the cache's tensors must still be alive and complete.
        Assert.AreEqual(4, cache.Length);
        var (keys, values) = cache[1];
        CollectionAssert.AreEqual(new long[] { 1, 2, 4, 8 }, keys!.shape);   // (B, Hkv, S, D)
        Assert.AreEqual(4, values!.shape[2]);
        cache.Dispose();
        Assert.AreEqual(0, cache.Length);
    }

    [TestMethod]
    public void MaskNotCoveringTheCacheIsRejectedWithShapes()
    {
        using var model = Load("llama-tiny");
        using var noGrad = no_grad();
        using var cache = model.CreateCache();
        model.call(tensor(new long[] { 1, 2, 3 }, [1, 3]), cache: cache);
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.call(tensor(new long[] { 4 }, [1, 1]), tensor(new long[] { 1 }, [1, 1]), cache));
        StringAssert.Contains(e.Message, "past (3) + new tokens (1) = 4");
    }

    [TestMethod]
    public void Gpt2RefusesPositionsBeyondNPositions()
    {
        using var model = Load("gpt2-tiny");   // n_positions 64
        using var noGrad = no_grad();
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.call(zeros(1, 65, dtype: ScalarType.Int64)));
        StringAssert.Contains(e.Message, "n_positions");
    }

    private static LlamaForCausalLM OneLayerMistral(int? window)
    {
        manual_seed(11);
        var config = HfConfig.Parse($$"""
            {"model_type": "mistral", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
             "sliding_window": {{(window is null ? "null" : window.ToString())}}, "tie_word_embeddings": false}
            """);
        var model = (LlamaForCausalLM)ModelFactory.CreateCausalLM(config);
        using (no_grad())   // larger embeddings than the 0.02 init, so attention patterns differ visibly
            foreach (var (name, p) in model.named_parameters()) if (name.EndsWith("embed_tokens.weight")) p.normal_(0, 1);
        model.eval();
        return model;
    }

    [TestMethod]
    public void SlidingWindowAttendsToTheLastWTokensOnly()
    {
        // One layer, window 4: the last token's output depends only on the last 4 tokens, and RoPE is relative, so it
        // equals the output for those 4 tokens alone (positions 0..3 instead of 6..9).
        using var windowed = OneLayerMistral(4);
        using var full = OneLayerMistral(null);
        Assert.IsTrue(windowed.Settings.SlidingWindows.All(w => w == 4));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        long[] tokens = [3, 9, 27, 17, 51, 8, 60, 33, 2, 45];
        var last = windowed.call(tensor(tokens, [1, 10])).select(1, 9);
        var lastFour = windowed.call(tensor(tokens[6..], [1, 4])).select(1, 3);
        var unwindowed = full.call(tensor(tokens, [1, 10])).select(1, 9);
        double error = (last - lastFour).abs().max().item<float>();
        double effect = (last - unwindowed).abs().max().item<float>();
        Console.WriteLine($"window 4: last-token logits vs the last 4 tokens alone max |diff| = {error:E3}; vs full attention {effect:E3}");
        Assert.IsTrue(error <= 1e-5, $"{error:E3}");
        Assert.IsTrue(effect > 1e-3, "the window should change the output of a 10-token sequence");

        // The cache keeps every key, the mask keeps the window: incremental decoding equals the full forward.
        using var cache = windowed.CreateCache();
        var steps = new List<Tensor> { windowed.call(tensor(tokens[..3], [1, 3]), cache: cache) };
        for (int i = 3; i < tokens.Length; i++) steps.Add(windowed.call(tensor(new[] { tokens[i] }, [1, 1]), cache: cache));
        double cacheError = (cat(steps, 1) - windowed.call(tensor(tokens, [1, 10]))).abs().max().item<float>();
        Console.WriteLine($"window 4: cached decode vs full forward max |diff| = {cacheError:E3}");
        Assert.IsTrue(cacheError <= 1e-5);
    }

    [TestMethod]
    public void Qwen2SlidesOnlyFromMaxWindowLayersWhenEnabled()
    {
        string Config(bool use) => $$"""
            {"model_type": "qwen2", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 2, "sliding_window": 16, "max_window_layers": 1,
             "use_sliding_window": {{(use ? "true" : "false")}}}
            """;
        var on = LlamaConfig.FromHf(HfConfig.Parse(Config(true)));
        var off = LlamaConfig.FromHf(HfConfig.Parse(Config(false)));
        CollectionAssert.AreEqual(new int?[] { null, 16, 16 }, on.SlidingWindows.ToArray());
        CollectionAssert.AreEqual(new int?[] { null, null, null }, off.SlidingWindows.ToArray());
        Assert.IsTrue(on.QkvBias && !on.OutputBias, "Qwen2 has q/k/v biases and no o_proj bias");
    }
}
