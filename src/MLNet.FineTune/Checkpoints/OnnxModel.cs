using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace MLNet.FineTune.Checkpoints;

// ONNX stores tensor data little-endian; the element conversions below reinterpret bytes in place, which is exact on
// the little-endian hosts .NET runs on (x64, Arm64).

/// <summary>ONNX tensor element types (<c>TensorProto.DataType</c>).</summary>
internal enum OnnxDataType
{
    Undefined = 0, Float = 1, UInt8 = 2, Int8 = 3, UInt16 = 4, Int16 = 5, Int32 = 6, Int64 = 7, String = 8,
    Bool = 9, Float16 = 10, Double = 11, UInt32 = 12, UInt64 = 13, Complex64 = 14, Complex128 = 15, BFloat16 = 16,
}

/// <summary>
/// An ONNX tensor (an initializer or a <c>Constant</c> node's value): name, shape, element type and its
/// little-endian bytes, whether the file stored them as <c>raw_data</c> or as typed repeated fields.
/// </summary>
internal sealed class OnnxTensor
{
    /// <summary>The tensor's name (the graph value it defines).</summary>
    public string Name { get; }

    /// <summary>The shape; empty for a scalar.</summary>
    public IReadOnlyList<long> Dims { get; }

    /// <summary>The element type.</summary>
    public OnnxDataType DataType { get; }

    /// <summary>The elements as little-endian bytes (a slice of the model's buffer when the file used raw_data).</summary>
    public ReadOnlyMemory<byte> Data { get; }

    internal OnnxTensor(string name, IReadOnlyList<long> dims, OnnxDataType dataType, ReadOnlyMemory<byte> data)
    {
        Name = name; Dims = dims; DataType = dataType; Data = data;
    }

    /// <summary>The number of elements (the product of <see cref="Dims"/>).</summary>
    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);

    /// <summary>Bytes per element of a fixed-size type; 0 for strings and undefined.</summary>
    public static int ElementSize(OnnxDataType type) => type switch
    {
        OnnxDataType.Float or OnnxDataType.Int32 or OnnxDataType.UInt32 => 4,
        OnnxDataType.Double or OnnxDataType.Int64 or OnnxDataType.UInt64 or OnnxDataType.Complex64 => 8,
        OnnxDataType.Float16 or OnnxDataType.BFloat16 or OnnxDataType.Int16 or OnnxDataType.UInt16 => 2,
        OnnxDataType.UInt8 or OnnxDataType.Int8 or OnnxDataType.Bool => 1,
        OnnxDataType.Complex128 => 16,
        _ => 0,
    };

    /// <summary>The elements of an integer tensor (Int64, Int32) as longs.</summary>
    /// <exception cref="InvalidDataException">The tensor is not an integer tensor.</exception>
    public long[] ToInt64Array() => DataType switch
    {
        OnnxDataType.Int64 => MemoryMarshal.Cast<byte, long>(Data.Span).ToArray(),
        OnnxDataType.Int32 => MemoryMarshal.Cast<byte, int>(Data.Span).ToArray().Select(v => (long)v).ToArray(),
        _ => throw new InvalidDataException($"ONNX tensor '{Name}' is {DataType}, not an integer tensor."),
    };

    /// <summary>The elements of a floating-point tensor as floats.</summary>
    /// <exception cref="InvalidDataException">The tensor is not a floating-point tensor.</exception>
    public float[] ToFloatArray() => DataType switch
    {
        OnnxDataType.Float => MemoryMarshal.Cast<byte, float>(Data.Span).ToArray(),
        OnnxDataType.Double => MemoryMarshal.Cast<byte, double>(Data.Span).ToArray().Select(v => (float)v).ToArray(),
        OnnxDataType.Float16 => MemoryMarshal.Cast<byte, Half>(Data.Span).ToArray().Select(v => (float)v).ToArray(),
        OnnxDataType.BFloat16 => MemoryMarshal.Cast<byte, ushort>(Data.Span).ToArray().Select(v => BitConverter.Int32BitsToSingle(v << 16)).ToArray(),
        _ => throw new InvalidDataException($"ONNX tensor '{Name}' is {DataType}, not a floating-point tensor."),
    };

    /// <summary>A readable summary, e.g. <c>encoder.layer.0.attention.self.query.bias Float [384]</c>.</summary>
    public override string ToString() => $"{Name} {DataType} [{string.Join(", ", Dims)}]";
}

