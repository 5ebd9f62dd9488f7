using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using PeftTinyClassifier = MLNet.FineTune.Tests.Peft.TinyClassifier;
using MLNet.FineTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

[TestClass]
public sealed class ParameterGroupsTests
{
    /// <summary>A module whose children and parameters have the names we choose.</summary>
    private sealed class Bag : nn.Module
    {
        public Bag(params (string Name, object Item)[] items) : base("Bag")
        {
            foreach (var (name, item) in items)
                if (item is nn.Module m) register_module(name, m);
                else register_parameter(name, (Parameter)item);
        }
    }

    /// <summary>An RMSNorm written as model code does (not a TorchSharp norm type): detected by its field name, and by
    /// its class name (ends with "Norm") under a neutral field name.</summary>
    private sealed class CustomRmsNorm : nn.Module
    {
        public CustomRmsNorm(int n) : base("CustomRmsNorm") => register_parameter("weight", new Parameter(ones(n)));
    }

    private static Parameter P(params long[] shape) => new(randn(shape));

    [TestMethod]
    public void NoDecayGroupHoldsExactlyBiasesAndNormWeights()
    {
        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        var frozenEmbedding = nn.Embedding(10, 4);
        frozenEmbedding.weight!.requires_grad = false;
        var model = new Bag(
            ("embeddings", new Bag(("word_embeddings", frozenEmbedding), ("position_embeddings", nn.Embedding(8, 4)), ("LayerNorm", nn.LayerNorm(4)))),
            ("encoder", new Bag(("layer", new Bag(("0", new Bag(
                ("attention", new Bag(
                    ("query", new Bag(("weight", P(4, 4)), ("bias", P(4)), ("lora_A", nn.Linear(4, 2, hasBias: false)), ("lora_B", nn.Linear(2, 4, hasBias: false)))),
                    ("output", new Bag(("dense", nn.Linear(4, 4)), ("LayerNorm", nn.LayerNorm(4)))))),
                ("sa_layer_norm", nn.LayerNorm(4)),
                ("ln_1", nn.LayerNorm(4)),
                ("input_layernorm", new CustomRmsNorm(4)),
                ("post_attention_layernorm", new CustomRmsNorm(4)),
                ("q_norm", new CustomRmsNorm(4)),
                ("mlp", new Bag(("c_fc", nn.Linear(4, 8)), ("normalizer", new Bag(("weight", P(4)))))))))))),
            ("norm", new CustomRmsNorm(4)),
            ("ln_f", nn.LayerNorm(4)),
            ("final", nn.LayerNorm(4)),                       // a LayerNorm by type under a neutral name
            ("post_mix", new CustomRmsNorm(4)),               // a model's own *Norm class under a neutral name
            ("classifier", nn.Linear(4, 2)),
            ("logit_bias", P(2)));

        var groups = ParameterGroups.FromModule(model, name => name.Contains("lora_B") ? 16.0 : 1.0);
        var noDecay = groups.Where(g => !g.ApplyWeightDecay).Select(g => g.Name).Order(StringComparer.Ordinal).ToArray();
        var decay = groups.Where(g => g.ApplyWeightDecay).Select(g => g.Name).Order(StringComparer.Ordinal).ToArray();
        Console.WriteLine("no decay: " + string.Join(", ", noDecay));
        Console.WriteLine("decay:    " + string.Join(", ", decay));

        string[] expectedNoDecay =
        [
            "classifier.bias",
            "embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight",
            "encoder.layer.0.attention.output.LayerNorm.bias", "encoder.layer.0.attention.output.LayerNorm.weight",
            "encoder.layer.0.attention.output.dense.bias",
            "encoder.layer.0.attention.query.bias",
            "encoder.layer.0.input_layernorm.weight",
            "encoder.layer.0.ln_1.bias", "encoder.layer.0.ln_1.weight",
            "encoder.layer.0.mlp.c_fc.bias",
            "encoder.layer.0.post_attention_layernorm.weight",
            "encoder.layer.0.q_norm.weight",
            "encoder.layer.0.sa_layer_norm.bias", "encoder.layer.0.sa_layer_norm.weight",
            "final.bias", "final.weight",
            "ln_f.bias", "ln_f.weight",
            "logit_bias",
            "norm.weight",
            "post_mix.weight",
        ];
        string[] expectedDecay =
        [
            "classifier.weight",
            "embeddings.position_embeddings.weight",            // embeddings decay, as in transformers
            "encoder.layer.0.attention.output.dense.weight",
            "encoder.layer.0.attention.query.lora_A.weight",
            "encoder.layer.0.attention.query.lora_B.weight",
            "encoder.layer.0.attention.query.weight",
            "encoder.layer.0.mlp.c_fc.weight",
            "encoder.layer.0.mlp.normalizer.weight",            // "normalizer" is not a norm layer name
        ];
        CollectionAssert.AreEqual(expectedNoDecay.Order(StringComparer.Ordinal).ToArray(), noDecay);
        CollectionAssert.AreEqual(expectedDecay.Order(StringComparer.Ordinal).ToArray(), decay);
        Assert.IsFalse(groups.Any(g => g.Name == "embeddings.word_embeddings.weight"), "frozen parameters are not trainable");
        Assert.AreEqual(16.0, groups.Single(g => g.Name.EndsWith("lora_B.weight")).LearningRateMultiplier);
        Assert.IsTrue(groups.Where(g => !g.Name.Contains("lora_B")).All(g => g.LearningRateMultiplier == 1.0));
    }

