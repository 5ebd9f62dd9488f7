using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace MLNet.FineTune.Runtime;

/// <summary>
/// Makes TorchSharp's native libraries load, with no action by the user, on Linux systems whose libstdc++ is older
/// than TorchSharp 0.107's bridge expects (GCC 12: Debian 12, Ubuntu 22.04, RHEL 9).
/// </summary>
/// <remarks>
/// On such a system the library loads a patched copy of libLibTorchSharp.so (see <see cref="LibStdCxxCompatPatch"/>)
/// from a per-user cache folder keyed by the original file's hash, before TorchSharp initialises; TorchSharp then finds
/// the bridge already loaded. Nothing in the NuGet cache or the system is modified. Everywhere else (Windows, macOS,
/// Linux with GCC 13+ libstdc++) it does nothing. An external libtorch found through LD_LIBRARY_PATH keeps working.
/// Set <c>MLNET_FINETUNE_CACHE</c> to choose the cache folder.
/// <para>It also sets <c>OMP_WAIT_POLICY=PASSIVE</c> for libtorch's OpenMP threads when the variable is unset (see
/// <see cref="ThreadWaitPolicy"/>): spinning threads slow training several times on a machine shared with other work.</para>
/// </remarks>
public static class TorchRuntime
{
    private const string BridgeFileName = "libLibTorchSharp.so";
    private static readonly object Gate = new();
    private static bool _done;
    private static string? _patchedBridgePath;

    /// <summary>The patched bridge that was loaded, or null when none was needed.</summary>
    public static string? PatchedBridgePath { get { EnsureLoaded(); return _patchedBridgePath; } }

    /// <summary>The OpenMP wait policy libtorch's threads use, and where it came from: e.g. "PASSIVE (set by
    /// MLNet.FineTune)" or "ACTIVE (from the environment)". Set OMP_WAIT_POLICY before the process starts to choose.</summary>
    public static string ThreadWaitPolicy { get { EnsureLoaded(); return OpenMpWaitPolicy.Description ?? "unknown"; } }

    /// <summary>True when this system's libstdc++ lacks GLIBCXX_3.4.32 and the bridge therefore needs the patch.</summary>
    public static bool SystemNeedsCompatPatch()
    {
        if (!OperatingSystem.IsLinux()) return false;
        if (!NativeLibrary.TryLoad("libstdc++.so.6", out var libstdcxx)) return false;
        return !NativeLibrary.TryGetExport(libstdcxx, LibStdCxxCompatPatch.MissingSymbol, out _);
    }

    /// <summary>
    /// Prepares TorchSharp's native libraries. Idempotent and cheap after the first call; every entry point of this
    /// library calls it, and applications that call TorchSharp directly first may call it themselves.
    /// </summary>
    public static void EnsureLoaded()
    {
        if (_done) return;
        lock (Gate)
        {
            if (_done) return;
            OpenMpWaitPolicy.ApplyDefault(); // before anything can load libtorch's OpenMP
            CheckBackendPresent();
            if (SystemNeedsCompatPatch())
                _patchedBridgePath = LoadPatchedBridge();
            _done = true;
        }
    }

#pragma warning disable CA2255 // a library initialiser is the point: the bridge must be patched before TorchSharp's first call
    [ModuleInitializer]
    internal static void InitializeOnFirstUse()
#pragma warning restore CA2255
    {
        // Runs when any type of this assembly is first touched. Failures surface later, from EnsureLoaded, with context.
        try { EnsureLoaded(); } catch { }
    }

    /// <summary>The native libtorch library's file name on this OS.</summary>
    private static string LibTorchFileName =>
        OperatingSystem.IsWindows() ? "torch_cpu.dll" : OperatingSystem.IsMacOS() ? "libtorch.dylib" : "libtorch.so";

    /// <summary>
    /// An application that references the library (and so TorchSharp's bridge) but no backend package has no libtorch:
    /// say which package to add, instead of the loader's DllNotFoundException naming the bridge (or its patched copy).
    /// </summary>
    private static void CheckBackendPresent()
    {
        if (!OperatingSystem.IsLinux()) return; // TorchSharp's own message names the package on the other systems
        var bridge = FindOriginalBridge();
        if (bridge is null) return;            // no bridge at all: TorchSharp reports it
        if (FindLibTorchBeside(Path.GetDirectoryName(bridge)!) is not null) return;
        // An external libtorch (LD_LIBRARY_PATH, e.g. a PyTorch install) is found by the dynamic linker.
        if (NativeLibrary.TryLoad(LibTorchFileName, out _)) return;
        throw new DllNotFoundException(MissingBackendMessage(bridge));
    }