/// <summary>A node attribute: one of an int, a float, a string, a tensor, or lists of ints/floats.</summary>
/// <param name="Name">The attribute's name (e.g. <c>axis</c>, <c>value</c>, <c>perm</c>).</param>
internal sealed record OnnxAttribute(string Name)
{
    /// <summary>The single int value (<c>i</c>), when set.</summary>
    public long? Int { get; init; }
    /// <summary>The single float value (<c>f</c>), when set.</summary>
    public float? Float { get; init; }
    /// <summary>The string value (<c>s</c>) decoded as UTF-8, when set.</summary>
    public string? String { get; init; }
    /// <summary>The tensor value (<c>t</c>), when set (e.g. a Constant node's <c>value</c>).</summary>
    public OnnxTensor? Tensor { get; init; }
    /// <summary>The list of ints (<c>ints</c>).</summary>
    public IReadOnlyList<long> Ints { get; init; } = [];
    /// <summary>The list of floats (<c>floats</c>).</summary>
    public IReadOnlyList<float> Floats { get; init; } = [];
}

/// <summary>A graph node: an operator applied to named values.</summary>
/// <param name="Name">The node's name (may be empty).</param>
/// <param name="OpType">The operator, e.g. <c>MatMul</c>, <c>Add</c>, <c>Reshape</c>.</param>
/// <param name="Domain">The operator set domain; empty for the default ONNX domain.</param>
/// <param name="Inputs">Input value names, in order; an empty name is an omitted optional input.</param>
/// <param name="Outputs">Output value names, in order.</param>
/// <param name="Attributes">Attributes by name.</param>
internal sealed record OnnxNode(string Name, string OpType, string Domain, IReadOnlyList<string> Inputs,
    IReadOnlyList<string> Outputs, IReadOnlyDictionary<string, OnnxAttribute> Attributes)
{
    /// <summary>The node's name, or a description from its operator and outputs when it has none.</summary>
    public string Describe() => Name.Length > 0 ? $"{OpType} node '{Name}'" : $"{OpType} node producing '{string.Join("', '", Outputs)}'";
}

/// <summary>A graph input or output: name, element type and shape (a dimension is a number or a symbolic name).</summary>
/// <param name="Name">The value's name.</param>
/// <param name="ElementType">Its element type; Undefined when the file does not say.</param>
/// <param name="Shape">Per dimension: the size, or the symbolic name (e.g. <c>batch_size</c>), or null when unknown.</param>
internal sealed record OnnxValueInfo(string Name, OnnxDataType ElementType, IReadOnlyList<string?> Shape);

/// <summary>An ONNX graph: nodes in topological order, initializers (the weights), inputs and outputs.</summary>
internal sealed class OnnxGraph
{
    /// <summary>The graph's name.</summary>
    public string Name { get; }
    /// <summary>The nodes, in the file's (topological) order.</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }
    /// <summary>Initializers in file order.</summary>
    public IReadOnlyList<OnnxTensor> Initializers { get; }
    /// <summary>Initializers by name.</summary>
    public IReadOnlyDictionary<string, OnnxTensor> InitializersByName { get; }
    /// <summary>The graph's inputs (initializers may also be listed here in old exports).</summary>
    public IReadOnlyList<OnnxValueInfo> Inputs { get; }
    /// <summary>The graph's outputs.</summary>
    public IReadOnlyList<OnnxValueInfo> Outputs { get; }

    internal OnnxGraph(string name, IReadOnlyList<OnnxNode> nodes, IReadOnlyList<OnnxTensor> initializers,
        IReadOnlyList<OnnxValueInfo> inputs, IReadOnlyList<OnnxValueInfo> outputs, string source)
    {
        Name = name; Nodes = nodes; Initializers = initializers; Inputs = inputs; Outputs = outputs;
        var byName = new Dictionary<string, OnnxTensor>(StringComparer.Ordinal);
        foreach (var tensor in initializers)
            if (!byName.TryAdd(tensor.Name, tensor))
                throw new InvalidDataException($"{source} is not a valid ONNX model: initializer '{tensor.Name}' is defined twice.");
        InitializersByName = byName;
    }
}

