using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>A causal-LM reference fixture (tests/.../Fixtures/hf-reference/&lt;name&gt;): what transformers computed.</summary>
internal sealed class CausalFixture
{
    public required string Folder { get; init; }
    public required long[][] InputIds { get; init; }
    public required long[] GeneratePrompt { get; init; }
    public required int MaxNewTokens { get; init; }
    public required Tensor Logits { get; init; }          // (B, T, V) float32
    public required long[] GreedyTokens { get; init; }    // prompt + new tokens

    public static CausalFixture Load(string name)
    {
        var folder = TestPaths.Fixture("hf-reference", name);
        var inputs = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "inputs.json")))!;
        var expected = SafeTensors.Load(Path.Combine(folder, "expected.safetensors"));
        return new CausalFixture
        {
            Folder = folder,
            InputIds = inputs["input_ids"]!.AsArray().Select(r => r!.AsArray().Select(v => v!.GetValue<long>()).ToArray()).ToArray(),
            GeneratePrompt = inputs["generate_prompt"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray(),
            MaxNewTokens = inputs["max_new_tokens"]!.GetValue<int>(),
            Logits = expected["logits"],
            // transformers saved the generated ids as float32; they are small integers, exact in float32.
            GreedyTokens = expected["greedy_tokens"].to_type(ScalarType.Int64).data<long>().ToArray(),
        };
    }

    public Tensor InputTensor() => tensor(InputIds.SelectMany(r => r).ToArray(), [InputIds.Length, InputIds[0].Length]);
}

/// <summary>
/// Parity of one causal family with transformers on its committed fixture: logits, greedy tokens, the cache, the state
/// dict's keys and shapes, bfloat16. Each family's [TestClass] names its fixture.
/// </summary>
public abstract class CausalParityTests
{
    protected abstract string FixtureName { get; }
    protected abstract Type ExpectedModelType { get; }

    private CausalFixture _fixture = null!;
    private CausalLanguageModel _model = null!;

    [TestInitialize]
    public void Init()
    {
        _fixture = CausalFixture.Load(FixtureName);
        _model = ModelFactory.FromPretrainedCausalLM(_fixture.Folder, ScalarType.Float32, null, out var report);
        Assert.AreEqual(0, report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType(_model, ExpectedModelType);
    }

    [TestCleanup]
    public void Cleanup() => _model.Dispose();

    [TestMethod]
    public void LogitsMatchTransformers()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = _model.call(_fixture.InputTensor());
        CollectionAssert.AreEqual(_fixture.Logits.shape, logits.shape);
        double error = (logits - _fixture.Logits).abs().max().item<float>();
        double scale = _fixture.Logits.abs().max().item<float>();
        Console.WriteLine($"{FixtureName}: float32 logits {string.Join("x", logits.shape)}, max |ours - transformers| = {error:E3} (max |logit| {scale:F3})");
        Assert.IsTrue(error <= 1e-5, $"max error {error:E3} > 1e-5");
    }

    [TestMethod]
    public void GreedyTokensMatchTransformers()
    {
        var cached = GreedyDecoder.Generate(_model, _fixture.GeneratePrompt, _fixture.MaxNewTokens);
        var uncached = GreedyDecoder.Generate(_model, _fixture.GeneratePrompt, _fixture.MaxNewTokens, useCache: false);
        Console.WriteLine($"{FixtureName}: transformers {string.Join(" ", _fixture.GreedyTokens)}");
        Console.WriteLine($"{FixtureName}: ours (cache) {string.Join(" ", cached)}");
        int mismatches = cached.Zip(_fixture.GreedyTokens).Count(p => p.First != p.Second) + Math.Abs(cached.Length - _fixture.GreedyTokens.Length);
        Console.WriteLine($"{FixtureName}: {mismatches} mismatching tokens of {_fixture.GreedyTokens.Length}");
        CollectionAssert.AreEqual(_fixture.GreedyTokens, cached);
        CollectionAssert.AreEqual(_fixture.GreedyTokens, uncached);
    }

    [TestMethod]
    public void CachedDecodingEqualsFullForward()
    {
        // Feed the greedy sequence as prompt + one token per step through the cache; every step's logits must equal
        // the full forward's logits at that position.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tokens = _fixture.GreedyTokens;
        int promptLength = _fixture.GeneratePrompt.Length;
        var full = _model.call(tensor(tokens, [1, tokens.Length]));               // (1, S, V)
        using var cache = _model.CreateCache();
        var steps = new List<Tensor> { _model.call(tensor(tokens[..promptLength], [1, promptLength]), cache: cache) };
        for (int i = promptLength; i < tokens.Length; i++)
        {
            Assert.AreEqual(i, cache.Length);
            steps.Add(_model.call(tensor(new[] { tokens[i] }, [1, 1]), cache: cache));
        }
        var incremental = cat(steps, dim: 1);
        double error = (incremental - full).abs().max().item<float>();
        Console.WriteLine($"{FixtureName}: cached decode of {tokens.Length} tokens vs full forward, max |diff| = {error:E3}");
        Assert.IsTrue(error <= 1e-5, $"max error {error:E3} > 1e-5");
    }

