using System.Diagnostics;
using MLNet.FineTune.Checkpoints;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>The dependency-free ONNX protobuf reader: the real MiniLM export, typed fields, malformed files.</summary>
[TestClass]
public sealed class OnnxModelTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-onnx-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    [TestMethod]
    public void ReadsTheMiniLmExportAsOnnxRuntimeSeesIt()
    {
        using var stream = OnnxMiniLmReference.OpenOnnx();
        var watch = Stopwatch.StartNew();
        var model = OnnxModel.Read(stream, OnnxMiniLmReference.OnnxResource);
        var elapsed = watch.ElapsedMilliseconds;
        var graph = model.Graph;
        Console.WriteLine($"parsed {stream.Length} bytes in {elapsed} ms: ir {model.IrVersion}, {model.ProducerName} {model.ProducerVersion}, " +
                          $"opset {model.Opsets[""]}, {graph.Nodes.Count} nodes, {graph.Initializers.Count} initializers");

        // Inputs and outputs agree with ONNX Runtime's own reading of the same bytes.
        var (ortInputs, ortOutputs) = OnnxMiniLmReference.Signature;
        CollectionAssert.AreEquivalent(ortInputs.ToList(), graph.Inputs.Select(i => i.Name).ToList());
        CollectionAssert.AreEquivalent(ortOutputs.ToList(), graph.Outputs.Select(o => o.Name).ToList());
        var inputIds = graph.Inputs.Single(i => i.Name == "input_ids");
        Assert.AreEqual(OnnxDataType.Int64, inputIds.ElementType);
        Assert.AreEqual(2, inputIds.Shape.Count);

        Assert.AreEqual(13, model.Opsets[""]);
        // Every node's inputs are graph inputs, initializers or earlier outputs (the file is topologically sorted).
        var known = graph.Inputs.Select(i => i.Name).Concat(graph.Initializers.Select(t => t.Name)).ToHashSet();
        foreach (var node in graph.Nodes)
        {
            foreach (var input in node.Inputs.Where(i => i.Length > 0))
                Assert.IsTrue(known.Contains(input), $"{node.Describe()} reads '{input}' before it is defined");
            known.UnionWith(node.Outputs);
        }
        // The package notes say: 36 numbered MatMul weights; the other 12 MatMuls multiply activations (attention).
        var matMulWeights = graph.Nodes.Where(n => n.OpType == "MatMul" && graph.InitializersByName.ContainsKey(n.Inputs[1])).ToList();
        Assert.AreEqual(36, matMulWeights.Count);
        var word = graph.InitializersByName["embeddings.word_embeddings.weight"];
        CollectionAssert.AreEqual(new long[] { 30522, 384 }, word.Dims.ToArray());
        Assert.AreEqual(30522L * 384 * 4, word.Data.Length);
        var values = word.ToFloatArray();
        Assert.IsTrue(values.All(float.IsFinite) && values.Any(v => v != 0), "word embeddings decode to finite, non-zero floats");
    }

    [TestMethod]
    public void DecodesTypedFieldsPackedAndUnpacked()
    {
        // A tensor with float_data (packed) and dims unpacked, one with raw int64 data, a Constant node with attributes.
        var bytes = new ProtoWriter()
            .Varint(1, 8)
            .Message(8, o => o.String(1, "").Varint(2, 17))
            .Message(7, g => g
                .String(2, "tiny")
                .Message(5, t => t.Varint(1, 2).Varint(1, 3).Varint(2, 1).String(8, "w").PackedFloat(4, [1, 2, 3, 4, 5, -6.5f]))
                .Message(5, t => t.PackedInt64(1, [2]).Varint(2, 7).String(8, "shape").PackedInt64(7, [-1, 12]))
                .Message(1, n => n.String(1, "x").String(1, "w").String(2, "y").String(3, "mm").String(4, "MatMul"))
                .Message(1, n => n.String(2, "c").String(4, "Constant")
                    .Message(5, a => a.String(1, "axis").Varint(3, -1).Varint(20, 2))
                    .Message(5, a => a.String(1, "alpha").Fixed32(2, 0.25f).Varint(20, 1))
                    .Message(5, a => a.String(1, "perm").PackedInt64(8, [0, 2, 1, 3]).Varint(20, 7)))
                .Message(11, i => i.String(1, "x").Message(2, t => t.Message(1, tt => tt.Varint(1, 1)
                    .Message(2, s => s.Message(1, d => d.String(2, "batch")).Message(1, d => d.Varint(1, 2)))))))
            .ToArray();
        var model = OnnxModel.Parse(bytes, "tiny.onnx");
        var w = model.Graph.InitializersByName["w"];
        CollectionAssert.AreEqual(new long[] { 2, 3 }, w.Dims.ToArray());
        CollectionAssert.AreEqual(new float[] { 1, 2, 3, 4, 5, -6.5f }, w.ToFloatArray());
        CollectionAssert.AreEqual(new long[] { -1, 12 }, model.Graph.InitializersByName["shape"].ToInt64Array());
        var constant = model.Graph.Nodes[1];
        Assert.AreEqual(-1L, constant.Attributes["axis"].Int);
        Assert.AreEqual(0.25f, constant.Attributes["alpha"].Float);
        CollectionAssert.AreEqual(new long[] { 0, 2, 1, 3 }, constant.Attributes["perm"].Ints.ToArray());
        CollectionAssert.AreEqual(new[] { "batch", "2" }, model.Graph.Inputs[0].Shape.ToArray());
        Assert.AreEqual(17L, model.Opsets[""]);
        Assert.AreEqual("MatMul node 'mm'", model.Graph.Nodes[0].Describe());
    }

    [TestMethod]
    public void MalformedFilesFailWithTheFileNamed()
    {
        byte[] real;
        using (var stream = OnnxMiniLmReference.OpenOnnx()) { real = new byte[4096]; stream.ReadExactly(real); }
        var cases = new (string Name, byte[] Bytes)[]
        {
            ("truncated.onnx", real),                                                  // a length-delimited field runs past the end
            ("empty.onnx", []),
            ("text.onnx", "this is not a protobuf message at all"u8.ToArray()),
            ("varint.onnx", [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), // 11-byte varint
            ("group.onnx", [0x0B, 0x0C]),                                               // deprecated group wire type
            ("nograph.onnx", new ProtoWriter().Varint(1, 7).ToArray()),
            ("badtensor.onnx", new ProtoWriter().Varint(1, 7).Message(7, g => g.Message(5, t => t.Varint(1, 4).Varint(2, 1).String(8, "w").Bytes(9, new byte[12]))).ToArray()),
        };
        foreach (var (name, bytes) in cases)
        {
            var path = Path.Combine(_dir, name);
            File.WriteAllBytes(path, bytes);
            var error = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModel.Load(path), name);
            Console.WriteLine($"{name}: {error.Message}");
            StringAssert.Contains(error.Message, path);
        }
        var missing = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxModel.Load(Path.Combine(_dir, "absent.onnx")));
        StringAssert.Contains(missing.Message, "absent.onnx");
    }
}
