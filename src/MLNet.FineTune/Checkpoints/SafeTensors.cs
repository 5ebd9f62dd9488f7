using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Checkpoints;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The state-dict key.</param>
/// <param name="DType">The stored element type (F32, F16, BF16, ...).</param>
/// <param name="Shape">The tensor's shape.</param>
/// <param name="DataOffset">Start of the bytes, counted from the end of the header.</param>
/// <param name="ByteLength">Number of bytes.</param>
internal sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long DataOffset, long ByteLength);

/// <summary>
/// Reads and writes the safetensors format (an 8-byte little-endian header length, a JSON header, raw little-endian
/// data). No pickle is ever executed: this is the only weight format the library reads.
/// </summary>
internal static class SafeTensors
{
    private static readonly Dictionary<string, ScalarType> ByName = new()
    {
        ["F64"] = ScalarType.Float64, ["F32"] = ScalarType.Float32, ["F16"] = ScalarType.Float16,
        ["BF16"] = ScalarType.BFloat16, ["I64"] = ScalarType.Int64, ["I32"] = ScalarType.Int32,
        ["I16"] = ScalarType.Int16, ["I8"] = ScalarType.Int8, ["U8"] = ScalarType.Byte, ["BOOL"] = ScalarType.Bool,
    };

    /// <summary>The safetensors name of a TorchSharp element type.</summary>
    public static string DTypeName(ScalarType type) =>
        ByName.FirstOrDefault(p => p.Value == type).Key ?? throw new NotSupportedException($"safetensors cannot store {type}.");

    /// <summary>Reads a file's header: tensor entries and the optional string metadata.</summary>
    public static (IReadOnlyList<SafeTensorEntry> Entries, IReadOnlyDictionary<string, string> Metadata, long DataStart) ReadHeader(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file not found: {path}", path);
        using var stream = File.OpenRead(path);
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.Read(lengthBytes) != 8) throw Corrupt(path, "the file is shorter than its 8-byte header length");
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > 100_000_000 || (long)headerLength > stream.Length - 8)
            throw Corrupt(path, $"the header length {headerLength} does not fit the file ({stream.Length} bytes)");
        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);

        JsonObject header;
        try { header = JsonNode.Parse(headerBytes)?.AsObject() ?? throw Corrupt(path, "the header is not a JSON object"); }
        catch (JsonException e) { throw Corrupt(path, "the header is not valid JSON: " + e.Message); }

        long dataStart = 8 + (long)headerLength, dataLength = stream.Length - dataStart;
        var entries = new List<SafeTensorEntry>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                foreach (var (k, v) in node!.AsObject()) metadata[k] = v?.GetValue<string>() ?? "";
                continue;
            }
            try
            {
                var dtype = node!["dtype"]!.GetValue<string>();
                var shape = node["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var offsets = node["data_offsets"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                if (!ByName.TryGetValue(dtype, out var scalar)) throw Corrupt(path, $"tensor '{name}' has unsupported dtype {dtype}");
                long expected = shape.Aggregate(1L, (a, b) => a * b) * ElementSize(scalar);
                if (offsets.Length != 2 || offsets[1] - offsets[0] != expected || offsets[0] < 0 || offsets[1] > dataLength)
                    throw Corrupt(path, $"tensor '{name}' ({dtype} [{string.Join(", ", shape)}]) has data offsets [{string.Join(", ", offsets)}] that do not match its size {expected} or the file");
                entries.Add(new SafeTensorEntry(name, dtype, shape, offsets[0], offsets[1] - offsets[0]));
            }
            catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
            {
                throw Corrupt(path, $"tensor '{name}' has a malformed header entry");
            }
        }
        return (entries, metadata, dataStart);
    }

    /// <summary>Loads every tensor (or those <paramref name="include"/> accepts) onto the CPU.</summary>
    /// <param name="path">The .safetensors file.</param>
    /// <param name="dtype">Floating-point tensors are converted to this type; null keeps the stored type.</param>
    /// <param name="include">Which names to load; null loads all.</param>
    public static Dictionary<string, Tensor> Load(string path, ScalarType? dtype = null, Func<string, bool>? include = null)
    {
        TorchRuntime.EnsureLoaded();
        var (entries, _, dataStart) = ReadHeader(path);
        var result = new Dictionary<string, Tensor>();
        using var stream = File.OpenRead(path);
        foreach (var entry in entries)
        {
            if (include is not null && !include(entry.Name)) continue;
            var bytes = new byte[entry.ByteLength];
            stream.Position = dataStart + entry.DataOffset;
            stream.ReadExactly(bytes);
            var stored = ByName[entry.DType];
            var tensor = empty(entry.Shape, stored);
            if (bytes.Length > 0) tensor.bytes = bytes;
            if (dtype is { } target && target != stored && is_floating_point(stored))
            {
                var converted = tensor.to_type(target);
                tensor.Dispose();
                tensor = converted;
            }
            result[entry.Name] = tensor;
        }
        return result;
    }

    /// <summary>Writes tensors (any device, contiguous or not) to a safetensors file, atomically.</summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        TorchRuntime.EnsureLoaded();
        // Serialise first: an unsupported dtype fails before anything on disk is replaced.
        var (headerBytes, payloads) = Serialize(tensors, metadata);
        AtomicFile.Write(path, stream => WriteParts(stream, headerBytes, payloads));
    }

    /// <summary>Writes tensors in safetensors layout to a stream (e.g. a model.zip entry).</summary>
    public static void Write(Stream stream, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        TorchRuntime.EnsureLoaded();
        var (headerBytes, payloads) = Serialize(tensors, metadata);
        WriteParts(stream, headerBytes, payloads);
    }

    private static (byte[] Header, List<byte[]> Payloads) Serialize(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = tensors.Keys.OrderBy(n => n, StringComparer.Ordinal).ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
            header["__metadata__"] = new JsonObject(metadata.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value))));
        long offset = 0;
        var payloads = new List<byte[]>();
        foreach (var name in names)
        {
            using var cpu = tensors[name].detach().cpu().contiguous();
            var bytes = cpu.NumberOfElements == 0 ? [] : cpu.bytes.ToArray();
            header[name] = new JsonObject
            {
                ["dtype"] = DTypeName(cpu.dtype),
                ["shape"] = new JsonArray(cpu.shape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["data_offsets"] = new JsonArray(JsonValue.Create(offset), JsonValue.Create(offset + bytes.Length)),
            };
            offset += bytes.Length;
            payloads.Add(bytes);
        }
        // Pad the header with spaces so the data starts 8-byte aligned, as the reference writer does.
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var headerBytes = new byte[(json.Length + 7) / 8 * 8];
        json.CopyTo(headerBytes, 0);
        headerBytes.AsSpan(json.Length).Fill((byte)' ');
        return (headerBytes, payloads);
    }

    private static void WriteParts(Stream stream, byte[] headerBytes, List<byte[]> payloads)
    {
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)headerBytes.Length);
        stream.Write(length);
        stream.Write(headerBytes);
        foreach (var payload in payloads) stream.Write(payload);
    }

    private static int ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        _ => 1,
    };

    private static InvalidDataException Corrupt(string path, string what) => new($"Corrupt safetensors file {path}: {what}.");
}
