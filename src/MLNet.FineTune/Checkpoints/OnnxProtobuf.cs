using System.Buffers.Binary;

namespace MLNet.FineTune.Checkpoints;

/// <summary>Protobuf wire types (the low three bits of a field tag).</summary>
internal enum WireType { Varint = 0, Fixed64 = 1, LengthDelimited = 2, StartGroup = 3, EndGroup = 4, Fixed32 = 5 }

/// <summary>
/// A forward-only reader of the protobuf wire format over one message's bytes: just enough to decode ONNX
/// (varints, fixed32/64, length-delimited fields, packed repeated scalars), with bounds checked on every read.
/// Length-delimited fields come back as slices of the original buffer, so tensor data is never copied.
/// </summary>
/// <remarks>Errors are <see cref="InvalidDataException"/>s that name the source file and the absolute byte offset.</remarks>
internal struct ProtoReader
{
    private readonly ReadOnlyMemory<byte> _buffer;
    private readonly long _baseOffset; // where _buffer starts in the file, for error messages
    private readonly string _source;
    private int _position;

    public ProtoReader(ReadOnlyMemory<byte> buffer, string source, long baseOffset = 0)
    {
        _buffer = buffer;
        _source = source;
        _baseOffset = baseOffset;
        _position = 0;
    }

    /// <summary>True while bytes remain in this message.</summary>
    public readonly bool HasMore => _position < _buffer.Length;

    /// <summary>The file offset of the next byte (for nested readers and error messages).</summary>
    public readonly long Offset => _baseOffset + _position;

    /// <summary>Reads a field tag: the field number and its wire type.</summary>
    public (int Field, WireType Wire) ReadTag()
    {
        long at = Offset;
        ulong tag = ReadVarint();
        int field = (int)(tag >> 3);
        var wire = (WireType)(tag & 7);
        if (field <= 0 || tag >> 3 > int.MaxValue) throw Malformed(at, $"invalid field number {tag >> 3}");
        if (wire is not (WireType.Varint or WireType.Fixed64 or WireType.LengthDelimited or WireType.Fixed32))
            throw Malformed(at, $"field {field} has unsupported wire type {(int)wire}");
        return (field, wire);
    }

    /// <summary>Reads a base-128 varint (at most 10 bytes).</summary>
    public ulong ReadVarint()
    {
        var span = _buffer.Span;
        ulong value = 0;
        for (int shift = 0, count = 0; ; shift += 7, count++)
        {
            if (count == 10) throw Malformed(Offset, "a varint is longer than 10 bytes");
            if (_position >= span.Length) throw Malformed(Offset, "the message ends inside a varint");
            byte b = span[_position++];
            value |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return value;
        }
    }

    /// <summary>An int64 field (two's complement in a varint, as protobuf encodes negative int64/int32).</summary>
    public long ReadInt64() => (long)ReadVarint();

    /// <summary>An int32 field; rejects values outside int32's range.</summary>
    public int ReadInt32()
    {
        long at = Offset, value = (long)ReadVarint();
        if (value is < int.MinValue or > int.MaxValue) throw Malformed(at, $"int32 field holds {value}");
        return (int)value;
    }

