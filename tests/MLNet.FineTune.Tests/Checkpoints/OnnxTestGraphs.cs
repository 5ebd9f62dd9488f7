using System.Text;
using MLNet.FineTune.Checkpoints;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Checkpoints;

/// <summary>Writes the protobuf wire format (test side: builds ONNX files the reader and importer must handle).</summary>
internal sealed class ProtoWriter
{
    private readonly MemoryStream _stream = new();

    public byte[] ToArray() => _stream.ToArray();

    public ProtoWriter Varint(int field, long value) { Tag(field, 0); WriteVarint((ulong)value); return this; }

    public ProtoWriter Fixed32(int field, float value) { Tag(field, 5); _stream.Write(BitConverter.GetBytes(value)); return this; }

    public ProtoWriter Bytes(int field, ReadOnlySpan<byte> bytes) { Tag(field, 2); WriteVarint((ulong)bytes.Length); _stream.Write(bytes); return this; }

    public ProtoWriter String(int field, string text) => Bytes(field, Encoding.UTF8.GetBytes(text));

    public ProtoWriter Message(int field, Action<ProtoWriter> build)
    {
        var inner = new ProtoWriter();
        build(inner);
        return Bytes(field, inner.ToArray());
    }

    public ProtoWriter PackedInt64(int field, IEnumerable<long> values)
    {
        var inner = new ProtoWriter();
        foreach (var v in values) inner.WriteVarint((ulong)v);
        return Bytes(field, inner.ToArray());
    }

    public ProtoWriter PackedFloat(int field, IEnumerable<float> values) =>
        Bytes(field, values.SelectMany(BitConverter.GetBytes).ToArray());

    private void Tag(int field, int wire) => WriteVarint((ulong)(field << 3 | wire));

    private void WriteVarint(ulong value)
    {
        while (value >= 0x80) { _stream.WriteByte((byte)(value | 0x80)); value >>= 7; }
        _stream.WriteByte((byte)value);
    }
}

/// <summary>
/// Builds a BERT ONNX graph the way PyTorch's exporter lays it out (named biases/embeddings/LayerNorms, numbered
/// [in, out] MatMul weights, attention Reshape constants, decomposed LayerNorm with its epsilon, erf GELU, a Gemm
/// pooler) from a Hugging Face state dict, so the importer can be checked against known tensors of any size.
/// </summary>
internal sealed class BertOnnxBuilder
{
    private readonly ProtoWriter _graph = new();
    private int _next = 1000;

    /// <summary>The parameter prefix, e.g. "bert." for a BertFor* export.</summary>
    public string Prefix { get; init; } = "";
    /// <summary>Write the attention Reshape constants (false: the head count is not in the graph).</summary>
    public bool WriteHeadReshape { get; init; } = true;
    /// <summary>A layer's linear whose bias Add is left out (to check the importer's error).</summary>
    public string? DropBiasOf { get; init; }
    /// <summary>Number positions from the attention mask with CumSum, as RoBERTa exports do.</summary>
    public bool RobertaPositions { get; init; }
    /// <summary>A linear written as dynamic quantization writes it: MatMulInteger with an int8 weight and a float scale.</summary>
    public string? QuantizeLinearOf { get; init; }
    /// <summary>Layer 0's query, key and value packed into one [hidden, 3 hidden] weight of an Attention node, as ONNX
    /// Runtime's transformer optimizer fuses them.</summary>
    public bool FuseFirstAttention { get; init; }