    [TestMethod]
    [DataRow("bias", true)]
    [DataRow("encoder.layer.3.output.dense.bias", true)]
    [DataRow("transformer.h.0.attn.c_attn.bias", true)]
    [DataRow("model.layers.0.self_attn.q_proj.lora_bias", true)]
    [DataRow("bert.embeddings.LayerNorm.weight", true)]
    [DataRow("distilbert.transformer.layer.0.output_layer_norm.weight", true)]
    [DataRow("transformer.ln_f.weight", true)]
    [DataRow("transformer.h.11.ln_2.weight", true)]
    [DataRow("model.norm.weight", true)]
    [DataRow("model.layers.0.input_layernorm.weight", true)]
    [DataRow("model.layers.0.self_attn.k_norm.weight", true)]
    [DataRow("blocks.0.norm_1.weight", true)]
    [DataRow("h.0.RMSNorm.weight", true)]
    [DataRow("bert.encoder.layer.0.attention.self.query.weight", false)]
    [DataRow("bert.embeddings.word_embeddings.weight", false)]
    [DataRow("model.layers.0.self_attn.q_proj.lora_B.weight", false)]
    [DataRow("model.layers.0.mlp.normalizer.weight", false)]
    [DataRow("model.layers.0.enorm.weight", false)]
    [DataRow("model.lnx.weight", false)]
    [DataRow("biased_proj.weight", false)]
    [DataRow("weight", false)]
    public void NameRule(string name, bool expectedNoDecay) =>
        Assert.AreEqual(expectedNoDecay, ParameterGroups.IsNoDecay(name), name);

