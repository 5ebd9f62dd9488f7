using System.Text.Json.Nodes;
using Microsoft.ML;
using MLNet.FineTune.Peft;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>
/// The method options are PEFT's config records with the library's defaults stated once on the record, while a file
/// that omits a key gets PEFT's default for it; invalid settings are refused when the estimator is built, naming the
/// option.
/// </summary>
[TestClass]
public sealed class MethodOptionsTests
{
    [TestMethod]
    public void TheRecordStatesTheLibrarysDefaultsAndAFileThatOmitsAKeyGetsPefts()
    {
        var library = new LoraOptions();
        Assert.AreEqual((8, 16.0, 0.1), (library.Rank, library.Alpha, library.Dropout), "the library's LoRA defaults");
        Assert.IsTrue(new DoraOptions().UseDora);
        Assert.AreEqual(BottleneckKind.Pfeiffer, new AdapterOptions().Placement);

        var file = (LoraOptions)PeftConfigJson.Parse(JsonNode.Parse("""{ "peft_type": "LORA", "target_modules": ["query"] }""")!.AsObject(), "minimal");
        Assert.AreEqual((8, 8.0, 0.0), (file.Rank, file.Alpha, file.Dropout), "PEFT's LoraConfig defaults for omitted keys");
        Assert.IsNotInstanceOfType<DoraOptions>(file);
        var dora = PeftConfigJson.Parse(JsonNode.Parse("""{ "peft_type": "LORA", "use_dora": true }""")!.AsObject(), "dora");
        Assert.IsInstanceOfType<DoraOptions>(dora, "use_dora reads back as DoRA's record");
        var bottleneck = (AdapterOptions)PeftConfigJson.Parse(JsonNode.Parse("""{ "peft_type": "BOTTLENECK" }""")!.AsObject(), "bottleneck");
        Assert.AreEqual(BottleneckKind.Houlsby, bottleneck.Placement, "the bottleneck format's default for a missing adapter_kind");

        // LoRA+'s ratio is a training setting: not written to the file.
        var withRatio = PeftConfigJson.Write(new LoraOptions { LoraPlusLearningRateRatio = 16, TargetModules = ["query"] });
        Assert.AreEqual(PeftConfigJson.Write(new LoraOptions { TargetModules = ["query"] }), withRatio);
    }

    [TestMethod]
    public void InvalidMethodOptionsAreRefusedNamingTheOption()
    {
        var ml = new MLContext(seed: 1);
        var options = new TextClassificationOptions { BaseModel = TinyModels.BertTiny() };
        void Refused(MethodOptions method, string option)
        {
            var e = Assert.Throws<ArgumentException>(() => ml.FineTune().TextClassification(options, method));
            Console.WriteLine($"{method.GetType().Name}: {e.Message}");
            Assert.AreEqual(option, e.ParamName);
            StringAssert.Contains(e.Message, option);
        }
        Refused(new LoraOptions { Rank = 0 }, nameof(LoraOptions.Rank));
        Refused(new DoraOptions { Alpha = double.NaN }, nameof(LoraOptions.Alpha));
        Refused(new LoraOptions { Alpha = double.PositiveInfinity }, nameof(LoraOptions.Alpha));
        Refused(new LoraOptions { Dropout = double.NaN }, nameof(LoraOptions.Dropout));
        Refused(new LoraOptions { Dropout = 1 }, nameof(LoraOptions.Dropout));
        Refused(new LoraOptions { LoraPlusLearningRateRatio = double.NaN }, nameof(LoraOptions.LoraPlusLearningRateRatio));
        Refused(new LoraOptions { LoraPlusLearningRateRatio = 0.5 }, nameof(LoraOptions.LoraPlusLearningRateRatio));
        Refused(new AdapterOptions { ReductionFactor = 0 }, nameof(AdapterOptions.ReductionFactor));
        Refused(new FullFineTuneOptions { TargetModulesPattern = ".*" }, nameof(MethodOptions.TargetModulesPattern));
    }

    [TestMethod]
    public void ABottleneckWidthThatRoundsToZeroIsRefusedAtFitNamingTheOption()
    {
        // bert-tiny's layers have 32 outputs: a reduction factor of 64 would leave 32 / 64 = 0 bottleneck units.
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new { Text = "good", Label = true }, new { Text = "bad", Label = false } });
        var options = new TextClassificationOptions { BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 16, Epochs = 1 };
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.FineTune().Adapters(options, new AdapterOptions { ReductionFactor = 64 }).Fit(data));
        Console.WriteLine(e.Message);
        Assert.AreEqual(nameof(AdapterOptions.ReductionFactor), e.ParamName);
        StringAssert.Contains(e.Message, "32 outputs");
    }
}
