using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>Injection by module name with PEFT's rules, freezing, and the parameter report.</summary>
[TestClass]
public sealed class InjectionTests
{
    [ClassInitialize]
    public static void Load(TestContext _) => TorchRuntime.EnsureLoaded();

    private static List<string> Targeted(MethodOptions config, PeftOptions? options = null)
    {
        var model = TinyClassifier.Create(1, layers: 3);
        return PeftModel.Inject(model, config, options).Layers.Keys.OrderBy(k => k).ToList();
    }

    [TestMethod]
    public void SuffixMatchingWrapsExactlyTheNamedLayers()
    {
        var model = TinyClassifier.Create(1);
        var before = model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().clone());
        var peft = PeftModel.Inject(model, new LoraOptions { Dropout = 0, TargetModules = ["query", "value"], Rank = 2, Alpha = 4 });
        CollectionAssert.AreEquivalent(new[] { "encoder.layer.0.query", "encoder.layer.0.value", "encoder.layer.1.query", "encoder.layer.1.value" }, peft.Layers.Keys.ToList());

        // The wrapped model keeps the base keys (a base checkpoint loads unchanged) and adds PEFT's.
        var keys = model.state_dict().Keys.ToHashSet();
        foreach (var key in before.Keys) Assert.IsTrue(keys.Contains(key), $"base key {key} lost");
        Assert.IsTrue(keys.Contains("encoder.layer.0.query.lora_A.weight"));
        Assert.IsTrue(keys.Contains("encoder.layer.1.value.lora_B.weight"));
        Assert.AreEqual(before.Count + 8, keys.Count);
        var report = WeightLoader.Load(model, before, null);
        Assert.AreEqual(0, report.Unexpected.Count);
        CollectionAssert.AreEquivalent(keys.Where(k => k.Contains("lora_")).ToList(), report.Missing.ToList());