    public uint ReadFixed32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, "fixed32").Span);

    public ulong ReadFixed64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, "fixed64").Span);

    public float ReadFloat() => BitConverter.Int32BitsToSingle((int)ReadFixed32());

    /// <summary>A length-delimited field's bytes, as a slice of the buffer.</summary>
    public ReadOnlyMemory<byte> ReadBytes() => ReadBytes(out _);

    /// <summary>A length-delimited field's bytes and their file offset.</summary>
    public ReadOnlyMemory<byte> ReadBytes(out long offset)
    {
        long at = Offset;
        ulong length = ReadVarint();
        if (length > (ulong)(_buffer.Length - _position))
            throw Malformed(at, $"a length-delimited field claims {length} bytes but only {_buffer.Length - _position} remain");
        offset = Offset;
        return Take((int)length, "bytes");
    }

    public string ReadString() => System.Text.Encoding.UTF8.GetString(ReadBytes().Span);

    /// <summary>A reader for an embedded message (the next length-delimited field).</summary>
    public ProtoReader ReadMessage()
    {
        var bytes = ReadBytes(out long offset);
        return new ProtoReader(bytes, _source, offset);
    }

    /// <summary>Appends a repeated int64 field, packed or not.</summary>
    public void ReadRepeatedInt64(WireType wire, List<long> into)
    {
        if (wire == WireType.Varint) { into.Add(ReadInt64()); return; }
        Expect(wire, WireType.LengthDelimited, "a repeated int64");
        var packed = ReadMessage();
        while (packed.HasMore) into.Add(packed.ReadInt64());
    }

    /// <summary>Appends a repeated int32 field, packed or not.</summary>
    public void ReadRepeatedInt32(WireType wire, List<int> into)
    {
        if (wire == WireType.Varint) { into.Add(ReadInt32()); return; }
        Expect(wire, WireType.LengthDelimited, "a repeated int32");
        var packed = ReadMessage();
        while (packed.HasMore) into.Add(packed.ReadInt32());
    }

    /// <summary>Appends a repeated float field, packed or not.</summary>
    public void ReadRepeatedFloat(WireType wire, List<float> into)
    {
        if (wire == WireType.Fixed32) { into.Add(ReadFloat()); return; }
        Expect(wire, WireType.LengthDelimited, "a repeated float");
        long at = Offset;
        var bytes = ReadBytes();
        if (bytes.Length % 4 != 0) throw Malformed(at, $"packed floats span {bytes.Length} bytes, not a multiple of 4");
        for (int i = 0; i < bytes.Length; i += 4) into.Add(BinaryPrimitives.ReadSingleLittleEndian(bytes.Span.Slice(i, 4)));
    }

    /// <summary>Appends a repeated double field, packed or not.</summary>
    public void ReadRepeatedDouble(WireType wire, List<double> into)
    {
        if (wire == WireType.Fixed64) { into.Add(BitConverter.Int64BitsToDouble((long)ReadFixed64())); return; }
        Expect(wire, WireType.LengthDelimited, "a repeated double");
        long at = Offset;
        var bytes = ReadBytes();
        if (bytes.Length % 8 != 0) throw Malformed(at, $"packed doubles span {bytes.Length} bytes, not a multiple of 8");
        for (int i = 0; i < bytes.Length; i += 8) into.Add(BinaryPrimitives.ReadDoubleLittleEndian(bytes.Span.Slice(i, 8)));
    }

    /// <summary>Skips a field this reader does not need.</summary>
    public void Skip(WireType wire)
    {
        switch (wire)
        {
            case WireType.Varint: ReadVarint(); break;
            case WireType.Fixed64: Take(8, "fixed64"); break;
            case WireType.Fixed32: Take(4, "fixed32"); break;
            case WireType.LengthDelimited: ReadBytes(); break;
            default: throw Malformed(Offset, $"cannot skip wire type {(int)wire}");
        }
    }

    /// <summary>Throws unless a field arrived with the wire type its schema requires.</summary>
    public readonly void Expect(WireType actual, WireType expected, string what)
    {
        if (actual != expected) throw Malformed(Offset, $"{what} arrived with wire type {(int)actual}, expected {(int)expected}");
    }

    public readonly InvalidDataException Malformed(long offset, string what) =>
        new($"{_source} is not a valid ONNX model: malformed protobuf at byte {offset}: {what}.");

    private ReadOnlyMemory<byte> Take(int count, string what)
    {
        if (count > _buffer.Length - _position)
            throw Malformed(Offset, $"the message ends inside a {what} field ({count} bytes needed, {_buffer.Length - _position} left)");
        var slice = _buffer.Slice(_position, count);
        _position += count;
        return slice;
    }
}
