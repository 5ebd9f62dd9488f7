using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>
/// PEFT's own adapters (LoRA, rsLoRA, DoRA on BERT with the classifier in modules_to_save; LoRA on GPT-2's Conv1D,
/// Llama and Qwen2), loaded from the committed fixtures: logits with the adapter and after merging against what PEFT
/// computed, and our files for the same configuration against PEFT's.
/// </summary>
[TestClass]
public sealed class LoraParityTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-peft-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private static SequenceClassificationModel BertBase(EncoderFixture fixture)
    {
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 3);
        Assert.AreEqual(0, report.Missing.Count, report.ToString());
        return model;
    }

    [TestMethod]
    [DataRow("bert-tiny-cls-lora")]
    [DataRow("bert-tiny-cls-rslora")]
    [DataRow("bert-tiny-cls-dora")]
    public void BertAdapterLogitsMatchPeft(string name)
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load(name);
        var model = BertBase(fixture);
        var peft = PeftModel.LoadAdapter(model, Path.Combine(fixture.Folder, "adapter"));
        Assert.AreEqual(11, peft.Layers.Count, "query, value, attention.output.dense, intermediate.dense, output.dense x 2 layers + pooler.dense");
        Assert.IsTrue(peft.Layers.ContainsKey("bert.pooler.dense"));
        Assert.AreEqual(0, peft.CountParameters().Trainable, "loaded for inference: nothing trains");
        using var noGrad = no_grad();

        Parity.AssertClose(model.forward(fixture.Inputs()), fixture.Expected["logits"], 1e-5, $"{name}: logits with adapter");
        peft.Merge();
        Parity.AssertClose(model.forward(fixture.Inputs()), fixture.Expected["logits_merged"], 1e-4, $"{name}: logits after merge");
        peft.Unmerge();
        Parity.AssertClose(model.forward(fixture.Inputs()), fixture.Expected["logits"], 1e-5, $"{name}: logits after unmerge");
    }

    [TestMethod]
    [DataRow("gpt2-tiny")]
    [DataRow("llama-tiny")]
    [DataRow("qwen2-tiny")]
    public void CausalAdapterLogitsMatchPeft(string name)
    {
        using var scope = NewDisposeScope();
        var fixture = CausalFixture.Load(name);
        var model = ModelFactory.FromPretrainedCausalLM(fixture.Folder);
        var adapterFolder = Path.Combine(fixture.Folder, "adapter");
        var peft = PeftModel.LoadAdapter(model, adapterFolder);
        var expected = SafeTensors.Load(Path.Combine(adapterFolder, "expected.safetensors"))["logits"];
        Assert.AreEqual(name == "gpt2-tiny", peft.Config.FanInFanOut, "fan_in_fan_out follows the layer type (GPT-2's Conv1D)");
        using var noGrad = no_grad();

        peft.AdaptersEnabled = false;
        Parity.AssertClose(model.call(fixture.InputTensor()), fixture.Logits, 1e-5, $"{name}: adapter disabled = base model");
        peft.AdaptersEnabled = true;
        Parity.AssertClose(model.call(fixture.InputTensor()), expected, 1e-5, $"{name}: logits with PEFT's adapter");
        Assert.IsTrue(Parity.MaxAbsError(expected, fixture.Logits, name) > 1e-3, "the adapter changes the logits (B is non-zero)");
        peft.Merge();
        Parity.AssertClose(model.call(fixture.InputTensor()), expected, 1e-4, $"{name}: logits after merge (PEFT's unmerged logits as reference)");
    }

    [TestMethod]
    [DataRow("bert-tiny-cls-lora")]
    [DataRow("bert-tiny-cls-rslora")]
    [DataRow("bert-tiny-cls-dora")]
    public void BertAdapterWeSaveHasPeftsKeysShapesAndConfig(string name)
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load(name);
        var peftFolder = Path.Combine(fixture.Folder, "adapter");

        // The configuration make_fixtures.py gave PEFT, built from scratch here.
        var model = BertBase(fixture);
        var config = new LoraOptions
        {
            Rank = 4, Alpha = 8, TargetModules = ["query", "value", "dense"], Dropout = 0, Initialization = LoraInit.Random,
            ModulesToSave = ["classifier"], TaskType = PeftTaskType.SequenceClassification,
            UseRsLora = name.EndsWith("rslora"), UseDora = name.EndsWith("dora"),
        };
        var peft = PeftModel.Inject(model, config);
        var ours = Path.Combine(_dir, "ours");
        peft.SaveAdapter(ours);
        AssertSameFiles(peftFolder, ours, name);

        // Reloading what we wrote gives the same function.
        using var noGrad = no_grad();
        model.eval();
        var before = model.forward(fixture.Inputs());
        var reloaded = BertBase(fixture);
        PeftModel.LoadAdapter(reloaded, ours);
        var error = Parity.MaxAbsError(reloaded.forward(fixture.Inputs()), before, name);
        Console.WriteLine($"{name}: reloaded adapter vs the one saved: max |diff| = {error:E3}");
        Assert.AreEqual(0.0, error);

        // Loading PEFT's adapter and saving it again writes PEFT's files back.
        var again = BertBase(fixture);
        var loaded = PeftModel.LoadAdapter(again, peftFolder);
        var resaved = Path.Combine(_dir, "resaved");
        loaded.SaveAdapter(resaved);
        AssertSameFiles(peftFolder, resaved, name + " (load + save)");
        AssertSameTensors(peftFolder, resaved, name + " (load + save)");
    }

    [TestMethod]
    [DataRow("gpt2-tiny", new[] { "c_attn", "c_proj", "c_fc" })]
    [DataRow("llama-tiny", new[] { "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj" })]
    [DataRow("qwen2-tiny", new[] { "q_proj", "v_proj" })]
    public void CausalAdapterWeSaveHasPeftsKeysShapesAndConfig(string name, string[] targets)
    {
        using var scope = NewDisposeScope();
        var fixture = CausalFixture.Load(name);
        var peftFolder = Path.Combine(fixture.Folder, "adapter");
        var model = ModelFactory.FromPretrainedCausalLM(fixture.Folder);
        var peft = PeftModel.Inject(model, new LoraOptions { Dropout = 0, Rank = 4, Alpha = 16, TargetModules = targets, Initialization = LoraInit.Random, TaskType = PeftTaskType.CausalLM });
        var ours = Path.Combine(_dir, "ours");
        peft.SaveAdapter(ours);
        AssertSameFiles(peftFolder, ours, name);

        using var noGrad = no_grad();
        var before = model.call(fixture.InputTensor());
        var reloaded = ModelFactory.FromPretrainedCausalLM(fixture.Folder);
        PeftModel.LoadAdapter(reloaded, ours);
        Assert.AreEqual(0.0, Parity.MaxAbsError(reloaded.call(fixture.InputTensor()), before, name), "reloaded adapter computes the same");
    }

    [TestMethod]
    public void AnAdapterForAnotherBaseModelFailsNamingTheFirstKey()
    {
        var bert = EncoderFixture.Load("bert-tiny-cls-lora");
        var gpt2 = CausalFixture.Load("gpt2-tiny");

        // A BERT adapter on GPT-2: the module paths do not exist.
        var causal = ModelFactory.FromPretrainedCausalLM(gpt2.Folder);
        var paths = Assert.ThrowsExactly<InvalidDataException>(() => PeftModel.LoadAdapter(causal, Path.Combine(bert.Folder, "adapter")));
        Console.WriteLine(paths.Message);
        StringAssert.Contains(paths.Message, "'base_model.model.bert.encoder.layer.0.attention.output.dense.lora_A.weight'");
        Assert.IsFalse(causal.named_modules().Any(m => m.module is AdaptedLinear), "the model is left untouched");

        // A BERT adapter on a BERT of another width: the first key whose shape differs.
        var wider = JsonNode.Parse(File.ReadAllText(Path.Combine(bert.Folder, "config.json")))!.AsObject();
        wider["hidden_size"] = 48;
        wider["intermediate_size"] = 96;
        var other = ModelFactory.CreateSequenceClassification(HfConfig.Parse(wider.ToJsonString()), 3);
        var keysBefore = other.state_dict().Keys.ToList();
        var trainableBefore = other.named_parameters().Count(p => p.parameter.requires_grad);
        var shapes = Assert.ThrowsExactly<InvalidDataException>(() => PeftModel.LoadAdapter(other, Path.Combine(bert.Folder, "adapter")));
        Console.WriteLine(shapes.Message);
        StringAssert.Contains(shapes.Message, "'base_model.model.bert.encoder.layer.0.attention.output.dense.lora_A.weight' has shape [4, 32]");
        StringAssert.Contains(shapes.Message, "[4, 48]");
        // Shapes are checked before injection (docs/methods.md): no layer wrapped, nothing frozen, no key added.
        var injected = other.named_modules().Where(m => m.module is AdaptedLinear).Select(m => m.name).ToList();
        var trainableAfter = other.named_parameters().Count(p => p.parameter.requires_grad);
        Console.WriteLine($"after the shape mismatch: {injected.Count} adapter layers, {trainableAfter} of {trainableBefore} parameters still trainable, {other.state_dict().Count} keys (were {keysBefore.Count})");
        Assert.IsEmpty(injected, "the model is left untouched: " + string.Join(", ", injected));
        Assert.AreEqual(trainableBefore, trainableAfter, "trainable flags unchanged");
        CollectionAssert.AreEqual(keysBefore, other.state_dict().Keys.ToList(), "state-dict keys unchanged");
        // The model is still fresh: an adapter of its own width loads into it.
        var fitting = PeftModel.Inject(ModelFactory.CreateSequenceClassification(HfConfig.Parse(wider.ToJsonString()), 3),
            (LoraOptions)PeftConfigJson.Read(Path.Combine(bert.Folder, "adapter")) with { Initialization = LoraInit.Random });
        var fittingFolder = Path.Combine(_dir, "wider-adapter");
        fitting.SaveAdapter(fittingFolder);
        Assert.IsNotEmpty(PeftModel.LoadAdapter(other, fittingFolder).Layers);
    }

    /// <summary>Same safetensors keys, shapes and dtypes; same adapter_config.json fields and values (target_modules
    /// compared as a set: PEFT stores a set, written in no fixed order).</summary>
    internal static void AssertSameFiles(string peftFolder, string oursFolder, string what)
    {
        static List<string> Entries(string folder) =>
            SafeTensors.ReadHeader(Path.Combine(folder, PeftAdapterFile.WeightsFileName)).Entries
                .Select(e => $"{e.Name} {e.DType} [{string.Join(", ", e.Shape)}]").Order(StringComparer.Ordinal).ToList();
        var theirs = Entries(peftFolder);
        var mine = Entries(oursFolder);
        Console.WriteLine($"{what}: {mine.Count} tensors written; PEFT's file has {theirs.Count}; differing entries: {theirs.Except(mine).Count() + mine.Except(theirs).Count()}");
        CollectionAssert.AreEqual(theirs, mine, $"{what}: safetensors entries");
        Assert.AreEqual("pt", SafeTensors.ReadHeader(Path.Combine(oursFolder, PeftAdapterFile.WeightsFileName)).Metadata["format"]);

        var a = JsonNode.Parse(File.ReadAllText(Path.Combine(peftFolder, PeftConfigJson.FileName)))!.AsObject();
        var b = JsonNode.Parse(File.ReadAllText(Path.Combine(oursFolder, PeftConfigJson.FileName)))!.AsObject();
        CollectionAssert.AreEqual(a.Select(p => p.Key).Order(StringComparer.Ordinal).ToList(), b.Select(p => p.Key).Order(StringComparer.Ordinal).ToList(), $"{what}: config fields");
        var differing = new List<string>();
        foreach (var (key, value) in a)
        {
            var mineValue = b[key];
            bool same = key == "target_modules" && value is JsonArray ta && mineValue is JsonArray tb
                ? ta.Select(n => n!.GetValue<string>()).Order().SequenceEqual(tb.Select(n => n!.GetValue<string>()).Order())
                : JsonNode.DeepEquals(Normalise(value), Normalise(mineValue));
            if (!same) differing.Add($"{key}: PEFT {value?.ToJsonString()} ours {mineValue?.ToJsonString()}");
        }
        Console.WriteLine($"{what}: {a.Count} config fields, {differing.Count} differing values");
        Assert.AreEqual(0, differing.Count, $"{what}: " + string.Join("; ", differing));
    }

    // 0.0 and 0 are the same number to PEFT's json reader.
    private static JsonNode? Normalise(JsonNode? node) =>
        node is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number ? JsonValue.Create(v.GetValue<double>()) : node;

    private static void AssertSameTensors(string peftFolder, string oursFolder, string what)
    {
        var theirs = SafeTensors.Load(Path.Combine(peftFolder, PeftAdapterFile.WeightsFileName));
        var mine = SafeTensors.Load(Path.Combine(oursFolder, PeftAdapterFile.WeightsFileName));
        int differing = theirs.Count(p => !p.Value.bytes.ToArray().SequenceEqual(mine[p.Key].bytes.ToArray()));
        Console.WriteLine($"{what}: {differing} of {theirs.Count} tensors differ in any byte");
        Assert.AreEqual(0, differing);
    }
}