    /// <summary>libtorch in <paramref name="folder"/> (where a backend package puts it beside the bridge), or null.</summary>
    internal static string? FindLibTorchBeside(string folder)
    {
        var path = Path.Combine(folder, LibTorchFileName);
        return File.Exists(path) ? path : null;
    }

    /// <summary>What a user reads when no TorchSharp backend is installed.</summary>
    internal static string MissingBackendMessage(string bridge) =>
        $"TorchSharp's native backend (libtorch, {LibTorchFileName}) was not found: not beside TorchSharp's bridge {bridge}, " +
        "nor through the system's library search path (LD_LIBRARY_PATH). MLNet.FineTune references TorchSharp alone; " +
        "the application chooses the backend: add one package reference to your project, " +
        "TorchSharp-cpu (any machine), TorchSharp-cuda-linux (NVIDIA GPU, Linux) or TorchSharp-cuda-windows (NVIDIA GPU, Windows), " +
        "in the same version as TorchSharp (docs/runtime.md, \"Backends\").";

    private static string? LoadPatchedBridge()
    {
        var original = FindOriginalBridge();
        if (original is null) return null; // no bridge to patch: TorchSharp will report its own missing-backend error
        var bytes = File.ReadAllBytes(original);
        if (!LibStdCxxCompatPatch.NeedsPatch(bytes)) return null;

        var key = Convert.ToHexString(SHA256.HashData(bytes))[..16].ToLowerInvariant();
        var folder = Path.Combine(CacheRoot(), "torchsharp-compat", key);
        var patched = Path.Combine(folder, BridgeFileName);
        if (!File.Exists(patched))
        {
            var patchedBytes = LibStdCxxCompatPatch.Patch(bytes, original);
            AtomicFile.Write(patched, s => s.Write(patchedBytes)); // concurrent processes never see half a file
        }

        // The bridge finds libtorch through $ORIGIN, which is now the cache folder: load libtorch from the original
        // folder first so the dynamic linker resolves the bridge's needs by soname. With an external libtorch
        // (LD_LIBRARY_PATH) there is none beside the bridge and the linker's own search finds it.
        var libtorch = Path.Combine(Path.GetDirectoryName(original)!, "libtorch.so");
        if (File.Exists(libtorch)) NativeLibrary.Load(libtorch);
        var handle = NativeLibrary.Load(patched);

        // TorchSharp's P/Invokes name "LibTorchSharp": answer with the loaded copy instead of the unpatched file.
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, (name, _, _) =>
                name is "LibTorchSharp" or BridgeFileName ? handle : IntPtr.Zero);
        }
        catch (InvalidOperationException)
        {
            // Someone else set a resolver: the bridge is loaded by soname either way, which TorchSharp also finds.
        }
        return patched;
    }

    private static string? FindOriginalBridge()
    {
        var folders = new List<string>();
        void Add(string? dir)
        {
            if (string.IsNullOrEmpty(dir)) return;
            folders.Add(dir);
            folders.Add(Path.Combine(dir, "runtimes", "linux-x64", "native"));
        }
        Add(AppContext.BaseDirectory);
        Add(Path.GetDirectoryName(typeof(torch).Assembly.Location));
        // The host's native probing folders (the NuGet cache when running from a build output's deps.json).
        if (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") is string probe)
            foreach (var dir in probe.Split(Path.PathSeparator)) Add(dir);
        foreach (var dir in (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':')) Add(dir);
        return folders.Select(dir => Path.Combine(dir, BridgeFileName)).FirstOrDefault(File.Exists);
    }

    private static string CacheRoot()
    {
        var configured = Environment.GetEnvironmentVariable("MLNET_FINETUNE_CACHE");
        if (!string.IsNullOrEmpty(configured)) return configured;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "mlnet-finetune");
    }

    /// <summary>Where the library caches derived files (patched bridge, converted models).</summary>
    internal static string CacheDirectory => CacheRoot();
}
