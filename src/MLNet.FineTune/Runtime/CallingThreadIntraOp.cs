using System.Runtime.InteropServices;
using TorchSharp;

namespace MLNet.FineTune.Runtime;

/// <summary>
/// Runs libtorch's CPU operators on the calling thread alone, for inputs too small to share between threads: one short
/// sentence through MiniLM took 7.1 ms on 2 threads and 4.2 ms on one (docs/performance.md), because with the
/// library's OMP_WAIT_POLICY=PASSIVE (<see cref="TorchRuntime.ThreadWaitPolicy"/>) every parallel region of every
/// operator wakes a sleeping OpenMP thread and waits for it. <c>torch.set_num_threads</c> would change the whole
/// process (and clears oneDNN's primitive cache); the OpenMP thread count set here belongs to the calling thread
/// only (the ICV of its implicit task), so other threads scoring or
/// training meanwhile keep theirs. Where libtorch's OpenMP cannot be found (another OpenMP runtime, Windows) the
/// scope does nothing.
/// </summary>
internal static class CallingThreadIntraOp
{
    private static readonly Lazy<Api?> Functions = new(Resolve);

    /// <summary>Whether <see cref="SingleThreaded"/> can limit the threads on this system.</summary>
    public static bool Available => Functions.Value is not null;

    /// <summary>False turns <see cref="SingleThreaded"/> into a no-op: for the latency benchmark's before/after runs.</summary>
    internal static bool Enabled { get; set; } = true;

    /// <summary>Until disposed, libtorch's CPU operators started on this thread use only this thread.</summary>
    public static Scope SingleThreaded() => Limit(1);

    /// <summary>Until disposed, libtorch's CPU operators started on this thread use at most <paramref name="threads"/>
    /// OpenMP threads (this one included).</summary>
    public static Scope Limit(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        var api = Enabled ? Functions.Value : null;
        if (api is null) return default;
        // libtorch sets each thread's counts on its first parallel operator; do that first, or it would undo ours.
        torch.get_num_threads();
        int omp = api.GetMaxThreads();
        if (omp <= threads) return default;
        api.SetNumThreads(threads);
        return new Scope(api, omp);
    }

    /// <summary>Restores the calling thread's OpenMP thread count.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly Api? _api;
        private readonly int _omp;

        internal Scope(Api api, int omp) => (_api, _omp) = (api, omp);

        /// <inheritdoc/>
        public void Dispose() => _api?.SetNumThreads(_omp);
    }

    internal sealed record Api(Func<int> GetMaxThreads, Action<int> SetNumThreads);

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate void IntToVoid(int value);
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] private delegate int VoidToInt();

    /// <summary>The OpenMP functions libtorch_cpu was linked against (dlsym on its handle searches its dependencies,
    /// which finds the libgomp copy it loaded, whatever its hashed file name). oneDNN (bf16 matmuls) and MKL (float32
    /// GEMM, unless <c>torch.set_num_threads</c> gave this thread its own MKL count) follow the OpenMP count.</summary>
    private static Api? Resolve()
    {
        if (!OperatingSystem.IsLinux()) return null;
        TorchRuntime.EnsureLoaded();
        torch.get_num_threads(); // libtorch_cpu is loaded from here on
        // Already loaded, so dlopen by soname returns the loaded library rather than searching the disk.
        if (!NativeLibrary.TryLoad("libtorch_cpu.so", out var torchCpu)) return null;
        if (!NativeLibrary.TryGetExport(torchCpu, "omp_get_max_threads", out var getMax)
            || !NativeLibrary.TryGetExport(torchCpu, "omp_set_num_threads", out var setNum))
            return null;
        var get = Marshal.GetDelegateForFunctionPointer<VoidToInt>(getMax);
        var set = Marshal.GetDelegateForFunctionPointer<IntToVoid>(setNum);
        return new Api(() => get(), n => set(n));
    }
}
