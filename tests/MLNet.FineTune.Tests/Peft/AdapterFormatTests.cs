using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Models;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>adapter_config.json and adapter_model.safetensors beyond LoRA's fixtures: IA3 in PEFT's layout, the
/// bottleneck format, and the errors a bad file gets.</summary>
[TestClass]
public sealed class AdapterFormatTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-format-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    // The fields PEFT 0.21's IA3Config (+ PeftConfig) serialises (peft/tuners/ia3/config.py, peft/config.py).
    private static readonly string[] PeftIA3Fields =
    [
        "auto_mapping", "base_model_name_or_path", "exclude_modules", "fan_in_fan_out", "feedforward_modules",
        "inference_mode", "init_ia3_weights", "modules_to_save", "peft_type", "peft_version", "revision",
        "target_modules", "task_type",
    ];

    /// <summary>
    /// An IA3 adapter laid out as PEFT saves one for BERT with its default table (key, value, output.dense; feed-forward
    /// output.dense, which by PEFT's plain-suffix rule also takes attention.output.dense): vectors (out, 1) scale
    /// outputs, (1, in) scale inputs. The expected logits come from the base model with the vectors multiplied into
    /// its weights by hand.
    /// </summary>
    [TestMethod]
    public void PeftLayoutIA3AdapterComputesTheScaledModel()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny-cls");
        var folder = Path.Combine(_dir, "ia3");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, PeftConfigJson.FileName), """
            {"auto_mapping": null, "base_model_name_or_path": null, "exclude_modules": null, "fan_in_fan_out": false,
             "feedforward_modules": ["output.dense"], "inference_mode": true, "init_ia3_weights": true,
             "modules_to_save": ["classifier", "classifier", "score"], "peft_type": "IA3", "peft_version": "0.21.0",
             "revision": null, "target_modules": ["value", "output.dense", "key"], "task_type": "SEQ_CLS"}
            """);
        manual_seed(5);
        var tensors = new Dictionary<string, Tensor>();
        var manual = SafeTensors.Load(Path.Combine(fixture.Folder, "model.safetensors"));
        var scaled = manual.ToDictionary(p => p.Key, p => p.Value.clone());
        foreach (var layer in new[] { 0, 1 })
        {
            var p = $"bert.encoder.layer.{layer}.";
            foreach (var (module, feedforward, width) in new[] { ("attention.self.key", false, 32L), ("attention.self.value", false, 32L), ("attention.output.dense", true, 32L), ("output.dense", true, 64L) })
            {
                var l = rand(width) + 0.5f;
                tensors[$"base_model.model.{p}{module}.ia3_l"] = feedforward ? l.unsqueeze(0) : l.unsqueeze(1);
                var w = scaled[$"{p}{module}.weight"];                          // (out, in)
                scaled[$"{p}{module}.weight"] = feedforward ? w * l.unsqueeze(0) : w * l.unsqueeze(1);
                if (!feedforward) scaled[$"{p}{module}.bias"] = scaled[$"{p}{module}.bias"] * l;
            }
        }
        tensors["base_model.model.classifier.weight"] = manual["classifier.weight"] * 2;
        tensors["base_model.model.classifier.bias"] = manual["classifier.bias"] + 1;
        scaled["classifier.weight"] = tensors["base_model.model.classifier.weight"];
        scaled["classifier.bias"] = tensors["base_model.model.classifier.bias"];
        SafeTensors.Save(Path.Combine(folder, PeftAdapterFile.WeightsFileName), tensors, new Dictionary<string, string> { ["format"] = "pt" });

        var (reference, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, 3);
        WeightLoader.Load(reference, scaled, reference.BaseModelPrefix);
        var (model, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, 3);
        var peft = PeftModel.LoadAdapter(model, folder);
        Assert.IsTrue(((IA3Linear)peft.Layers["bert.encoder.layer.0.attention.output.dense"]).IsFeedforward, "plain suffix: attention.output.dense ends with output.dense");
        Assert.IsFalse(((IA3Linear)peft.Layers["bert.encoder.layer.0.attention.self.key"]).IsFeedforward);
        using var noGrad = no_grad();
        var expected = reference.forward(fixture.Inputs());
        var (unscaled, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, 3);
        WeightLoader.Load(unscaled, manual, unscaled.BaseModelPrefix);
        Assert.IsTrue(Parity.MaxAbsError(unscaled.forward(fixture.Inputs()), expected, "base") > 1e-2, "the vectors change the logits");
        Parity.AssertClose(model.forward(fixture.Inputs()), expected, 1e-5, "IA3 (PEFT layout) vs vectors multiplied into the weights");
        peft.Merge();
        Parity.AssertClose(model.forward(fixture.Inputs()), expected, 1e-5, "IA3 merged");
        peft.Unmerge();

        // Saved again: the same keys and shapes, and PEFT's IA3 config fields.
        var resaved = Path.Combine(_dir, "resaved");
        peft.SaveAdapter(resaved);
        LoraParityTests.AssertSameFiles(folder, resaved, "IA3 load + save");
        var written = JsonNode.Parse(File.ReadAllText(Path.Combine(resaved, PeftConfigJson.FileName)))!.AsObject();
        CollectionAssert.AreEqual(PeftIA3Fields, written.Select(p => p.Key).ToList(), "IA3 config fields, sorted as PEFT writes them");
    }

    [TestMethod]
    public void IA3ConfigBuiltHereHasPeftsFields()
    {
        var peft = PeftModel.Inject(TinyClassifier.Create(1), new IA3Options { TargetModules = ["value", "dense"], FeedforwardModules = ["dense"] });
        var folder = Path.Combine(_dir, "ia3-new");
        peft.SaveAdapter(folder);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, PeftConfigJson.FileName)))!.AsObject();
        CollectionAssert.AreEqual(PeftIA3Fields, json.Select(p => p.Key).ToList());
        Assert.AreEqual("IA3", json["peft_type"]!.GetValue<string>());
        Assert.IsTrue(json["inference_mode"]!.GetValue<bool>(), "written with inference_mode true, as PEFT does");
        var keys = SafeTensors.ReadHeader(Path.Combine(folder, PeftAdapterFile.WeightsFileName)).Entries.ToDictionary(e => e.Name, e => e.Shape);
        CollectionAssert.AreEqual(new long[] { 1, 16 }, keys["base_model.model.encoder.layer.0.dense.ia3_l"]);
        CollectionAssert.AreEqual(new long[] { 16, 1 }, keys["base_model.model.encoder.layer.1.value.ia3_l"]);
        Assert.IsTrue(keys.ContainsKey("base_model.model.classifier.weight"));
        Assert.AreEqual(2 * 2 + 2, keys.Count);
    }

    [TestMethod]
    public void BottleneckFormatRoundTrips()
    {
        using var scope = NewDisposeScope();
        var model = TinyClassifier.Create(2);
        var peft = PeftModel.Inject(model, new AdapterOptions { Placement = BottleneckKind.Pfeiffer, TargetModules = ["dense"], ReductionFactor = 4, Activation = "silu", Scaling = 0.5 });
        using (no_grad())
            foreach (var (_, p) in peft.Layers.Values.SelectMany(l => l.AdapterParameters())) p.normal_();
        var x = Input(3);
        var expected = model.call(x).detach();
        var folder = Path.Combine(_dir, "bottleneck");
        peft.SaveAdapter(folder);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, PeftConfigJson.FileName)))!.AsObject();
        Console.WriteLine(json.ToJsonString());
        Assert.AreEqual("BOTTLENECK", json["peft_type"]!.GetValue<string>());
        Assert.AreEqual("pfeiffer", json["adapter_kind"]!.GetValue<string>());
        Assert.AreEqual(4, json["reduction_factor"]!.GetValue<int>());
        Assert.AreEqual("silu", json["non_linearity"]!.GetValue<string>());
        var keys = SafeTensors.ReadHeader(Path.Combine(folder, PeftAdapterFile.WeightsFileName)).Entries.Select(e => $"{e.Name} [{string.Join(", ", e.Shape)}]").ToList();
        CollectionAssert.Contains(keys, "base_model.model.encoder.layer.0.dense.adapter_down.weight [4, 16]");
        CollectionAssert.Contains(keys, "base_model.model.encoder.layer.0.dense.adapter_up.weight [16, 4]");
        CollectionAssert.Contains(keys, "base_model.model.encoder.layer.1.dense.adapter_up.bias [16]");

        var fresh = TinyClassifier.Create(2);
        var loaded = PeftModel.LoadAdapter(fresh, folder);
        var error = MaxAbsDiff(fresh.call(x), expected);
        Console.WriteLine($"bottleneck reloaded: max |diff| {error:E2}");
        Assert.AreEqual(0.0, error);
        Assert.AreEqual(BottleneckKind.Pfeiffer, ((AdapterOptions)loaded.Config).Placement);
        Assert.AreEqual(0.5, ((AdapterOptions)loaded.Config).Scaling);

        // A file from a newer library may lay the weights out differently: refused, not misread.
        json["format_version"] = 2;
        File.WriteAllText(Path.Combine(folder, PeftConfigJson.FileName), json.ToJsonString());
        var newer = Assert.ThrowsExactly<NotSupportedException>(() => PeftModel.LoadAdapter(TinyClassifier.Create(2), folder));
        Console.WriteLine(newer.Message);
        StringAssert.Contains(newer.Message, "format_version 2");
    }

    [TestMethod]
    public void LoraConfigRoundTripsEveryOption()
    {
        var config = new LoraOptions
        {
            Rank = 6, Alpha = 12.5, Dropout = 0.05, UseRsLora = true, UseDora = true, Initialization = LoraInit.Gaussian, Bias = PeftBias.LoraOnly,
            TargetModulesPattern = @".*\.(query|value)", ExcludeModules = ["layer.3.query"], LayersToTransform = [0, 2], LayersPattern = ["layer"],
            ModulesToSave = ["classifier"], TaskType = PeftTaskType.SequenceClassification, BaseModelNameOrPath = "models/x", Revision = "main",
            RankPattern = new Dictionary<string, int> { ["query"] = 2 }, AlphaPattern = new Dictionary<string, double> { ["value"] = 3 },
        };
        var back = (LoraOptions)PeftConfigJson.Parse(JsonNode.Parse(PeftConfigJson.Write(config))!.AsObject(), "test");
        Assert.AreEqual(config.Rank, back.Rank);
        Assert.AreEqual(config.Alpha, back.Alpha);
        Assert.AreEqual(config.Dropout, back.Dropout);
        Assert.AreEqual(config.UseRsLora, back.UseRsLora);
        Assert.AreEqual(config.UseDora, back.UseDora);
        Assert.AreEqual(config.Initialization, back.Initialization);
        Assert.AreEqual(config.Bias, back.Bias);
        Assert.AreEqual(config.TargetModulesPattern, back.TargetModulesPattern);
        Assert.IsNull(back.TargetModules);
        CollectionAssert.AreEqual(config.ExcludeModules.ToList(), back.ExcludeModules!.ToList());
        CollectionAssert.AreEqual(config.LayersToTransform.ToList(), back.LayersToTransform!.ToList());
        CollectionAssert.AreEqual(config.LayersPattern.ToList(), back.LayersPattern!.ToList());
        Assert.AreEqual(config.TaskType, back.TaskType);
        Assert.AreEqual(config.BaseModelNameOrPath, back.BaseModelNameOrPath);
        Assert.AreEqual(config.Revision, back.Revision);
        Assert.AreEqual(2, back.RankPattern!["query"]);
        Assert.AreEqual(3.0, back.AlphaPattern!["value"]);
    }

    [TestMethod]
    [DataRow("\"use_qalora\": true", "use_qalora")]
    [DataRow("\"layer_replication\": [[0, 1]]", "layer_replication")]
    [DataRow("\"init_lora_weights\": \"olora\"", "init_lora_weights")]
    [DataRow("\"r\": \"eight\"", "'r'")]
    public void UnsupportedOrMalformedConfigFieldsAreNamed(string field, string named)
    {
        var json = $$"""{"peft_type": "LORA", "target_modules": ["query"], {{field}}}""";
        Exception? ex = null;
        try { PeftConfigJson.Parse(JsonNode.Parse(json)!.AsObject(), "adapter_config.json"); }
        catch (Exception e) when (e is NotSupportedException or InvalidDataException) { ex = e; }
        Assert.IsNotNull(ex, $"{field} was accepted");
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, named);
    }

    [TestMethod]
    public void OtherPeftTypesAndPickleWeightsAreRefusedClearly()
    {
        var ex = Assert.ThrowsExactly<NotSupportedException>(() => PeftConfigJson.Parse(JsonNode.Parse("""{"peft_type": "PREFIX_TUNING"}""")!.AsObject(), "adapter_config.json"));
        StringAssert.Contains(ex.Message, "PREFIX_TUNING");
        var folder = Path.Combine(_dir, "bin");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "adapter_model.bin"), "pickle");
        var missing = Assert.ThrowsExactly<FileNotFoundException>(() => PeftAdapterFile.ReadWeights(folder));
        StringAssert.Contains(missing.Message, "safe_serialization");
    }

    [TestMethod]
    public void AFileLackingATensorTheConfigCallsForIsRefused()
    {
        var model = TinyClassifier.Create(4);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"] });
        var folder = Path.Combine(_dir, "partial");
        peft.SaveAdapter(folder);
        var tensors = SafeTensors.Load(Path.Combine(folder, PeftAdapterFile.WeightsFileName));
        tensors.Remove("base_model.model.encoder.layer.1.query.lora_B.weight");
        SafeTensors.Save(Path.Combine(folder, PeftAdapterFile.WeightsFileName), tensors);
        var ex = Assert.ThrowsExactly<InvalidDataException>(() => PeftModel.LoadAdapter(TinyClassifier.Create(4), folder));
        Console.WriteLine(ex.Message);
        StringAssert.Contains(ex.Message, "lacks 'base_model.model.encoder.layer.1.query.lora_B.weight'");
    }

    [TestMethod]
    public void SavingOverAnAdapterReplacesBothFilesKeepsOtherFilesAndLeavesNoTemporaryFolder()
    {
        var folder = Path.Combine(_dir, "adapter");
        PeftModel.Inject(TinyClassifier.Create(1), new LoraOptions { Alpha = 8, Dropout = 0, Rank = 2, TargetModules = ["query"], Initialization = LoraInit.Random }).SaveAdapter(folder);
        File.WriteAllText(Path.Combine(folder, "README.md"), "the user's notes");

        var model = TinyClassifier.Create(2);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, Rank = 4, TargetModules = ["query", "value"], Initialization = LoraInit.Random });
        peft.SaveAdapter(folder);

        var files = Directory.GetFiles(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray();
        var siblings = Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).ToArray();
        Console.WriteLine($"adapter folder: {string.Join(", ", files)}; beside it: {string.Join(", ", siblings)}");
        CollectionAssert.AreEqual(new[] { "README.md", PeftConfigJson.FileName, PeftAdapterFile.WeightsFileName }, files);
        CollectionAssert.AreEqual(new[] { "adapter" }, siblings, "no temporary folder left beside the adapter");
        Assert.AreEqual(4, ((LoraOptions)PeftConfigJson.Read(folder)).Rank, "the new config");
        var reloaded = TinyClassifier.Create(2);
        PeftModel.LoadAdapter(reloaded, folder);
        using var noGrad = no_grad();
        Assert.AreEqual(0.0, MaxAbsDiff(reloaded.call(Input(3)), model.call(Input(3))), "the new weights, matching the new config");
    }

    [TestMethod]
    public void ASaveThatFailsBeforeTheConfigIsInPlaceLeavesTheOldWeights()
    {
        var folder = Path.Combine(_dir, "adapter");
        var old = PeftModel.Inject(TinyClassifier.Create(1), new LoraOptions { Alpha = 8, Dropout = 0, Rank = 2, TargetModules = ["query"], Initialization = LoraInit.Random });
        old.SaveAdapter(folder);
        var weights = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        var oldWeights = File.ReadAllBytes(weights);
        // The config cannot be replaced (a folder stands where it goes): a failure between the two files, as a full
        // disk or a crash would cause. Writing the weights in place first would pair new weights with the old config.
        File.Delete(Path.Combine(folder, PeftConfigJson.FileName));
        Directory.CreateDirectory(Path.Combine(folder, PeftConfigJson.FileName));

        var peft = PeftModel.Inject(TinyClassifier.Create(2), new LoraOptions { Alpha = 8, Dropout = 0, Rank = 4, TargetModules = ["query", "value"], Initialization = LoraInit.Random });
        var e = Assert.Throws<Exception>(() => peft.SaveAdapter(folder));
        Console.WriteLine($"{e.GetType().Name}: {e.Message}");
        Assert.IsTrue(File.ReadAllBytes(weights).AsSpan().SequenceEqual(oldWeights), "the old weights must survive a failed save");
        CollectionAssert.AreEqual(new[] { "adapter" }, Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).ToArray(), "no temporary folder left");
    }
}