/// <summary>
/// An ONNX model read by the library's own protobuf decoder (no dependency on ONNX Runtime or Google.Protobuf):
/// the IR and opset versions, the producer, and the main graph. Only the fields needed to read weights and walk
/// the graph are decoded; others are skipped. Tensor bytes stay slices of the model's buffer (no copy).
/// </summary>
internal sealed class OnnxModel
{
    /// <summary>The ONNX IR version.</summary>
    public long IrVersion { get; private init; }
    /// <summary>The tool that wrote the file (e.g. <c>pytorch</c>).</summary>
    public string ProducerName { get; private init; } = "";
    /// <summary>The producing tool's version.</summary>
    public string ProducerVersion { get; private init; } = "";
    /// <summary>Operator set versions by domain ("" is the default ONNX domain).</summary>
    public IReadOnlyDictionary<string, long> Opsets { get; private init; } = new Dictionary<string, long>();
    /// <summary>The main graph.</summary>
    public OnnxGraph Graph { get; private init; } = null!;
    /// <summary>Where the model came from (a path or a caller-given name), used in error messages.</summary>
    public string Source { get; private init; } = "";
    /// <summary>The serialized model (tensor data are slices of it).</summary>
    internal ReadOnlyMemory<byte> RawBytes { get; private init; }

