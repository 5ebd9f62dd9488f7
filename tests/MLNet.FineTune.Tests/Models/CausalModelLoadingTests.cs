using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>Choosing the family by model_type, and loading folders the way they come from the Hub.</summary>
[TestClass]
public sealed class CausalModelLoadingTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-causal-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [TestMethod]
    public void UnsupportedModelTypeListsTheSupportedOnes()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() =>
            ModelFactory.CreateCausalLM(HfConfig.Parse("""{"model_type": "falcon"}""", "falcon/config.json")));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "'falcon'");
        StringAssert.Contains(e.Message, "gpt2, llama, mistral, qwen2");
    }

    [TestMethod]
    [DataRow("llama", false)]
    [DataRow("mistral", false)]
    [DataRow("qwen2", true)]
    public void LlamaLayoutFamiliesShareOneModelWithTheirBiases(string modelType, bool qkvBias)
    {
        var config = HfConfig.Parse($$"""
            {"model_type": "{{modelType}}", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "num_key_value_heads": 1}
            """);
        using var model = ModelFactory.CreateCausalLM(config);
        Assert.IsInstanceOfType<LlamaForCausalLM>(model);
        Assert.AreEqual(modelType, model.ModelType);
        var keys = model.state_dict().Keys.ToHashSet();
        Assert.AreEqual(qkvBias, keys.Contains("model.layers.0.self_attn.q_proj.bias"));
        Assert.AreEqual(qkvBias, keys.Contains("model.layers.0.self_attn.v_proj.bias"));
        Assert.IsFalse(keys.Contains("model.layers.0.self_attn.o_proj.bias"));
        Assert.IsTrue(keys.Contains("lm_head.weight"), "tie_word_embeddings defaults to false for these families");
        Console.WriteLine($"{modelType}: {keys.Count} state-dict keys");
    }

    [TestMethod]
    public void HubStyleGpt2CheckpointLoadsWithoutPrefixAndIgnoresMaskBuffers()
    {
        // The Hub's gpt2 files hold GPT2Model keys (no "transformer." prefix) and old causal-mask buffers h.N.attn.bias.
        var source = TestPaths.Fixture("hf-reference", "gpt2-tiny");
        var weights = SafeTensors.Load(Path.Combine(source, "model.safetensors"))
            .ToDictionary(p => p.Key["transformer.".Length..], p => p.Value);
        weights["h.0.attn.bias"] = ones(1, 1, 64, 64).tril();
        SafeTensors.Save(Path.Combine(_dir, "model.safetensors"), weights, new Dictionary<string, string> { ["format"] = "pt" });
        File.Copy(Path.Combine(source, "config.json"), Path.Combine(_dir, "config.json"));

        using var model = ModelFactory.FromPretrainedCausalLM(_dir, null, null, out var report);
        Console.WriteLine(report);
        CollectionAssert.AreEqual(new[] { "h.0.attn.bias" }, report.Unexpected.ToArray());
        Assert.AreEqual(0, report.Missing.Count);
        var fixture = CausalFixture.Load("gpt2-tiny");
        using var noGrad = no_grad();
        double error = (model.call(fixture.InputTensor()) - fixture.Logits).abs().max().item<float>();
        Console.WriteLine($"prefix-less checkpoint: logits max |diff| vs transformers = {error:E3}");
        Assert.IsTrue(error <= 1e-5);
    }

    [TestMethod]
    public void MissingWeightsAreNamed()
    {
        // The config claims an untied head, the file has none: the error names lm_head.weight and the tying setting.
        var source = TestPaths.Fixture("hf-reference", "qwen2-tiny");
        File.Copy(Path.Combine(source, "model.safetensors"), Path.Combine(_dir, "model.safetensors"));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        config["tie_word_embeddings"] = false;
        File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
        var e = Assert.ThrowsExactly<InvalidDataException>(() => ModelFactory.FromPretrainedCausalLM(_dir));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "lm_head.weight");
        StringAssert.Contains(e.Message, "tie_word_embeddings");
    }
}
