using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Models;
using TorchSharp;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>A frozen bfloat16 base with float32 adapters on real model families: PEFT's own adapters loaded on a
/// bf16 base, and one training step.</summary>
[TestClass]
public sealed class MixedPrecisionTests
{
    [TestMethod]
    [DataRow("bert-tiny-cls-dora")]
    [DataRow("llama-tiny")]
    public void PeftAdapterOnABfloat16BaseStaysFloat32AndAgrees(string name)
    {
        using var scope = NewDisposeScope();
        bool encoder = name.StartsWith("bert");
        Tensor expected;
        nn.Module model;
        Func<Tensor> output;
        if (encoder)
        {
            var fixture = EncoderFixture.Load(name);
            var (m, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, 3, ScalarType.BFloat16);
            (model, output, expected) = (m, () => m.forward(fixture.Inputs()), fixture.Expected["logits"]);
        }
        else
        {
            var fixture = CausalFixture.Load(name);
            var m = ModelFactory.FromPretrainedCausalLM(fixture.Folder, ScalarType.BFloat16);
            var input = fixture.InputTensor();
            (model, output, expected) = (m, () => m.call(input), MLNet.FineTune.Checkpoints.SafeTensors.Load(Path.Combine(fixture.Folder, "adapter", "expected.safetensors"))["logits"]);
        }
        var peft = PeftModel.LoadAdapter(model, Path.Combine(encoder ? EncoderFixture.Load(name).Folder : CausalFixture.Load(name).Folder, "adapter"), trainable: true);
        foreach (var layer in peft.Layers.Values)
        {
            Assert.AreEqual(ScalarType.BFloat16, layer.Weight.dtype);
            Assert.IsTrue(layer.AdapterParameters().All(p => p.Parameter.dtype == ScalarType.Float32), "adapters stay float32");
        }

        foreach (var (pname, p) in model.named_parameters().Where(p => p.name.StartsWith("classifier.")))
            Assert.AreEqual(ScalarType.Float32, p.dtype, $"{pname}: the head trains in float32 over a bf16 base");

        var before = Snapshot(model);
        model.train();
        var logits = output();
        Assert.AreEqual(ScalarType.BFloat16, logits.dtype, "activations stay in the model's dtype");
        using (no_grad())
        {
            double error = MaxAbsDiff(logits, expected), scale = expected.abs().max().item<float>();
            // The bf16 bound alone is loose next to small logits (bert-tiny-cls-dora: max 0.117), so a dropped adapter
            // could pass it: the output must also be far nearer PEFT's adapted logits than the same bf16 model's
            // output with its adapters disabled.
            peft.AdaptersEnabled = false;
            double fromDisabled = MaxAbsDiff(logits, output());
            peft.AdaptersEnabled = true;
            Console.WriteLine($"{name}: bf16 base + fp32 PEFT adapter vs PEFT's float32 logits: max |diff| {error:E3} (max |logit| {scale:F3}); vs the bf16 model with adapters disabled: {fromDisabled:E3} ({fromDisabled / error:F1}x farther)");
            Assert.IsTrue(error <= 0.05 * scale + 0.02, $"{error}");
            Assert.IsTrue(error < 0.1 * fromDisabled, $"the output is {error:E3} from the adapted reference but only {fromDisabled:E3} from the model without adapters: the adapter did not take part");
        }
        logits.to_type(ScalarType.Float32).pow(2).mean().backward();
        var optimizer = optim.AdamW(model.parameters(), lr: 1e-3, weight_decay: 0.1);
        optimizer.step();
        var trainable = peft.TrainableParameters().Select(p => p.Name).ToHashSet();
        foreach (var (pname, p) in model.named_parameters())
        {
            bool same = p.detach().bytes.ToArray().AsSpan().SequenceEqual(before[pname]);
            if (trainable.Contains(pname)) Assert.IsFalse(same, $"{pname} did not train");
            else Assert.IsTrue(same, $"frozen {pname} changed");
            if (pname.Contains("lora_")) Assert.AreEqual(ScalarType.Float32, p.grad!.dtype, $"{pname}: float32 gradient");
        }
        Console.WriteLine($"{name}: one AdamW step trained {trainable.Count} tensors; every frozen bf16 tensor bit-identical");
    }

    [TestMethod]
    public void ModelToDtypeAfterInjectionKeepsWrapperAndStateDictInStep()
    {
        var model = TinyClassifier.Create(1);
        var peft = PeftModel.Inject(model, new LoraOptions { Alpha = 8, Dropout = 0, TargetModules = ["query"] });
        model.to(ScalarType.BFloat16);
        var layer = peft.Layers["encoder.layer.0.query"];
        var state = model.state_dict();
        Assert.AreEqual(ScalarType.BFloat16, layer.Weight.dtype);
        Assert.AreSame(layer.Weight, model.named_parameters().First(p => p.name == "encoder.layer.0.query.weight").parameter, "the wrapper's field is the registered parameter");
        Assert.AreEqual(ScalarType.BFloat16, state["encoder.layer.0.query.lora_A.weight"].dtype, "like PyTorch, .to() converts adapters too: cast the base before injecting");
        Assert.AreEqual(ScalarType.BFloat16, model.call(Input(2).to_type(ScalarType.BFloat16)).dtype);
    }
}
