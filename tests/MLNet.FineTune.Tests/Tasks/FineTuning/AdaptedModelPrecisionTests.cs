using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.FineTuning;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// A bfloat16 base is for frozen weights: trainable ones stay float32 (FineTuneOptions' precision contract). Full
/// fine-tuning freezes nothing, so all of it must be float32, or AdamW's small updates vanish in bf16's 8-bit mantissa.
/// </summary>
[TestClass]
public sealed class AdaptedModelPrecisionTests
{
    private static Dictionary<ScalarType, int> DTypes(AdaptedModel adapted, bool trainableOnly) =>
        adapted.Model.named_parameters().Where(p => !trainableOnly || p.parameter.requires_grad)
            .GroupBy(p => p.parameter.dtype).ToDictionary(g => g.Key, g => g.Count());

    private static AdaptedModel Create(MethodOptions method) =>
        AdaptedModel.CreateForTraining(TinyModels.BertTiny(), config => ModelFactory.CreateSequenceClassification(config, 2),
            method with { TaskType = PeftTaskType.SequenceClassification }, ScalarType.BFloat16, CPU, _ => { });

    [TestMethod]
    public void FullFineTuneUnderBFloat16TrainsEveryWeightInFloat32()
    {
        var adapted = Create(new FullFineTuneOptions());
        var all = DTypes(adapted, trainableOnly: false);
        Console.WriteLine($"full fine-tuning, bf16 asked: base dtype {adapted.BaseDType}; parameters by dtype: {string.Join(", ", all.Select(p => $"{p.Key} {p.Value}"))}");
        Assert.AreEqual(ScalarType.Float32, adapted.BaseDType);
        CollectionAssert.AreEquivalent(new[] { ScalarType.Float32 }, all.Keys.ToArray(), "every parameter trains, so every parameter must be float32");
    }

    [TestMethod]
    public void LoraUnderBFloat16KeepsTheFrozenBaseInBFloat16AndTrainsInFloat32()
    {
        var adapted = Create(new LoraOptions { Alpha = 8, Dropout = 0, Rank = 4, TargetModules = ["query", "value"] });
        var trainable = DTypes(adapted, trainableOnly: true);
        var all = DTypes(adapted, trainableOnly: false);
        Console.WriteLine($"LoRA, bf16 asked: base dtype {adapted.BaseDType}; trainable by dtype: {string.Join(", ", trainable.Select(p => $"{p.Key} {p.Value}"))}; all: {string.Join(", ", all.Select(p => $"{p.Key} {p.Value}"))}");
        Assert.AreEqual(ScalarType.BFloat16, adapted.BaseDType);
        CollectionAssert.AreEquivalent(new[] { ScalarType.Float32 }, trainable.Keys.ToArray());
        Assert.IsTrue(all.ContainsKey(ScalarType.BFloat16), "the frozen base should be held in bfloat16");
    }
}