    [TestMethod]
    public void StateDictKeysAndShapesEqualTheCheckpoint()
    {
        var checkpoint = SafeTensors.Load(Path.Combine(_fixture.Folder, "model.safetensors"));
        var ours = _model.state_dict();
        var missing = checkpoint.Keys.Except(ours.Keys).ToList();
        var extra = ours.Keys.Except(checkpoint.Keys).ToList();
        var shapeDiffs = checkpoint.Keys.Intersect(ours.Keys).Where(k => !checkpoint[k].shape.SequenceEqual(ours[k].shape)).ToList();
        Console.WriteLine($"{FixtureName}: {ours.Count} model keys, {checkpoint.Count} checkpoint keys; only in checkpoint: {missing.Count}, only in model: {extra.Count}, shape differences: {shapeDiffs.Count}");
        CollectionAssert.AreEquivalent(checkpoint.Keys.ToList(), ours.Keys.ToList(),
            $"only in checkpoint: [{string.Join(", ", missing)}]; only in model: [{string.Join(", ", extra)}]");
        Assert.AreEqual(0, shapeDiffs.Count, $"shape differences: {string.Join(", ", shapeDiffs)}");
    }

    [TestMethod]
    public void LinearLayersSitInReplaceableFieldsNamedAsTheirKeys()
    {
        // PEFT injection swaps these fields for adapter wrappers: each Linear/Conv1D must be held by a writable field
        // typed Module<Tensor, Tensor> whose name is the last part of its state-dict path.
        var modules = _model.named_modules().ToDictionary(m => m.name, m => m.module);
        int checkedLayers = 0;
        foreach (var (path, module) in modules.Where(m => m.Value is TorchSharp.Modules.Linear or Conv1D))
        {
            int dot = path.LastIndexOf('.');
            var parent = dot < 0 ? _model : modules[path[..dot]];
            var field = parent.GetType().GetField(path[(dot + 1)..], System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public);
            Assert.IsNotNull(field, $"{path}: no field of that name in {parent.GetType().Name}");
            Assert.AreEqual(typeof(TorchSharp.torch.nn.Module<Tensor, Tensor>), field.FieldType, $"{path}: field type");
            Assert.IsFalse(field.IsInitOnly, $"{path}: the field is readonly");
            Assert.AreSame(module, field.GetValue(parent), path);
            checkedLayers++;
        }
        Console.WriteLine($"{FixtureName}: {checkedLayers} linear layers in writable Module<Tensor, Tensor> fields");
        Assert.IsTrue(checkedLayers >= 8);
    }

    [TestMethod]
    public void TrainingForwardGivesEveryParameterAGradient()
    {
        using var scope = NewDisposeScope();
        _model.train();
        var ids = _fixture.InputTensor();                                          // (B, T)
        var logits = _model.call(ids.narrow(1, 0, ids.shape[1] - 1));               // next-token prediction
        var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), ids.narrow(1, 1, ids.shape[1] - 1).reshape(-1));
        loss.backward();
        var withoutGradient = _model.named_parameters().Where(p => p.parameter.grad is null || !p.parameter.grad.isfinite().all().item<bool>()).Select(p => p.name).ToList();
        Console.WriteLine($"{FixtureName}: training loss {loss.item<float>():F4} (ln V = {Math.Log(_model.VocabSize):F4}); parameters without a finite gradient: {withoutGradient.Count}");
        Assert.AreEqual(0, withoutGradient.Count, string.Join(", ", withoutGradient));
    }

    [TestMethod]
    public void BFloat16ForwardStaysCloseAndDecodesTheSameTokens()
    {
        using var scope = NewDisposeScope();
        using var model = ModelFactory.FromPretrainedCausalLM(_fixture.Folder, ScalarType.BFloat16);
        Assert.AreEqual(ScalarType.BFloat16, model.parameters().First().dtype);
        Tensor logits;
        using (no_grad()) logits = model.call(_fixture.InputTensor());
        Assert.AreEqual(ScalarType.BFloat16, logits.dtype);
        double error = (logits.to_type(ScalarType.Float32) - _fixture.Logits).abs().max().item<float>();
        double scale = _fixture.Logits.abs().max().item<float>();
        var tokens = GreedyDecoder.Generate(model, _fixture.GeneratePrompt, _fixture.MaxNewTokens);
        int agree = tokens.Zip(_fixture.GreedyTokens).TakeWhile(p => p.First == p.Second).Count() - _fixture.GeneratePrompt.Length;
        Console.WriteLine($"{FixtureName}: bfloat16 logits max |ours - transformers fp32| = {error:E3} ({error / scale:P2} of max |logit| {scale:F3}); greedy agrees for the first {agree} of {_fixture.MaxNewTokens} tokens");
        // bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 0.2%); a few roundings per layer stay within 3% of the logit scale.
        Assert.IsTrue(error <= 0.03 * scale, $"bf16 error {error:E3} exceeds 3% of the logit scale {scale:F3}");
    }
}
