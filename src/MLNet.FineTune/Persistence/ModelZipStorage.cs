using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML;

namespace MLNet.FineTune.Persistence;

/// <summary>
/// Saves a transformer's state into model.zip as named binary payloads, and reads it back in the loader, so each
/// transformer's persistence code stays a few lines. Builds on ML.NET's internal <see cref="ModelSaveContext"/> /
/// <see cref="ModelLoadContext"/> (compiled against publicized references: docs/persistence.md).
/// </summary>
/// <remarks>
/// <para>Layout inside the transformer's directory of the zip (e.g. <c>TransformerChain/</c>):</para>
/// <list type="bullet">
/// <item><c>Model.key</c>: ML.NET's header (model signature, versions, loader signature and assembly), then our
/// manifest: <c>int32</c> layout version (<see cref="LayoutVersion"/>), <c>int32</c> payload count, and per payload
/// its name (<see cref="BinaryWriter.Write(string)"/>: 7-bit length prefix, UTF-8) and its <c>int64</c> byte length.</item>
/// <item>one zip entry per payload, named by the payload, holding exactly the payload's bytes (no framing), so
/// <c>adapter.safetensors</c> in the zip is a valid safetensors file.</item>
/// </list>
/// <para>Usage (as the task transformers do it, through <c>FineTunedTransformer</c>, which implements
/// <see cref="ICanSaveModel"/>): each transformer declares its version info and its ML.NET loader, and the shared
/// base writes the payloads.</para>
/// <code>
/// private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
///     modelSignature: "MLFTTXCL", loaderSignature: LoaderSignature,
///     currentVersion: 0x00010001, readableByVersion: 0x00010001, readsBackToVersion: 0x00010001,
///     loaderType: typeof(TextClassificationTransformer));
///
/// void ICanSaveModel.Save(ModelSaveContext ctx) => ModelZipStorage.Save(ctx, SavedVersion, payloads =>
/// {
///     payloads.AddJson("settings.json", settings, ModelZipStorage.JsonOptions);
///     adapted.Save(payloads, storage);     // base config, tokenizer, adapter config, weights (AdaptedModelZip)
/// });
///
/// private static TextClassificationTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
/// {
///     var payloads = ModelZipStorage.Load(ctx, GetVersionInfo());
///     var settings = payloads.ReadJson&lt;Settings&gt;("settings.json", ModelZipStorage.JsonOptions);
///     ...
/// }
/// </code>
/// </remarks>
internal static class ModelZipStorage
{
    /// <summary>Version of the manifest layout written after ML.NET's header; independent of each transformer's version.</summary>
    public const int LayoutVersion = 1;

    /// <summary>The main stream ML.NET writes for every component; no payload may take its name.</summary>
    internal const string MainStreamName = "Model.key";

