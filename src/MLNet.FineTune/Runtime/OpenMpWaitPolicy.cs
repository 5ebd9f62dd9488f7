using System.Runtime.InteropServices;

namespace MLNet.FineTune.Runtime;

/// <summary>
/// Makes libtorch's OpenMP threads sleep, instead of spin, while they wait for work, unless the user chose otherwise.
/// </summary>
/// <remarks>
/// libtorch's OpenMP (libgomp on Linux) reads <c>OMP_WAIT_POLICY</c> once, when it loads. With its default policy
/// waiting threads spin; on a machine shared with other processes (or with ML.NET's own threads) the spinning threads
/// take the time slices the working ones need: a LoRA training step measured 3-9x slower and a 1 ms optimizer step
/// took 84 ms (docs/performance.md). With PASSIVE the forward benchmark on an idle machine was unchanged within noise.
/// The variable must be in the native environment before libtorch loads: .NET's
/// <see cref="Environment.SetEnvironmentVariable(string, string)"/> does not reach the C library's copy on Unix, so
/// libc's <c>setenv</c> is called. A value the user set (ACTIVE, PASSIVE) is kept; an empty value keeps OpenMP's own default.
/// </remarks>
internal static class OpenMpWaitPolicy
{
    internal const string VariableName = "OMP_WAIT_POLICY";
    internal const string LibraryDefault = "PASSIVE";

    /// <summary>What libtorch will see, and whether this library set it; null before <see cref="ApplyDefault"/>.</summary>
    internal static string? Description { get; private set; }

    /// <summary>Sets OMP_WAIT_POLICY=PASSIVE in the native environment when it is unset. Call before libtorch loads.</summary>
    internal static void ApplyDefault()
    {
        var current = ReadNative();
        if (current is not null)
        {
            // Set but empty: the user asks for OpenMP's own default (spin a while, then sleep).
            Description = current.Length == 0 ? "OpenMP's default (OMP_WAIT_POLICY is empty)" : $"{current} (from the environment)";
            return;
        }
        if (OperatingSystem.IsWindows())
            Environment.SetEnvironmentVariable(VariableName, LibraryDefault); // the process block, which GetEnvironmentVariableW reads
        else if (setenv(VariableName, LibraryDefault, overwrite: 0) != 0)
        {
            Description = "unset (setenv failed; OpenMP keeps its default)";
            return;
        }
        Description = $"{LibraryDefault} (set by MLNet.FineTune)";
    }

    /// <summary>The value in the C library's environment (what OpenMP reads), or null.</summary>
    internal static string? ReadNative()
    {
        if (OperatingSystem.IsWindows()) return Environment.GetEnvironmentVariable(VariableName);
        var value = getenv(VariableName);
        return value == IntPtr.Zero ? null : Marshal.PtrToStringUTF8(value);
    }

    [DllImport("libc", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);

    [DllImport("libc", EntryPoint = "getenv")]
    private static extern IntPtr getenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name);
}
