using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Models;
using TorchSharp;
using TorchSharp.Modules;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft.QLora;

/// <summary>LoRA and DoRA over a 4-bit base: the same function and gradients as over the dequantized float weights,
/// gradients only where they belong, bitsandbytes' state-dict keys, ordinary PEFT adapter files.</summary>
[TestClass]
public sealed class QLoraLayerTests
{
    // A 4-bit TinyClassifier and a float32 twin whose linear layers hold the dequantized weights, both with the same
    // LoRA adapter (random B, so the adapter matters).
    private static (TinyClassifier Quantized, PeftModel QuantizedPeft, TinyClassifier Reference, PeftModel ReferencePeft) Twins(LoraOptions lora, FourBitQuantization quantization)
    {
        var quantized = TinyClassifier.Create(seed: 1, hidden: 64, layers: 2);
        var reference = TinyClassifier.Create(seed: 1, hidden: 64, layers: 2);
        var paths = BaseQuantizer.Quantize(quantized, quantization);
        using (no_grad())
            foreach (var path in paths)
            {
                var q = (Linear4Bit)ModuleSurgery.Get(quantized, path);
                ((Linear)ModuleSurgery.Get(reference, path)).weight!.copy_(q.DequantizedWeight(ScalarType.Float32));
            }
        var options = lora with { Initialization = LoraInit.Random, Dropout = 0 };
        manual_seed(5);
        var quantizedPeft = PeftModel.Inject(quantized, options);
        var referencePeft = PeftModel.Inject(reference, options);
        using (no_grad())
            foreach (var (path, layer) in quantizedPeft.Layers)
                foreach (var ((_, p), (_, r)) in layer.AdapterParameters().Zip(referencePeft.Layers[path].AdapterParameters()))
                    r.copy_(p);
        return (quantized, quantizedPeft, reference, referencePeft);
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void LoraOverA4BitBaseEqualsLoraOverItsDequantizedWeights(bool dora)
    {
        using var scope = NewDisposeScope();
        LoraOptions lora = dora ? new DoraOptions { Rank = 4, TargetModules = ["query", "value"] } : new LoraOptions { Rank = 4, TargetModules = ["query", "value"] };
        var (quantized, qPeft, reference, rPeft) = Twins(lora, new FourBitQuantization());
        Assert.IsTrue(qPeft.Layers.Values.All(l => l.QuantState is not null), "the adapters wrap 4-bit bases");
        Assert.AreEqual(4, qPeft.Layers.Count);
        Assert.IsTrue(quantized.modules().OfType<Linear4Bit>().Count() == 2, "the non-targeted dense layers stay 4-bit modules");

        var x = Input(3, hidden: 64);
        quantized.train();
        reference.train();
        var yq = quantized.forward(x);
        var yr = reference.forward(x);
        double forwardError = MaxAbsDiff(yq, yr);

        yq.square().sum().backward();
        yr.square().sum().backward();
        double gradError = 0, gradScale = 0;
        foreach (var (path, layer) in qPeft.Layers)
            foreach (var ((name, p), (_, r)) in layer.AdapterParameters().Zip(rPeft.Layers[path].AdapterParameters()))
            {
                Assert.IsNotNull(p.grad, $"{path}.{name} gets a gradient through the 4-bit base");
                gradError = Math.Max(gradError, MaxAbsDiff(p.grad, r.grad!));
                gradScale = Math.Max(gradScale, r.grad!.abs().max().item<float>());
            }
        Console.WriteLine($"{(dora ? "DoRA" : "LoRA")} over NF4 vs over the dequantized float32 weights: forward max error {forwardError:E2} " +
            $"(output scale {yr.abs().max().item<float>():F3}), adapter gradients max error {gradError:E2} (scale {gradScale:E2})");
        Assert.IsTrue(forwardError < 1e-5, "forward");
        Assert.IsTrue(gradError < 1e-5 * Math.Max(1, gradScale), "gradients");

        // Only the adapters and the head train: no gradient on the packed weights or the quantization state.
        foreach (var (name, p) in quantized.named_parameters())
        {
            bool adapter = name.Contains("lora_") || name.StartsWith("classifier.", StringComparison.Ordinal);
            Assert.AreEqual(adapter, p.requires_grad, name);
            if (!adapter) Assert.IsTrue(p.grad is null || p.grad.IsInvalid, $"{name} has no gradient");
        }
        foreach (var (name, b) in quantized.named_buffers()) Assert.IsFalse(b.requires_grad, name);
    }

    [TestMethod]
    public void StateDictKeysAreBitsandbytesAndSurviveADtypeChange()
    {
        using var scope = NewDisposeScope();
        var (quantized, peft, _, _) = Twins(new LoraOptions { Rank = 4, TargetModules = ["query"] }, new FourBitQuantization());
        var state = quantized.state_dict();
        const string q = "encoder.layer.0.query";
        Assert.AreEqual(ScalarType.Byte, state[$"{q}.weight"].dtype);
        CollectionAssert.AreEqual(new long[] { 64 * 64 / 2, 1 }, state[$"{q}.weight"].shape);
        Assert.AreEqual(ScalarType.Byte, state[$"{q}.weight.absmax"].dtype);
        CollectionAssert.AreEqual(new long[] { 64 }, state[$"{q}.weight.absmax"].shape);
        CollectionAssert.AreEqual(new long[] { 16 }, state[$"{q}.weight.quant_map"].shape);
        CollectionAssert.AreEqual(new long[] { 1 }, state[$"{q}.weight.nested_absmax"].shape);
        CollectionAssert.AreEqual(new long[] { 256 }, state[$"{q}.weight.nested_quant_map"].shape);
        Assert.AreEqual(0, state[$"{q}.weight.nested_offset"].dim());
        Assert.IsTrue(state.ContainsKey($"{q}.lora_A.weight") && state.ContainsKey($"{q}.bias"));
        Assert.IsTrue(state.ContainsKey("encoder.layer.0.dense.weight.absmax"), "non-targeted layers too");
        Assert.IsFalse(state.Keys.Any(k => k.StartsWith("classifier.weight.", StringComparison.Ordinal)), "the head stays float");

        var before = quantized.forward(Input(4, hidden: 64)).detach();
        quantized.to(ScalarType.BFloat16);
        state = quantized.state_dict();
        Assert.AreEqual(ScalarType.Float32, state[$"{q}.weight.nested_absmax"].dtype, "the quantization state keeps float32");
        Assert.AreEqual(ScalarType.Float32, state[$"{q}.weight.quant_map"].dtype);
        Assert.AreEqual(ScalarType.Byte, state[$"{q}.weight"].dtype);
        Assert.AreEqual(ScalarType.BFloat16, state[$"{q}.bias"].dtype);
        var after = quantized.forward(Input(4, hidden: 64).to(ScalarType.BFloat16));
        Assert.AreEqual(ScalarType.BFloat16, after.dtype);
        Assert.IsTrue(MaxAbsDiff(before, after) < 0.05, "a bf16 forward of the same 4-bit weights agrees to bf16 precision");
        _ = peft;
    }

    [TestMethod]
    public void AQLoraAdapterIsAnOrdinaryPeftLoraFile()
    {
        using var scope = NewDisposeScope();
        var (quantized, peft, reference, _) = Twins(new LoraOptions { Rank = 4 }, new FourBitQuantization());
        var folder = Directory.CreateTempSubdirectory("qlora-adapter-").FullName;
        try
        {
            peft.SaveAdapter(folder);
            var keys = MLNet.FineTune.Checkpoints.SafeTensors.Load(Path.Combine(folder, "adapter_model.safetensors")).Keys.Order().ToList();
            Console.WriteLine(string.Join(", ", keys));
            Assert.IsTrue(keys.All(k => k.Contains(".lora_A.") || k.Contains(".lora_B.") || k.StartsWith("base_model.model.classifier.", StringComparison.Ordinal)), "only LoRA tensors and the head");
            Assert.IsFalse(keys.Any(k => k.Contains("absmax") || k.Contains("quant_map")));
            var config = File.ReadAllText(Path.Combine(folder, "adapter_config.json"));
            StringAssert.Contains(config, "\"peft_type\": \"LORA\"");

            // It loads on a float base: the same adapter over the dequantized weights gives the 4-bit model's output.
            var fresh = TinyClassifier.Create(seed: 1, hidden: 64, layers: 2);
            using (no_grad())
                foreach (var layer in quantized.modules().OfType<AdaptedLinear>().Where(l => l.QuantState is not null).Cast<nn.Module>()
                    .Concat(quantized.modules().OfType<Linear4Bit>()))
                {
                    var path = quantized.named_modules().First(m => ReferenceEquals(m.module, layer)).name;
                    var w = layer is Linear4Bit l4 ? l4.DequantizedWeight(ScalarType.Float32) : ((AdaptedLinear)layer).QuantState!.Dequantize(((AdaptedLinear)layer).Weight, ScalarType.Float32);
                    ((Linear)ModuleSurgery.Get(fresh, path)).weight!.copy_(w);
                }
            PeftModel.LoadAdapter(fresh, folder);
            var x = Input(6, hidden: 64);
            double error = MaxAbsDiff(quantized.forward(x), fresh.forward(x));
            Console.WriteLine($"QLoRA adapter reloaded on the dequantized float base: max error {error:E2}");
            Assert.IsTrue(error < 1e-5);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
        _ = reference;
    }

    [TestMethod]
    public void MergingIntoA4BitBaseRequantizesWPlusTheUpdate()
    {
        using var scope = NewDisposeScope();
        var (quantized, peft, _, _) = Twins(new LoraOptions { Rank = 4, TargetModules = ["query"] }, new FourBitQuantization());
        var x = Input(8, hidden: 64);
        var unmerged = quantized.forward(x).detach();
        var layer = (LoraLinear)peft.Layers["encoder.layer.0.query"];
        var expected = layer.QuantState!.Dequantize(layer.Weight, ScalarType.Float32) + layer.DeltaOutIn(ScalarType.Float32);
        var (packed, state) = Quantized4BitState.Quantize(expected, new FourBitQuantization());
        foreach (var l in peft.Layers.Values) l.Merge();
        Assert.IsTrue(layer.Weight.eq(packed).all().item<bool>(), "the merged codes are quantize(W + scaling B A)");
        Assert.IsTrue(layer.QuantState.Dequantize(layer.Weight, ScalarType.Float32).eq(state.Dequantize(packed, ScalarType.Float32)).all().item<bool>());
        var merged = quantized.forward(x).detach();
        double moved = MaxAbsDiff(merged, unmerged), scale = unmerged.abs().max().item<float>();
        Console.WriteLine($"merge into NF4: output moves by {moved:E2} (scale {scale:F3}) from re-quantizing W + scaling B A, as PEFT's 4-bit merge");
        Assert.IsTrue(moved > 0 && moved < 0.1 * scale);
        foreach (var l in peft.Layers.Values) l.Unmerge();
        Assert.IsFalse(layer.IsMerged);
    }

    [TestMethod]
    public void QuantizingLlamaKeepsEmbeddingsNormsAndLmHeadAndReportsMemory()
    {
        using var scope = NewDisposeScope();
        var fixture = CausalFixture.Load("llama-tiny");
        var model = ModelFactory.FromPretrainedCausalLM(fixture.Folder, ScalarType.BFloat16);
        var before = WeightMemory.Measure(model);
        var paths = BaseQuantizer.Quantize(model, new FourBitQuantization());
        var after = WeightMemory.Measure(model);
        Console.WriteLine(before);
        Console.WriteLine(after);
        Assert.IsTrue(paths.All(p => p.Contains(".layers.")), "only block layers");
        Assert.IsTrue(paths.Any(p => p.EndsWith("q_proj")) && paths.Any(p => p.EndsWith("down_proj")));
        Assert.IsFalse(paths.Any(p => p.EndsWith("lm_head")));
        var state = model.state_dict();
        Assert.AreEqual(ScalarType.BFloat16, state.First(k => k.Key.EndsWith("embed_tokens.weight")).Value.dtype);
        Assert.AreEqual(ScalarType.BFloat16, state.First(k => k.Key.EndsWith("norm.weight")).Value.dtype);

        // The measured bytes: codes are half a byte per value, the state (absmax codes, nested maxima, maps) on top.
        long quantizedValues = paths.Sum(p => ((Linear4Bit)ModuleSurgery.Get(model, p)).State.Count);
        Assert.AreEqual(quantizedValues, after.BaseRows.Single(r => r.Kind == "nf4 codes").Values);
        Assert.AreEqual((quantizedValues + 1) / 2, after.BytesOf("nf4 codes"), 64, "one byte per two values");
        Assert.AreEqual(before.BytesOf("bfloat16") - 2 * quantizedValues, after.BytesOf("bfloat16"), "the quantized layers' bf16 bytes are gone");

        // The quantized model still runs, near the bf16 one.
        var input = fixture.InputTensor();
        var logits = model.call(input);
        Assert.IsFalse(logits.isnan().any().item<bool>());
    }
}
