using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML;

namespace MLNet.FineTune.Persistence;

/// <summary>
/// Adds named payloads to the transformer being saved; obtained from <see cref="ModelZipStorage.Save"/>.
/// Each payload becomes one zip entry holding exactly its bytes.
/// </summary>
internal sealed class ModelPayloadWriter
{
    private readonly ModelSaveContext _ctx;
    private readonly string _loaderSignature;
    private readonly List<(string Name, PayloadEntry Entry)> _manifest = [];
    private readonly HashSet<string> _names = new(StringComparer.OrdinalIgnoreCase);

    internal ModelPayloadWriter(ModelSaveContext ctx, string loaderSignature)
    {
        _ctx = ctx;
        _loaderSignature = loaderSignature;
    }

    internal IReadOnlyList<(string Name, PayloadEntry Entry)> Manifest => _manifest;

    /// <summary>
    /// Adds a payload written by <paramref name="write"/> straight into its zip entry (ML.NET buffers entries in temp
    /// files, so large weights need not fit in memory).
    /// </summary>
    public void Add(string name, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        ModelZipStorage.ValidateName(name, _loaderSignature);
        if (!_names.Add(name))
            throw new ArgumentException($"Payload '{name}' of {_loaderSignature} was added twice (names are compared ignoring case).", nameof(name));

        PayloadEntry? entry = null;
        _ctx.SaveBinaryStream(name, writer =>
        {
            writer.Flush();
            // The hash is taken from the bytes as they are written, so large payloads are not read twice.
            using var hashing = new HashingWriteStream(writer.BaseStream);
            write(hashing);
            hashing.Flush();
            entry = new PayloadEntry(hashing.Length, hashing.GetHash());
        });
        _manifest.Add((name, entry!));
    }

    /// <summary>Adds raw bytes (e.g. a safetensors buffer).</summary>
    public void Add(string name, ReadOnlySpan<byte> bytes)
    {
        // The span cannot be captured by the callback, so copy once into an array.
        byte[] copy = bytes.ToArray();
        Add(name, stream => stream.Write(copy, 0, copy.Length));
    }

    /// <summary>Adds a UTF-8 text payload (no byte order mark).</summary>
    public void AddText(string name, string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Add(name, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(text));
    }

    /// <summary>Adds <paramref name="value"/> as indented JSON (<see cref="ModelZipStorage.JsonOptions"/> unless given).</summary>
    public void AddJson<T>(string name, T value, JsonSerializerOptions? options = null) =>
        Add(name, JsonSerializer.SerializeToUtf8Bytes(value, options ?? ModelZipStorage.JsonOptions));

    /// <summary>Adds an array of unmanaged values as their little-endian bytes (e.g. float32 weights: 4 bytes each).</summary>
    public void AddArray<T>(string name, ReadOnlySpan<T> values) where T : unmanaged
    {
        ModelPayloadReader.EnsureLittleEndian();
        Add(name, MemoryMarshal.AsBytes(values));
    }

    /// <summary>Adds one file's bytes under <paramref name="name"/>, streamed.</summary>
    public void AddFile(string name, string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"Cannot save payload '{name}' of {_loaderSignature}: file not found.", path);
        Add(name, stream =>
        {
            using var source = File.OpenRead(path);
            source.CopyTo(stream);
        });
    }

    /// <summary>
    /// Adds files (e.g. a tokenizer's vocab.txt, tokenizer.json) as <c>prefix/&lt;file name&gt;</c>;
    /// <see cref="ModelPayloadReader.ExtractFiles"/> writes them back into a folder.
    /// </summary>
    public void AddFiles(string prefix, IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        foreach (var path in paths)
            AddFile($"{prefix}/{Path.GetFileName(path)}", path);
    }
}

/// <summary>A write-only stream that forwards to another and computes the SHA-256 and count of what passes.</summary>
internal sealed class HashingWriteStream(Stream inner) : Stream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _length;

    public byte[] GetHash() => _hash.GetCurrentHash();
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => _length;
    public override long Position { get => _length; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        inner.Write(buffer);
        _hash.AppendData(buffer);
        _length += buffer.Length;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose(); // the inner stream belongs to ML.NET
        base.Dispose(disposing);
    }
}