    [TestMethod]
    public void LoraPlusGroupsFromPeftGetTheTrainingRulesDecay()
    {
        var model = PeftTinyClassifier.Create(11);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "value"], Rank = 2, UseDora = true });
        var parameters = ParameterGroups.FromGroups(model, peft.ParameterGroups(loraPlusRatio: 16));
        foreach (var p in parameters) Console.WriteLine($"{p.Name}: lr x{p.LearningRateMultiplier}{(p.ApplyWeightDecay ? "" : ", no decay")}");

        // The base is frozen: only the head bias is exempt; adapter matrices and DoRA magnitudes decay.
        CollectionAssert.AreEqual(new[] { "classifier.bias" }, parameters.Where(p => !p.ApplyWeightDecay).Select(p => p.Name).ToArray());
        Assert.AreEqual(13, parameters.Count(p => p.ApplyWeightDecay));
        Assert.IsTrue(parameters.Where(p => p.Name.EndsWith("lora_B.weight") || p.Name.EndsWith("lora_magnitude_vector") || p.Name == "classifier.bias")
            .All(p => p.LearningRateMultiplier == 16));
        Assert.IsTrue(parameters.Where(p => p.Name.EndsWith("lora_A.weight") || p.Name == "classifier.weight").All(p => p.LearningRateMultiplier == 1));

        var full = PeftTinyClassifier.Create(11);
        var plain = ParameterGroups.FromGroups(full, PeftModel.Inject(full, new FullFineTuneOptions()).ParameterGroups());
        Assert.AreEqual(2 * (3 + 2) + 1, plain.Count(p => !p.ApplyWeightDecay), "per block 3 Linear biases + LayerNorm weight and bias; the head bias");
        Assert.IsTrue(plain.All(p => p.LearningRateMultiplier == 1));
    }

    [TestMethod]
    public void FromGroupsNamesAForeignParameter()
    {
        var model = PeftTinyClassifier.Create(11);
        var stranger = new Parameter(zeros(3, 5));
        var e = Assert.ThrowsExactly<ArgumentException>(() => ParameterGroups.FromGroups(model, [new ParameterGroup("groupA", [stranger], 1.0)]));
        StringAssert.Contains(e.Message, "'groupA'");
        StringAssert.Contains(e.Message, "[3, 5]");
    }

    /// <summary>Full fine-tuning of each shipped family: exactly the biases and the LayerNorm / RMSNorm parameters are
    /// exempt (the expectation comes from the modules' concrete types, as transformers' ALL_LAYERNORM_LAYERS).</summary>
    [TestMethod]
    [DataRow("bert-tiny-cls", 3)]
    [DataRow("roberta-tiny", 2)]
    [DataRow("distilbert-tiny", 2)]
    [DataRow("gpt2-tiny", 0)]
    [DataRow("llama-tiny", 0)]
    [DataRow("qwen2-tiny", 0)]
    public void ShippedFamiliesExemptExactlyBiasesAndNormWeights(string fixture, int numLabels)
    {
        var folder = TestPaths.Fixture("hf-reference", fixture);
        nn.Module model = numLabels == 0                                     // 0: a causal language model
            ? ModelFactory.FromPretrainedCausalLM(folder)
            : ModelFactory.FromPretrainedSequenceClassification(folder, numLabels).Model;

        var expected = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (moduleName, module) in model.named_modules())
            if (module is TorchSharp.Modules.LayerNorm or RmsNorm)
                foreach (var (name, _) in module.named_parameters(recurse: false))
                    expected.Add(moduleName + "." + name);
        foreach (var (name, _) in model.named_parameters())
            if (name.EndsWith(".bias", StringComparison.Ordinal)) expected.Add(name);

        var parameters = ParameterGroups.FromModule(model);
        var noDecay = parameters.Where(p => !p.ApplyWeightDecay).Select(p => p.Name).Order(StringComparer.Ordinal).ToArray();
        Console.WriteLine($"{fixture}: {noDecay.Length} of {parameters.Count} tensors without decay: {string.Join(", ", noDecay)}");
        Assert.IsTrue(expected.Any(n => !n.EndsWith(".bias", StringComparison.Ordinal)) && expected.Count > 2, $"{fixture} has norm weights");
        CollectionAssert.AreEqual(expected.ToArray(), noDecay);
        // The name rule alone agrees on every shipped family (it is what checkpoint-level code can use).
        foreach (var p in parameters) Assert.AreEqual(!p.ApplyWeightDecay, ParameterGroups.IsNoDecay(p.Name), p.Name);
    }
}
