using System.Runtime.InteropServices;
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
    private readonly List<(string Name, long Length)> _manifest = [];
    private readonly HashSet<string> _names = new(StringComparer.OrdinalIgnoreCase);

    internal ModelPayloadWriter(ModelSaveContext ctx, string loaderSignature)
    {
        _ctx = ctx;
        _loaderSignature = loaderSignature;
    }

    internal IReadOnlyList<(string Name, long Length)> Manifest => _manifest;

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

        long length = 0;
        _ctx.SaveBinaryStream(name, writer =>
        {
            writer.Flush();
            var stream = writer.BaseStream;
            long start = stream.Position;
            write(stream);
            stream.Flush();
            length = stream.Position - start;
        });
        _manifest.Add((name, length));
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