    /// <summary>The JSON settings for option blobs: readable in the zip, enums by name so renumbering cannot corrupt them.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
    };

    /// <summary>
    /// Builds the <see cref="VersionInfo"/> of one of our transformers, checking the conventions
    /// (docs/persistence.md: "Version info") with errors that name the offending value.
    /// </summary>
    /// <param name="modelSignature">Exactly 8 ASCII characters, starting with "MLFT", unique per transformer type (e.g. "MLFTTXCL").</param>
    /// <param name="loaderSignature">At most 24 ASCII characters, starting with "MLFT", unique in the process (it keys ML.NET's component catalog); the same string as in the type's <c>[assembly: LoadableClass]</c> attributes.</param>
    /// <param name="currentVersion">The format this code writes (0x00010001, then +1 per format change).</param>
    /// <param name="readableByVersion">The oldest reader code able to read what this code writes.</param>
    /// <param name="readsBackToVersion">The oldest format this code still reads.</param>
    /// <param name="loaderType">The type whose static <c>Create</c> loads the payloads; its assembly is recorded so ML.NET can find the loader.</param>
    public static VersionInfo CreateVersionInfo(string modelSignature, string loaderSignature,
        uint currentVersion, uint readableByVersion, uint readsBackToVersion, Type loaderType)
    {
        ArgumentNullException.ThrowIfNull(loaderType);
        if (modelSignature is null || modelSignature.Length != 8 || !modelSignature.StartsWith("MLFT", StringComparison.Ordinal) || !IsAsciiAlphanumeric(modelSignature))
            throw new ArgumentException($"Model signature '{modelSignature}' of {loaderType.Name} must be 8 ASCII letters or digits starting with \"MLFT\".", nameof(modelSignature));
        if (loaderSignature is null || loaderSignature.Length is 0 or > 24 || !loaderSignature.StartsWith("MLFT", StringComparison.Ordinal) || !IsAsciiAlphanumeric(loaderSignature))
            throw new ArgumentException($"Loader signature '{loaderSignature}' of {loaderType.Name} must be at most 24 ASCII letters or digits starting with \"MLFT\".", nameof(loaderSignature));
        if (readsBackToVersion > currentVersion || readableByVersion > currentVersion)
            throw new ArgumentException($"Versions of {loaderSignature}: readableBy 0x{readableByVersion:X8} and readsBackTo 0x{readsBackToVersion:X8} must not exceed current 0x{currentVersion:X8}.");

        // Named arguments: ML.NET's constructor takes the loader assembly before the loader signature, both strings.
        return new VersionInfo(
            modelSignature: modelSignature,
            verWrittenCur: currentVersion,
            verReadableCur: readableByVersion,
            verWeCanReadBack: readsBackToVersion,
            loaderAssemblyName: loaderType.Assembly.FullName,
            loaderSignature: loaderSignature);
    }

    /// <summary>
    /// Writes a transformer: the version header, then whatever <paramref name="writePayloads"/> adds, then the manifest.
    /// Call it from <c>SaveModel(ModelSaveContext)</c>; ML.NET finishes the context afterwards.
    /// </summary>
    public static void Save(ModelSaveContext ctx, VersionInfo version, Action<ModelPayloadWriter> writePayloads)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ArgumentNullException.ThrowIfNull(writePayloads);
        if (!ctx.InRepository)
            throw new InvalidOperationException($"{version.LoaderSignature} can only be saved into a model repository (mlContext.Model.Save), not a single stream.");

        ctx.CheckAtModel();
        ctx.SetVersionInfo(version);
        var writer = new ModelPayloadWriter(ctx, version.LoaderSignature);
        writePayloads(writer);

        var manifest = writer.Manifest;
        ctx.Writer.Write(LayoutVersion);
        ctx.Writer.Write(manifest.Count);
        foreach (var (name, length) in manifest)
        {
            ctx.Writer.Write(name);
            ctx.Writer.Write(length);
        }
    }

    /// <summary>
    /// Starts loading a transformer: checks its version (with an error naming this library, not ML.NET) and reads
    /// the manifest. The returned reader is valid only during the loader's <c>Create</c> call.
    /// </summary>
    public static ModelPayloadReader Load(ModelLoadContext ctx, VersionInfo version)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        if (!ctx.InRepository)
            throw new InvalidOperationException($"{version.LoaderSignature} can only be loaded from a model repository (mlContext.Model.Load), not a single stream.");

        CheckVersion(ctx, version);
        ctx.CheckAtModel(version);

        var reader = ctx.Reader;
        int layout = reader.ReadInt32();
        if (layout != LayoutVersion)
            throw new InvalidDataException($"{Where(ctx, version)}: payload manifest layout {layout} is not the supported {LayoutVersion}.");
        int count = reader.ReadInt32();
        if (count < 0)
            throw new InvalidDataException($"{Where(ctx, version)}: corrupt payload manifest (count {count}).");
        var manifest = new Dictionary<string, long>(count, StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
        {
            string name = reader.ReadString();
            long length = reader.ReadInt64();
            if (length < 0 || !manifest.TryAdd(name, length))
                throw new InvalidDataException($"{Where(ctx, version)}: corrupt payload manifest entry '{name}' (length {length}).");
        }
        return new ModelPayloadReader(ctx, version.LoaderSignature, manifest);
    }

    // ML.NET's own message would blame "ML.NET 5.0" for our format; say which component and versions are involved.
    private static void CheckVersion(ModelLoadContext ctx, VersionInfo version)
    {
        var header = ctx.Header;
        if (header.ModelSignature != version.ModelSignature)
            throw new InvalidDataException($"{Where(ctx, version)}: the stored component is not a {version.LoaderSignature} (model signature mismatch).");
        if (header.ModelVerReadable > version.VerWrittenCur)
            throw new InvalidDataException($"{Where(ctx, version)} was written by a newer MLNet.FineTune (format 0x{header.ModelVerWritten:X8}, needs a reader of at least 0x{header.ModelVerReadable:X8}); this build reads up to 0x{version.VerWrittenCur:X8}. Upgrade MLNet.FineTune.");
        if (header.ModelVerWritten < version.VerWeCanReadBack)
            throw new InvalidDataException($"{Where(ctx, version)} was written by an older MLNet.FineTune (format 0x{header.ModelVerWritten:X8}); this build reads formats from 0x{version.VerWeCanReadBack:X8}. Re-train or re-save it with an older release.");
    }

    internal static string Where(ModelLoadContext ctx, VersionInfo version) => Where(ctx, version.LoaderSignature);

    internal static string Where(ModelLoadContext ctx, string loaderSignature) =>
        $"model.zip component '{ctx.Directory}' ({loaderSignature})";

    /// <summary>
    /// Payload names are relative zip entry paths: segments of ASCII letters, digits, '.', '_', '-' joined by '/'.
    /// ML.NET maps entries case-insensitively when extracting, so names must differ by more than case.
    /// </summary>
    internal static void ValidateName(string name, string loaderSignature)
    {
        static bool IsNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-';
        bool valid = !string.IsNullOrEmpty(name) && name.Length <= 200
            && name.Split('/').All(segment => segment.Length > 0 && segment != "." && segment != ".." && segment.All(IsNameChar))
            && !string.Equals(name, MainStreamName, StringComparison.OrdinalIgnoreCase);
        if (!valid)
            throw new ArgumentException($"Payload name '{name}' of {loaderSignature} is not allowed: use '/'-separated segments of ASCII letters, digits, '.', '_' or '-' (not '{MainStreamName}', no '..').", nameof(name));
    }

    private static bool IsAsciiAlphanumeric(string s) => s.All(char.IsAsciiLetterOrDigit);
}