    /// <summary>Reads an ONNX file.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a well-formed ONNX model (the message names the file).</exception>
    public static OnnxModel Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"ONNX model not found: {path}", path);
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Reads an ONNX model from a stream (e.g. an embedded resource); <paramref name="sourceName"/> names it in errors.</summary>
    public static OnnxModel Read(Stream stream, string sourceName)
    {
        byte[] bytes;
        if (stream.CanSeek)
        {
            long length = stream.Length - stream.Position;
            if (length > int.MaxValue) throw new InvalidDataException($"{sourceName} is {length} bytes: ONNX files over 2 GB keep their weights as external data, which this reader does not support.");
            bytes = new byte[length];
            stream.ReadExactly(bytes);
        }
        else
        {
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            bytes = copy.ToArray();
        }
        return Parse(bytes, sourceName);
    }

    /// <summary>Decodes a model from its serialized bytes; <paramref name="sourceName"/> names it in errors.</summary>
    public static OnnxModel Parse(ReadOnlyMemory<byte> bytes, string sourceName)
    {
        if (bytes.Length == 0) throw new InvalidDataException($"{sourceName} is not a valid ONNX model: the file is empty.");
        var reader = new ProtoReader(bytes, sourceName);
        long irVersion = 0;
        string producer = "", producerVersion = "";
        var opsets = new Dictionary<string, long>();
        OnnxGraph? graph = null;
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            switch (field)
            {
                case 1: reader.Expect(wire, WireType.Varint, "ModelProto.ir_version"); irVersion = reader.ReadInt64(); break;
                case 2: reader.Expect(wire, WireType.LengthDelimited, "ModelProto.producer_name"); producer = reader.ReadString(); break;
                case 3: reader.Expect(wire, WireType.LengthDelimited, "ModelProto.producer_version"); producerVersion = reader.ReadString(); break;
                case 7: reader.Expect(wire, WireType.LengthDelimited, "ModelProto.graph"); graph = ReadGraph(reader.ReadMessage(), sourceName); break;
                case 8:
                    reader.Expect(wire, WireType.LengthDelimited, "ModelProto.opset_import");
                    var (domain, version) = ReadOpset(reader.ReadMessage());
                    opsets[domain] = version;
                    break;
                default: reader.Skip(wire); break;
            }
        }
        if (graph is null) throw new InvalidDataException($"{sourceName} is not a valid ONNX model: it has no graph (ModelProto field 7).");
        if (irVersion <= 0) throw new InvalidDataException($"{sourceName} is not a valid ONNX model: it has no ir_version.");
        return new OnnxModel
        {
            IrVersion = irVersion, ProducerName = producer, ProducerVersion = producerVersion,
            Opsets = opsets, Graph = graph, Source = sourceName, RawBytes = bytes,
        };
    }

    private static (string Domain, long Version) ReadOpset(ProtoReader reader)
    {
        string domain = "";
        long version = 0;
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            if (field == 1 && wire == WireType.LengthDelimited) domain = reader.ReadString();
            else if (field == 2 && wire == WireType.Varint) version = reader.ReadInt64();
            else reader.Skip(wire);
        }
        return (domain, version);
    }

    private static OnnxGraph ReadGraph(ProtoReader reader, string source)
    {
        string name = "";
        var nodes = new List<OnnxNode>();
        var initializers = new List<OnnxTensor>();
        var inputs = new List<OnnxValueInfo>();
        var outputs = new List<OnnxValueInfo>();
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            if (wire != WireType.LengthDelimited && field is 1 or 2 or 5 or 11 or 12)
                reader.Expect(wire, WireType.LengthDelimited, $"GraphProto field {field}");
            switch (field)
            {
                case 1: nodes.Add(ReadNode(reader.ReadMessage(), source)); break;
                case 2: name = reader.ReadString(); break;
                case 5: initializers.Add(ReadTensor(reader.ReadMessage(), source)); break;
                case 11: inputs.Add(ReadValueInfo(reader.ReadMessage())); break;
                case 12: outputs.Add(ReadValueInfo(reader.ReadMessage())); break;
                case 15: throw new InvalidDataException($"{source}: sparse initializers are not supported.");
                default: reader.Skip(wire); break;
            }
        }
        return new OnnxGraph(name, nodes, initializers, inputs, outputs, source);
    }

    private static OnnxNode ReadNode(ProtoReader reader, string source)
    {
        string name = "", opType = "", domain = "";
        var inputs = new List<string>();
        var outputs = new List<string>();
        var attributes = new Dictionary<string, OnnxAttribute>(StringComparer.Ordinal);
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            if (field is 1 or 2 or 3 or 4 or 5 or 7) reader.Expect(wire, WireType.LengthDelimited, $"NodeProto field {field}");
            switch (field)
            {
                case 1: inputs.Add(reader.ReadString()); break;
                case 2: outputs.Add(reader.ReadString()); break;
                case 3: name = reader.ReadString(); break;
                case 4: opType = reader.ReadString(); break;
                case 5: var attribute = ReadAttribute(reader.ReadMessage(), source); attributes[attribute.Name] = attribute; break;
                case 7: domain = reader.ReadString(); break;
                default: reader.Skip(wire); break;
            }
        }
        if (opType.Length == 0)
            throw new InvalidDataException($"{source} is not a valid ONNX model: node '{name}' (outputs '{string.Join("', '", outputs)}') has no op_type.");
        if (outputs.Count == 0)
            throw new InvalidDataException($"{source} is not a valid ONNX model: {opType} node '{name}' has no outputs.");
        return new OnnxNode(name, opType, domain, inputs, outputs, attributes);
    }

    private static OnnxAttribute ReadAttribute(ProtoReader reader, string source)
    {
        string name = "";
        long? i = null;
        float? f = null;
        string? s = null;
        OnnxTensor? t = null;
        var ints = new List<long>();
        var floats = new List<float>();
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            switch (field)
            {
                case 1: reader.Expect(wire, WireType.LengthDelimited, "AttributeProto.name"); name = reader.ReadString(); break;
                case 2: reader.Expect(wire, WireType.Fixed32, "AttributeProto.f"); f = reader.ReadFloat(); break;
                case 3: reader.Expect(wire, WireType.Varint, "AttributeProto.i"); i = reader.ReadInt64(); break;
                case 4: reader.Expect(wire, WireType.LengthDelimited, "AttributeProto.s"); s = reader.ReadString(); break;
                case 5: reader.Expect(wire, WireType.LengthDelimited, "AttributeProto.t"); t = ReadTensor(reader.ReadMessage(), source); break;
                case 7: reader.ReadRepeatedFloat(wire, floats); break;
                case 8: reader.ReadRepeatedInt64(wire, ints); break;
                default: reader.Skip(wire); break;
            }
        }
        return new OnnxAttribute(name) { Int = i, Float = f, String = s, Tensor = t, Ints = ints, Floats = floats };
    }

    private static OnnxValueInfo ReadValueInfo(ProtoReader reader)
    {
        string name = "";
        var elementType = OnnxDataType.Undefined;
        var shape = new List<string?>();
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            if (field == 1 && wire == WireType.LengthDelimited) name = reader.ReadString();
            else if (field == 2 && wire == WireType.LengthDelimited)
            {
                // TypeProto.tensor_type (1) -> Tensor { elem_type (1), shape (2) -> TensorShapeProto { dim (1) } }
                var type = reader.ReadMessage();
                while (type.HasMore)
                {
                    var (typeField, typeWire) = type.ReadTag();
                    if (typeField != 1 || typeWire != WireType.LengthDelimited) { type.Skip(typeWire); continue; }
                    var tensorType = type.ReadMessage();
                    while (tensorType.HasMore)
                    {
                        var (tf, tw) = tensorType.ReadTag();
                        if (tf == 1 && tw == WireType.Varint) elementType = (OnnxDataType)tensorType.ReadInt32();
                        else if (tf == 2 && tw == WireType.LengthDelimited) ReadShape(tensorType.ReadMessage(), shape);
                        else tensorType.Skip(tw);
                    }
                }
            }
            else reader.Skip(wire);
        }
        return new OnnxValueInfo(name, elementType, shape);
    }

    private static void ReadShape(ProtoReader reader, List<string?> shape)
    {
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            if (field != 1 || wire != WireType.LengthDelimited) { reader.Skip(wire); continue; }
            var dim = reader.ReadMessage();
            string? value = null;
            while (dim.HasMore)
            {
                var (df, dw) = dim.ReadTag();
                if (df == 1 && dw == WireType.Varint) value = dim.ReadInt64().ToString(System.Globalization.CultureInfo.InvariantCulture);
                else if (df == 2 && dw == WireType.LengthDelimited) value = dim.ReadString();
                else dim.Skip(dw);
            }
            shape.Add(value);
        }
    }

    private static OnnxTensor ReadTensor(ProtoReader reader, string source)
    {
        long start = reader.Offset;
        string name = "";
        var dims = new List<long>();
        var dataType = OnnxDataType.Undefined;
        ReadOnlyMemory<byte>? raw = null;
        var floats = new List<float>();
        var int32s = new List<int>();
        var int64s = new List<long>();
        var doubles = new List<double>();
        bool external = false;
        while (reader.HasMore)
        {
            var (field, wire) = reader.ReadTag();
            switch (field)
            {
                case 1: reader.ReadRepeatedInt64(wire, dims); break;
                case 2: reader.Expect(wire, WireType.Varint, "TensorProto.data_type"); dataType = (OnnxDataType)reader.ReadInt32(); break;
                case 4: reader.ReadRepeatedFloat(wire, floats); break;
                case 5: reader.ReadRepeatedInt32(wire, int32s); break;
                case 7: reader.ReadRepeatedInt64(wire, int64s); break;
                case 8: reader.Expect(wire, WireType.LengthDelimited, "TensorProto.name"); name = reader.ReadString(); break;
                case 9: reader.Expect(wire, WireType.LengthDelimited, "TensorProto.raw_data"); raw = reader.ReadBytes(); break;
                case 10: reader.ReadRepeatedDouble(wire, doubles); break;
                case 14: reader.Expect(wire, WireType.Varint, "TensorProto.data_location"); external = reader.ReadInt64() == 1; break;
                default: reader.Skip(wire); break;
            }
        }
        string what = name.Length > 0 ? $"tensor '{name}'" : $"the unnamed tensor at byte {start}";
        if (external)
            throw new InvalidDataException($"{source}: {what} keeps its data in an external file, which this reader does not support; save the model with its weights inside the .onnx file.");
        if (dims.Any(d => d < 0)) throw new InvalidDataException($"{source} is not a valid ONNX model: {what} has a negative dimension [{string.Join(", ", dims)}].");
        int size = OnnxTensor.ElementSize(dataType);
        if (size == 0) // strings and unknown types carry no weights: keep the shape, no data
            return new OnnxTensor(name, dims, dataType, ReadOnlyMemory<byte>.Empty);

        long count = dims.Aggregate(1L, (a, b) => a * b);
        ReadOnlyMemory<byte> data = raw ?? TypedFieldBytes(dataType, floats, int32s, int64s, doubles);
        if (data.Length != count * size)
            throw new InvalidDataException($"{source} is not a valid ONNX model: {what} ({dataType} [{string.Join(", ", dims)}]) holds {data.Length} bytes of data, expected {count * size}.");
        return new OnnxTensor(name, dims, dataType, data);
    }

    // The typed repeated fields, re-encoded as the little-endian bytes raw_data would have held.
    private static byte[] TypedFieldBytes(OnnxDataType type, List<float> floats, List<int> int32s, List<long> int64s, List<double> doubles)
    {
        int size = OnnxTensor.ElementSize(type);
        switch (type)
        {
            case OnnxDataType.Float:
                return MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(floats)).ToArray();
            case OnnxDataType.Double:
                return MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(doubles)).ToArray();
            case OnnxDataType.Int64:
                return MemoryMarshal.AsBytes(CollectionsMarshal.AsSpan(int64s)).ToArray();
            case OnnxDataType.UInt32 or OnnxDataType.UInt64: // uint64_data (field 11) is not decoded: such tensors carry no weights
                return [];
            default:
                // int32_data holds every narrower type (int8..int32, bool, float16/bfloat16 as their bit patterns).
                var bytes = new byte[int32s.Count * size];
                for (int i = 0; i < int32s.Count; i++)
                {
                    var slot = bytes.AsSpan(i * size, size);
                    switch (size)
                    {
                        case 4: BinaryPrimitives.WriteInt32LittleEndian(slot, int32s[i]); break;
                        case 2: BinaryPrimitives.WriteUInt16LittleEndian(slot, (ushort)int32s[i]); break;
                        case 1: slot[0] = (byte)int32s[i]; break;
                    }
                }
                return bytes;
        }
    }
}
