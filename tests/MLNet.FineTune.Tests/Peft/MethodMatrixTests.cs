using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tests.Models;
using TorchSharp;
using static MLNet.FineTune.Tests.Peft.TestTensors;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>
/// Every method on every model family, with the family's default targets: one AdamW step (weight decay on, every
/// parameter handed to the optimizer) changes only the adapter and the head, and the base stays bit-identical; the
/// saved adapter reloads into a fresh model with identical outputs; mergeable methods merge.
/// </summary>
[TestClass]
public sealed class MethodMatrixTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-matrix-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    public static IEnumerable<object[]> Cases()
    {
        string[] families = ["bert", "roberta", "distilbert", "gpt2", "llama", "mistral", "qwen2"];
        string[] methods = ["lora", "rslora", "dora", "pissa", "ia3", "houlsby", "pfeiffer", "full"];
        foreach (var family in families)
            foreach (var method in methods)
                yield return [family, method];
    }

    private static MethodOptions Config(string method) => method switch
    {
        "lora" => new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0.1 },
        "rslora" => new LoraOptions { Dropout = 0, Rank = 4, Alpha = 8, UseRsLora = true, Initialization = LoraInit.Gaussian },
        "dora" => new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0.1, UseDora = true },
        "pissa" => new LoraOptions { Dropout = 0, Rank = 4, Alpha = 4, Initialization = LoraInit.PiSSA },
        "ia3" => new IA3Options(),
        "houlsby" => new AdapterOptions { Placement = BottleneckKind.Houlsby, ReductionFactor = 4 },
        "pfeiffer" => new AdapterOptions { Placement = BottleneckKind.Pfeiffer, ReductionFactor = 4, Activation = "gelu" },
        "full" => new FullFineTuneOptions(),
        _ => throw new ArgumentException(method),
    };

    // A model of the family (fixture weights, head drawn from a fixed seed) and a loss on the fixture's inputs.
    private static (nn.Module Model, Func<Tensor> Output, Func<Tensor, Tensor> Loss) Create(string family)
    {
        manual_seed(42);
        switch (family)
        {
            case "bert" or "roberta" or "distilbert":
            {
                var fixture = EncoderFixture.Load(family + "-tiny");
                var (model, _) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 3);
                return (model, () => model.forward(fixture.Inputs()), logits => nn.functional.cross_entropy(logits, tensor(new long[] { 0, 2 })));
            }
            default:
            {
                var fixture = CausalFixture.Load(family == "mistral" ? "llama-tiny" : family + "-tiny");
                CausalLanguageModel model;
                if (family == "mistral")
                {
                    var json = JsonNode.Parse(File.ReadAllText(Path.Combine(fixture.Folder, "config.json")))!.AsObject();
                    json["model_type"] = "mistral";
                    model = ModelFactory.CreateCausalLM(HfConfig.Parse(json.ToJsonString()));
                    WeightLoader.Load(model, HfCheckpoint.Load(fixture.Folder), model.BaseModelPrefix);
                }
                else model = ModelFactory.FromPretrainedCausalLM(fixture.Folder);
                Assert.AreEqual(family, model.ModelType);
                var input = fixture.InputTensor();
                return (model, () => model.call(input), logits =>
                {
                    manual_seed(3);
                    var targets = randint(0, logits.shape[^1], [logits.shape[0] * logits.shape[1]], dtype: ScalarType.Int64);
                    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), targets);
                });
            }
        }
    }

    [TestMethod]
    [DynamicData(nameof(Cases))]
    public void OneStepTrainsOnlyTheAdapterAndTheFileReloads(string family, string method)
    {
        using var scope = NewDisposeScope();
        var (model, output, loss) = Create(family);
        var before = Snapshot(model);
        var peft = PeftModel.Inject(model, Config(method));
        var count = peft.CountParameters();
        var trainable = peft.TrainableParameters().Select(p => p.Name).ToHashSet();
        Console.WriteLine($"{family} / {method}: {peft.Layers.Count} adapted layers ({string.Join(", ", peft.Layers.Keys.Select(k => k.Split('.')[^1]).Distinct())}), saved modules [{string.Join(", ", peft.SavedModules)}]; {count}");
        if (method != "full") Assert.IsTrue(peft.Layers.Count > 0);

        // PiSSA moves the principal part out of the base weight: compare the base against the weights after injection.
        var baseline = method == "pissa" ? Snapshot(model) : before;
        model.train();
        var optimizer = optim.AdamW(model.parameters(), lr: 1e-2, weight_decay: 0.1);
        optimizer.zero_grad();
        loss(output()).backward();
        optimizer.step();

        int changedFrozen = 0, unchangedTrainable = 0, gradMismatch = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            bool isTrainable = trainable.Contains(name);
            if ((p.grad is not null) != isTrainable) gradMismatch++;
            var now = p.detach().cpu().bytes.ToArray();
            if (!baseline.TryGetValue(name, out var old)) { Assert.IsTrue(isTrainable, $"new parameter {name} must be an adapter's"); continue; }
            bool same = now.AsSpan().SequenceEqual(old);
            if (!isTrainable && !same) changedFrozen++;
            if (isTrainable && same) unchangedTrainable++;
        }
        Console.WriteLine($"  after one AdamW step (weight decay 0.1): frozen tensors changed {changedFrozen}, trainable unchanged {unchangedTrainable}, grad presence mismatches {gradMismatch}");
        Assert.AreEqual(0, changedFrozen, "a frozen base weight changed");
        Assert.AreEqual(0, gradMismatch, "gradients reached frozen parameters or missed trainable ones");
        Assert.AreEqual(0, unchangedTrainable, "a trainable parameter did not move");
        if (method == "full") { Assert.AreEqual(count.Total, count.Trainable); return; }

        // Save, reload into a fresh copy of the base, compare.
        model.eval();
        using var noGrad = no_grad();
        var expected = output().detach().clone();
        var folder = Path.Combine(_dir, family + "-" + method);
        peft.SaveAdapter(folder);
        var (fresh, freshOutput, _) = Create(family);
        var reloaded = PeftModel.LoadAdapter(fresh, folder);
        fresh.eval();
        var reloadError = MaxAbsDiff(freshOutput(), expected);
        Console.WriteLine($"  reloaded from {string.Join(", ", Directory.GetFiles(folder).Select(Path.GetFileName))}: max |diff| {reloadError:E2}");
        Assert.AreEqual(0.0, reloadError);
        reloaded.AdaptersEnabled = false;
        var effect = MaxAbsDiff(freshOutput(), expected);
        reloaded.AdaptersEnabled = true;
        Console.WriteLine($"  the trained adapter moves the output by {effect:E2} (adapter disabled vs enabled)");
        Assert.IsTrue(effect > 1e-6, "the adapter has no effect: merge and reload checks would prove nothing");

        if (method is "houlsby" or "pfeiffer")
        {
            Assert.ThrowsExactly<NotSupportedException>(reloaded.Merge);
            return;
        }
        reloaded.Merge();
        var mergeError = MaxAbsDiff(freshOutput(), expected);
        reloaded.Unmerge();
        var unmergeError = MaxAbsDiff(freshOutput(), expected);
        Console.WriteLine($"  merged vs unmerged: {mergeError:E2}; after unmerge: {unmergeError:E2}");
        Assert.IsTrue(mergeError < 1e-4);
        Assert.IsTrue(unmergeError < 1e-4);
    }
}