    public byte[] Build(IReadOnlyDictionary<string, Tensor> state, int heads, float eps = 1e-12f)
    {
        int hidden = (int)state["embeddings.word_embeddings.weight"].shape[1];
        int layers = state.Keys.Where(k => k.StartsWith("encoder.layer.")).Select(k => int.Parse(k.Split('.')[2])).Max() + 1;

        foreach (var (name, tensor) in state)
            if (!IsLinearWeight(name) || name.StartsWith("pooler.")) Initializer(Prefix + name, tensor);

        Node("Gather", [Prefix + "embeddings.word_embeddings.weight", "input_ids"], "emb");
        if (RobertaPositions) Node("CumSum", ["attention_mask", IntInitializer([1])]);
        string x = LayerNorm("emb", "embeddings.LayerNorm", eps);
        for (int i = 0; i < layers; i++)
        {
            string p = $"encoder.layer.{i}.";
            if (FuseFirstAttention && i == 0)
            {
                var packed = cat([.. new[] { "query", "key", "value" }.Select(m => state[p + $"attention.self.{m}.weight"].t())], 1); // (H, 3H)
                var packedWeight = $"onnx::Attention_{_next++}";
                Initializer(packedWeight, packed);
                var fused = Node("Attention", [x, packedWeight]);
                var fusedOut = LayerNorm(Node("Add", [Linear(fused, state, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm", eps);
                var fusedH = Linear(fusedOut, state, p + "intermediate.dense");
                x = LayerNorm(Node("Add", [Linear(fusedH, state, p + "output.dense"), fusedOut]), p + "output.LayerNorm", eps);
                continue;
            }
            var q = Linear(x, state, p + "attention.self.query");
            var k = Linear(x, state, p + "attention.self.key");
            var v = Linear(x, state, p + "attention.self.value");
            if (WriteHeadReshape)
                foreach (var projection in new[] { q, k, v })
                {
                    // [0, 0, heads, head_dim] through Concat(Unsqueeze(Gather(Shape)), ..., heads, head_dim), as exported
                    var batch = Node("Unsqueeze", [Node("Gather", [Node("Shape", [projection])])]);
                    var shape = Node("Concat", [batch, batch, IntInitializer([heads]), IntInitializer([hidden / heads])]);
                    Node("Reshape", [projection, shape]);
                }
            var context = Node("MatMul", [Node("Softmax", [Node("MatMul", [q, k])]), v]);
            var attention = LayerNorm(Node("Add", [Linear(context, state, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm", eps);
            var h = Linear(attention, state, p + "intermediate.dense");
            var gelu = Node("Mul", [Node("Mul", [h, Node("Add", [Node("Erf", [Node("Div", [h, FloatConstant(1.4142135f)])]), FloatConstant(1f)])]), FloatConstant(0.5f)]);
            x = LayerNorm(Node("Add", [Linear(gelu, state, p + "output.dense"), attention]), p + "output.LayerNorm", eps);
        }
        _graph.Message(12, o => o.String(1, "last_hidden_state"));
        if (state.ContainsKey("pooler.dense.weight"))
        {
            var first = Node("Gather", [x, IntInitializer([0])]);
            Node("Tanh", [Node("Gemm", [first, Prefix + "pooler.dense.weight", Prefix + "pooler.dense.bias"], transB: 1)], "pooler_output");
        }
        _graph.Message(11, o => o.String(1, "input_ids"));

        // ModelProto: ir_version (1), producer (2, 3), opset_import (8), graph (7)
        return new ProtoWriter()
            .Varint(1, 7)
            .String(2, "pytorch").String(3, "test")
            .Message(8, o => o.Varint(2, 13))
            .Bytes(7, _graph.ToArray())
            .ToArray();
    }

    private static bool IsLinearWeight(string name) => name.EndsWith(".weight") && (name.Contains("attention.self.") || name.Contains(".dense."));

    private string Linear(string input, IReadOnlyDictionary<string, Tensor> state, string module)
    {
        if (QuantizeLinearOf == module)
        {
            // int8 weight (in, out) with a per-tensor scale, as onnxruntime's quantize_dynamic writes it.
            var quantized = $"onnx::MatMul_{_next++}_quantized";
            using var w = state[module + ".weight"].t().contiguous();
            using var int8 = (w / w.abs().max() * 127).round().to_type(ScalarType.Int8);
            _graph.Message(5, t =>
            {
                foreach (var d in int8.shape) t.Varint(1, d);
                t.Varint(2, (int)OnnxDataType.Int8).String(8, quantized).Bytes(9, int8.bytes);
            });
            var integer = Node("MatMulInteger", [input, quantized]);
            return Node("Add", [Prefix + module + ".bias", Node("Mul", [Node("Cast", [integer]), FloatConstant(0.01f)])]);
        }
        // The exporter folds weight.T into a numbered initializer: (out, in) -> (in, out).
        var weight = $"onnx::MatMul_{_next++}";
        Initializer(weight, state[module + ".weight"].t().contiguous());
        var product = Node("MatMul", [input, weight]);
        if (DropBiasOf == module) return product;
        return Node("Add", [Prefix + module + ".bias", product]);
    }

    private string LayerNorm(string input, string module, float eps)
    {
        var mean = Node("ReduceMean", [input]);
        var centred = Node("Sub", [input, mean]);
        var variance = Node("ReduceMean", [Node("Pow", [centred, FloatConstant(2f)])]);
        var std = Node("Sqrt", [Node("Add", [variance, FloatConstant(eps)])]);
        return Node("Add", [Node("Mul", [Node("Div", [centred, std]), Prefix + module + ".weight"]), Prefix + module + ".bias"]);
    }

    private string Node(string op, string[] inputs, string? output = null, long? transB = null)
    {
        output ??= (_next++).ToString();
        _graph.Message(1, n =>
        {
            foreach (var i in inputs) n.String(1, i);
            n.String(2, output);
            n.String(3, $"{op}_{_next++}");
            n.String(4, op);
            if (transB is { } t) n.Message(5, a => a.String(1, "transB").Varint(3, t).Varint(20, 2));
        });
        return output;
    }

    private string FloatConstant(float value)
    {
        var output = (_next++).ToString();
        _graph.Message(1, n => n.String(2, output).String(3, $"Constant_{_next++}").String(4, "Constant")
            .Message(5, a => a.String(1, "value").Varint(20, 4).Message(5, t => t.Varint(2, 1).PackedFloat(4, [value]))));
        return output;
    }

    private string IntInitializer(long[] values)
    {
        var name = (_next++).ToString();
        _graph.Message(5, t => t.PackedInt64(1, [values.Length]).Varint(2, 7).String(8, name)
            .Bytes(9, values.SelectMany(BitConverter.GetBytes).ToArray()));
        return name;
    }

    private void Initializer(string name, Tensor tensor)
    {
        using var cpu = tensor.to_type(ScalarType.Float32).contiguous();
        _graph.Message(5, t =>
        {
            foreach (var d in cpu.shape) t.Varint(1, d); // unpacked dims, as some writers emit
            t.Varint(2, (int)OnnxDataType.Float).String(8, name).Bytes(9, cpu.bytes);
        });
    }
}
