using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Persistence;

/// <summary>
/// Reads back the payloads a transformer saved; obtained from <see cref="ModelZipStorage.Load"/> and valid only during
/// the loader's <c>Create</c> call (it reads through ML.NET's open repository).
/// </summary>
internal sealed class ModelPayloadReader
{
    private readonly ModelLoadContext _ctx;
    private readonly string _loaderSignature;
    private readonly IReadOnlyDictionary<string, PayloadEntry> _manifest;

    internal ModelPayloadReader(ModelLoadContext ctx, string loaderSignature, IReadOnlyDictionary<string, PayloadEntry> manifest)
    {
        _ctx = ctx;
        _loaderSignature = loaderSignature;
        _manifest = manifest;
    }

    /// <summary>The names of the saved payloads.</summary>
    public IEnumerable<string> Names => _manifest.Keys;

    /// <summary>Whether a payload was saved (for optional parts, e.g. a tokenizer file some models lack).</summary>
    public bool Contains(string name) => _manifest.ContainsKey(name);

    /// <summary>The saved length in bytes of a payload.</summary>
    public long GetLength(string name) => _manifest.TryGetValue(name, out var entry) ? entry.Length : throw Missing(name);

    /// <summary>
    /// Hands <paramref name="read"/> the payload's stream (seekable, positioned at its start, exactly the saved length),
    /// once its SHA-256 matched the manifest's (zips of manifest layout 1 carry no hash: only the length is checked).
    /// </summary>
    public void Read(string name, Action<Stream> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        if (!_manifest.TryGetValue(name, out var entry)) throw Missing(name);
        bool found = _ctx.TryLoadBinaryStream(name, reader =>
        {
            var stream = reader.BaseStream;
            if (stream.Length != entry.Length)
                throw new InvalidDataException($"{Where}: payload '{name}' has {stream.Length} bytes, the manifest says {entry.Length} (truncated or altered zip).");
            if (entry.Sha256 is not null)
            {
                long start = stream.Position;
                if (!SHA256.HashData(stream).AsSpan().SequenceEqual(entry.Sha256))
                    throw new InvalidDataException($"{Where}: payload '{name}' does not match its SHA-256 in the manifest: the zip was damaged or altered after it was saved.");
                stream.Position = start;
            }
            read(stream);
        });
        if (!found)
            throw new InvalidDataException($"{Where}: payload '{name}' is listed in the manifest but its zip entry '{EntryPath(name)}' is missing.");
    }

    /// <summary>Reads a payload into a byte array.</summary>
    public byte[] ReadBytes(string name)
    {
        long length = GetLength(name);
        if (length > Array.MaxLength)
            throw new InvalidDataException($"{Where}: payload '{name}' ({length} bytes) is too large for an array; stream it with {nameof(Read)} or {nameof(ExtractFile)}.");
        var bytes = new byte[length];
        Read(name, stream => stream.ReadExactly(bytes));
        return bytes;
    }

    /// <summary>Reads a UTF-8 text payload.</summary>
    public string ReadText(string name) => Encoding.UTF8.GetString(ReadBytes(name));

    /// <summary>Reads a JSON payload (<see cref="ModelZipStorage.JsonOptions"/> unless given).</summary>
    public T ReadJson<T>(string name, JsonSerializerOptions? options = null)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(ReadBytes(name), options ?? ModelZipStorage.JsonOptions)
                ?? throw new InvalidDataException($"{Where}: payload '{name}' holds JSON null, expected a {typeof(T).Name}.");
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{Where}: payload '{name}' is not a valid {typeof(T).Name}: {ex.Message}", ex);
        }
    }

    /// <summary>Reads an array of unmanaged values saved with <see cref="ModelPayloadWriter.AddArray{T}"/>.</summary>
    public T[] ReadArray<T>(string name) where T : unmanaged
    {
        EnsureLittleEndian();
        int size = Unsafe.SizeOf<T>();
        long length = GetLength(name);
        if (length % size != 0)
            throw new InvalidDataException($"{Where}: payload '{name}' has {length} bytes, not a whole number of {typeof(T).Name} ({size} bytes each).");
        if (length / size > Array.MaxLength)
            throw new InvalidDataException($"{Where}: payload '{name}' ({length} bytes) is too large for an array.");
        var values = new T[length / size];
        Read(name, stream => stream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan())));
        return values;
    }

    /// <summary>Writes a payload to <paramref name="path"/> (atomically: temp file, then moved into place), streamed.</summary>
    public void ExtractFile(string name, string path) =>
        Read(name, source => AtomicFile.Write(path, target => source.CopyTo(target)));

    /// <summary>
    /// Writes every payload saved under <c>prefix/</c> (see <see cref="ModelPayloadWriter.AddFiles"/>) into
    /// <paramref name="directory"/>, keeping the rest of each name as the relative path; returns the written paths.
    /// </summary>
    public IReadOnlyList<string> ExtractFiles(string prefix, string directory)
    {
        string start = prefix.TrimEnd('/') + "/";
        var names = _manifest.Keys.Where(n => n.StartsWith(start, StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        if (names.Count == 0)
            throw new InvalidDataException($"{Where}: no payloads under '{start}'; saved: {string.Join(", ", _manifest.Keys)}.");
        var written = new List<string>(names.Count);
        foreach (var name in names)
        {
            // Names were validated when saved and are checked again here: no rooted paths, no '..'.
            ModelZipStorage.ValidateName(name, _loaderSignature);
            string path = Path.Combine(directory, name[start.Length..].Replace('/', Path.DirectorySeparatorChar));
            ExtractFile(name, path);
            written.Add(path);
        }
        return written;
    }

    internal static void EnsureLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("model.zip payload arrays are little-endian; big-endian platforms are not supported.");
    }

    private string Where => ModelZipStorage.Where(_ctx, _loaderSignature);

    private string EntryPath(string name) => string.IsNullOrEmpty(_ctx.Directory) ? name : $"{_ctx.Directory}/{name}";

    private InvalidDataException Missing(string name) =>
        new($"{Where}: no payload '{name}'; saved: {(_manifest.Count == 0 ? "(none)" : string.Join(", ", _manifest.Keys))}.");
}