        // The parent's field holds the wrapper: forward goes through it (B = 0 at start, so the output is unchanged;
        // a non-zero B changes it).
        var x = Input(2);
        var baseOutput = model.call(x).detach();
        using (no_grad()) ((LoraLinear)peft.Layers["encoder.layer.1.value"]).LoraB.normal_();
        Assert.IsTrue(MaxAbsDiff(model.call(x), baseOutput) > 1e-3, "forward does not use the wrapper");
        // Order of children is kept (state_dict order unchanged for the base keys).
        CollectionAssert.AreEqual(before.Keys.ToList(), model.state_dict().Keys.Where(before.ContainsKey).ToList());
    }

    [TestMethod]
    public void DefaultTargetsComeFromTheModelFamily()
    {
        CollectionAssert.AreEqual(
            new[] { "encoder.layer.0.query", "encoder.layer.0.value", "encoder.layer.1.query", "encoder.layer.1.value", "encoder.layer.2.query", "encoder.layer.2.value" },
            Targeted(new LoraOptions { Alpha = 8, Dropout = 0 }));
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0 }, new PeftOptions { ModelType = "t5" }));
        StringAssert.Contains(ex.Message, "target_modules");
        Console.WriteLine(ex.Message);
    }

    [TestMethod]
    public void OneStringIsARegexThatMustMatchTheWholeName()
    {
        CollectionAssert.AreEqual(new[] { "encoder.layer.1.query" }, Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModulesPattern = @"encoder\.layer\.1\.query" }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.0.dense", "encoder.layer.0.query" }, Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModulesPattern = @".*\.0\.(query|dense)" }));
        Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModulesPattern = "query" }), "a pattern is not a suffix");
    }

    [TestMethod]
    public void SuffixNeedsADotBoundaryAndExactNamesMatch()
    {
        // "uery" is not a module name: no match (suffix matching is by dotted segment).
        Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["uery"] }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.2.dense" }, Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["encoder.layer.2.dense"] }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.0.dense", "encoder.layer.1.dense", "encoder.layer.2.dense" }, Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["layer.0.dense", "1.dense", "dense"] }).Distinct().ToList());
    }

    [TestMethod]
    public void ExcludeModulesAndLayersToTransform()
    {
        CollectionAssert.AreEqual(new[] { "encoder.layer.0.query", "encoder.layer.2.query" },
            Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"], ExcludeModules = ["layer.1.query"] }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.0.query", "encoder.layer.0.value" },
            Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "value"], ExcludeModulesPattern = @".*\.layer\.[12]\..*" }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.0.value", "encoder.layer.2.value" },
            Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["value"], LayersToTransform = [0, 2] }));
        CollectionAssert.AreEqual(new[] { "encoder.layer.1.value" },
            Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["value"], LayersToTransform = [1], LayersPattern = ["layer"] }));
        Assert.AreEqual(1, ModuleMatcher.LayerIndex("model.layers.1.experts.0.w1", null), "lazy: the first numbered segment");
        Assert.AreEqual(3, ModuleMatcher.LayerIndex("transformer.h.3.attn.c_attn", ["h"]));
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["value"], LayersToTransform = [7] }));
        StringAssert.Contains(ex.Message, "layers_to_transform");
        var all = Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"], ExcludeModules = ["query"] }));
        StringAssert.Contains(all.Message, "excluded");
    }

    [TestMethod]
    public void NothingMatchedListsTheCandidates()
    {
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["q_proj", "v_proj"] }));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, "Target modules [q_proj, v_proj] not found");
        StringAssert.Contains(ex.Message, "query, value, dense, classifier");
        StringAssert.Contains(ex.Message, "encoder.layer.0.query");
    }

    [TestMethod]
    public void ANonLinearTargetOrAConcreteFieldIsRefusedByName()
    {
        var ex = Assert.ThrowsExactly<ArgumentException>(() => Targeted(new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["LayerNorm"] }));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, "encoder.layer.0.LayerNorm");
        var surgery = Assert.ThrowsExactly<InvalidOperationException>(() =>
            PeftModel.Inject(new ConcreteFieldModel(), new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"] }));
        Console.WriteLine(surgery.Message);
        StringAssert.Contains(surgery.Message, "typed Linear");
        StringAssert.Contains(surgery.Message, "Module<Tensor, Tensor>");
    }

    [TestMethod]
    public void OnlyAdapterAndHeadTrain()
    {
        var model = TinyClassifier.Create(3);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "value", "dense"], Rank = 2, UseDora = true });
        var trainable = peft.TrainableParameters().Select(p => p.Name).OrderBy(n => n).ToList();
        var expected = model.named_parameters().Select(p => p.name)
            .Where(n => n.Contains("lora_") || n.StartsWith("classifier.")).OrderBy(n => n).ToList();
        CollectionAssert.AreEqual(expected, trainable);
        Assert.AreEqual(2 * 3 * 3 + 2, trainable.Count, "A, B, magnitude on 6 layers + classifier weight and bias");
        CollectionAssert.AreEqual(new[] { "classifier" }, peft.SavedModules.ToList());
        CollectionAssert.AreEqual(new[] { "classifier" }, peft.Config.ModulesToSave!.ToList());
        // A module to save is never adapted, even when targeted.
        var head = PeftModel.Inject(TinyClassifier.Create(3), new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "classifier"] });
        Assert.IsFalse(head.Layers.ContainsKey("classifier"));
    }

    [TestMethod]
    public void BiasOptionsTrainTheChosenBiases()
    {
        var all = PeftModel.Inject(TinyClassifier.Create(4), new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"], Bias = PeftBias.All });
        Assert.IsTrue(all.TrainableParameters().Any(p => p.Name == "encoder.layer.0.dense.bias"));
        Assert.IsTrue(all.AdapterStateDict().ContainsKey("base_model.model.encoder.layer.0.query.base_layer.bias"));
        Assert.IsTrue(all.AdapterStateDict().ContainsKey("base_model.model.encoder.layer.0.dense.bias"));
        var only = PeftModel.Inject(TinyClassifier.Create(4), new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"], Bias = PeftBias.LoraOnly });
        Assert.IsTrue(only.TrainableParameters().Any(p => p.Name == "encoder.layer.0.query.bias"));
        Assert.IsFalse(only.TrainableParameters().Any(p => p.Name == "encoder.layer.0.dense.bias"));
    }

    [TestMethod]
    public void RankAndAlphaPatternsOverrideByModule()
    {
        var peft = PeftModel.Inject(TinyClassifier.Create(5), new LoraOptions
        {
            Dropout = 0,
            TargetModules = ["query", "value"], Rank = 4, Alpha = 8,
            RankPattern = new Dictionary<string, int> { ["layer.1.value"] = 2 },
            AlphaPattern = new Dictionary<string, double> { [@"layer\.0\.query"] = 32 },
        });
        var l1v = (LoraLinear)peft.Layers["encoder.layer.1.value"];
        var l0q = (LoraLinear)peft.Layers["encoder.layer.0.query"];
        Assert.AreEqual(2, l1v.Rank);
        Assert.AreEqual(4.0, l1v.Scaling);
        Assert.AreEqual(4, l0q.Rank);
        Assert.AreEqual(8.0, l0q.Scaling);
    }

    [TestMethod]
    public void IA3FeedforwardModulesUsePlainSuffixAndMustBeTargets()
    {
        var peft = PeftModel.Inject(TinyClassifier.Create(6), new IA3Options { TargetModules = ["value", "dense"], FeedforwardModules = ["dense"] });
        Assert.IsTrue(((IA3Linear)peft.Layers["encoder.layer.0.dense"]).IsFeedforward);
        Assert.IsFalse(((IA3Linear)peft.Layers["encoder.layer.0.value"]).IsFeedforward);
        // The family defaults (bert: key, value, output.dense; feed-forward output.dense): only "value" exists here.
        var defaults = PeftModel.Inject(TinyClassifier.Create(6), new IA3Options());
        CollectionAssert.AreEquivalent(new[] { "encoder.layer.0.value", "encoder.layer.1.value" }, defaults.Layers.Keys.ToList());
        CollectionAssert.AreEqual(new[] { "output.dense" }, ((IA3Options)defaults.Config).FeedforwardModules!.ToList());
        var subset = Assert.ThrowsExactly<ArgumentException>(() =>
            PeftModel.Inject(TinyClassifier.Create(6), new IA3Options { TargetModules = ["value"], FeedforwardModules = ["dense"] }));
        StringAssert.Contains(subset.Message, "subset");
    }

    [TestMethod]
    public void AllLinearTargetsEveryLinearLayerButTheHead()
    {
        var peft = PeftModel.Inject(TinyClassifier.Create(7), new LoraOptions { Alpha = 8, Dropout = 0, TargetModulesPattern = "all-linear" });
        Assert.AreEqual(6, peft.Layers.Count);
        Assert.IsFalse(peft.Layers.ContainsKey("classifier"));
        CollectionAssert.AreEquivalent(peft.Layers.Keys.ToList(), peft.Config.TargetModules!.ToList());
    }

    [TestMethod]
    public void FullFineTuningTrainsEverything()
    {
        var model = TinyClassifier.Create(8);
        var peft = PeftModel.Inject(model, new FullFineTuneOptions());
        var count = peft.CountParameters();
        Assert.AreEqual(count.Total, count.Trainable);
        Assert.AreEqual(0, peft.Layers.Count);
        Assert.ThrowsExactly<NotSupportedException>(() => peft.SaveAdapter(Path.GetTempPath()));
    }

    [TestMethod]
    public void ASecondAdapterIsRefused()
    {
        var model = TinyClassifier.Create(9);
        PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"] });
        Assert.ThrowsExactly<InvalidOperationException>(() => PeftModel.Inject(model, new IA3Options { TargetModules = ["value"], FeedforwardModules = [] }));
    }

    [TestMethod]
    public void TrainableCountFollowsTheLoraFormula()
    {
        const int hidden = 16, layers = 2, labels = 3, r = 4;
        var model = TinyClassifier.Create(10, hidden, layers);
        long baseTotal = model.parameters().Sum(p => p.numel());
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "value"], Rank = r });
        var count = peft.CountParameters();
        long lora = layers * 2L * (r * hidden + hidden * r);
        long head = hidden * labels + labels;
        Console.WriteLine(count);
        Assert.AreEqual(lora + head, count.Trainable);
        Assert.AreEqual(baseTotal + lora, count.Total);
        StringAssert.StartsWith(count.ToString(), $"trainable params: {lora + head:N0} || all params: {baseTotal + lora:N0} || trainable%: ");
    }

    [TestMethod]
    public void LoraPlusGroupsRaiseTheLearningRateOfBAndOneDimensionalParameters()
    {
        var model = TinyClassifier.Create(11);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query", "value"], Rank = 2, UseDora = true });
        var names = model.named_parameters().ToDictionary(p => p.parameter.Handle, p => p.name);
        var groups = peft.ParameterGroups(loraPlusRatio: 16).ToDictionary(g => g.Name);
        List<string> Names(string group) => groups[group].Parameters.Select(p => names[p.Handle]).OrderBy(n => n).ToList();
        foreach (var g in groups.Values) Console.WriteLine($"{g.Name}: lr x{g.LearningRateMultiplier}, {g.Parameters.Count} tensors");
        CollectionAssert.AreEquivalent(new[] { "groupA", "groupB" }, groups.Keys.ToArray());
        Assert.IsTrue(Names("groupA").All(n => n.EndsWith("lora_A.weight") || n == "classifier.weight"));
        Assert.AreEqual(5, Names("groupA").Count);
        Assert.IsTrue(Names("groupB").All(n => n.EndsWith("lora_B.weight") || n.EndsWith("lora_magnitude_vector") || n == "classifier.bias"));
        Assert.AreEqual(9, Names("groupB").Count, "4 lora_B, 4 DoRA magnitudes and the head bias (1-D)");
        Assert.AreEqual(1, groups["groupA"].LearningRateMultiplier);
        Assert.AreEqual(16, groups["groupB"].LearningRateMultiplier);

        var full = TinyClassifier.Create(11);
        var plain = PeftModel.Inject(full, new FullFineTuneOptions()).ParameterGroups();
        Assert.AreEqual("default", plain.Single().Name);
        Assert.AreEqual(1, plain.Single().LearningRateMultiplier);
        CollectionAssert.AreEqual(full.parameters().Select(p => p.Handle).ToArray(), plain.Single().Parameters.Select(p => p.Handle).ToArray());
    }
}
