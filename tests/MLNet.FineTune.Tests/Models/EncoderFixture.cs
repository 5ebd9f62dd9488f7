using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>One committed hf-reference encoder fixture: config, inputs.json as tensors, expected.safetensors.</summary>
internal sealed class EncoderFixture
{
    public required string Name { get; init; }
    public required string Folder { get; init; }
    public required HfConfig Config { get; init; }
    public required long[][] InputIds { get; init; }
    public required long[][] AttentionMask { get; init; }
    public long[][]? TokenTypeIds { get; init; }
    public required Dictionary<string, Tensor> Expected { get; init; }

    public static EncoderFixture Load(string name)
    {
        var folder = TestPaths.Fixture("hf-reference", name);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "inputs.json")))!;
        return new EncoderFixture
        {
            Name = name,
            Folder = folder,
            Config = HfConfig.Load(folder),
            InputIds = Rows(json["input_ids"]!),
            AttentionMask = Rows(json["attention_mask"]!),
            TokenTypeIds = json["token_type_ids"] is { } t ? Rows(t) : null,
            Expected = SafeTensors.Load(Path.Combine(folder, "expected.safetensors")),
        };
    }

    /// <summary>The fixture's inputs (on the CPU), with optional replacement ids.</summary>
    public EncoderInputs Inputs(long[][]? inputIds = null, long[][]? attentionMask = null) => new(
        Matrix(inputIds ?? InputIds), Matrix(attentionMask ?? AttentionMask), TokenTypeIds is null ? null : Matrix(TokenTypeIds));

    /// <summary>The checkpoint's keys and shapes, from the safetensors header, sorted by key.</summary>
    public List<string> CheckpointKeysAndShapes() =>
        SafeTensors.ReadHeader(Path.Combine(Folder, "model.safetensors")).Entries
            .Select(e => $"{e.Name} [{string.Join(", ", e.Shape)}]").Order(StringComparer.Ordinal).ToList();

    public static List<string> KeysAndShapes(TorchSharp.torch.nn.Module model) =>
        model.state_dict().Select(p => $"{p.Key} [{string.Join(", ", p.Value.shape)}]").Order(StringComparer.Ordinal).ToList();

    public static Tensor Matrix(long[][] rows) =>
        tensor(rows.SelectMany(r => r).ToArray(), rows.Length, rows[0].Length);

    private static long[][] Rows(JsonNode node) =>
        node.AsArray().Select(r => r!.AsArray().Select(v => v!.GetValue<long>()).ToArray()).ToArray();
}

/// <summary>Comparison helpers that print what they measure.</summary>
internal static class Parity
{
    /// <summary>Max |ours - reference| over every element (float64), after checking the shapes agree.</summary>
    public static double MaxAbsError(Tensor ours, Tensor reference, string what)
    {
        CollectionAssert.AreEqual(reference.shape, ours.shape, $"{what}: shape");
        return (ours.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs().max().item<double>();
    }

    /// <summary>Asserts max |ours - reference| &lt;= tolerance and prints the measured error.</summary>
    public static void AssertClose(Tensor ours, Tensor reference, double tolerance, string what)
    {
        double error = MaxAbsError(ours, reference, what);
        Console.WriteLine($"{what}: max |ours - transformers| = {error:E3} over {reference.numel()} values (tolerance {tolerance:E0})");
        Assert.IsTrue(error <= tolerance, $"{what}: max abs error {error:E3} exceeds {tolerance:E0}");
    }

    /// <summary>The keys a task model must have: a base checkpoint's keys under a prefix (minus dropped modules) plus head keys.</summary>
    public static List<string> Expect(IEnumerable<string> baseKeysAndShapes, string prefix, Func<string, bool> keep, params string[] headKeysAndShapes) =>
        baseKeysAndShapes.Where(keep).Select(k => $"{prefix}.{k}").Concat(headKeysAndShapes).Order(StringComparer.Ordinal).ToList();

    public static void AssertSameKeys(List<string> expected, List<string> actual, string what)
    {
        var missing = expected.Except(actual).ToList();
        var extra = actual.Except(expected).ToList();
        Console.WriteLine($"{what}: {actual.Count} state-dict entries; {missing.Count} expected but absent, {extra.Count} unexpected");
        Assert.AreEqual(0, missing.Count + extra.Count,
            $"{what}: absent from the model: [{string.Join("; ", missing)}]; not in the checkpoint: [{string.Join("; ", extra)}]");
        CollectionAssert.AreEqual(expected, actual, what);
    }
}
