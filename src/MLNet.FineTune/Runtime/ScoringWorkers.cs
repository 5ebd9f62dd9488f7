using System.Runtime.ExceptionServices;
using TorchSharp;

namespace MLNet.FineTune.Runtime;

/// <summary>
/// Scores independent batches on the CPU with two workers, the calling thread and a thread-pool thread, each running
/// libtorch's operators with half of the OpenMP threads. A scoring batch of short rows is made of small operators whose
/// parallel regions spend much of their time waking and joining OpenMP's threads; two batches side by side keep both
/// halves busy instead: MiniLM over the sample reviews went from 870 to 1,200 rows/s on the 2-core development machine
/// (docs/performance.md). On one thread, on accelerators, or where the OpenMP count cannot be limited per thread
/// (<see cref="CallingThreadIntraOp.Available"/>), batches run one after another on the calling thread.
/// </summary>
internal static class ScoringWorkers
{
    /// <summary>Workers scoring at once (more would multiply the activations held at once for little gain).</summary>
    internal const int Count = 2;

    /// <summary>Calls <paramref name="scoreBatch"/> once for each of <paramref name="batches"/> indices, with gradients
    /// off (libtorch's grad mode is per thread), on up to <see cref="Count"/> threads; the batches must be independent.
    /// The first exception a batch throws is rethrown as is once both workers stop.</summary>
    public static void ForEach(int batches, torch.Device device, Action<int> scoreBatch)
    {
        // One batch (a PredictionEngine's row) decides without asking libtorch for its thread count.
        int threads = batches < 2 || device.type != DeviceType.CPU ? 1 : torch.get_num_threads();
        if (threads < Count || !CallingThreadIntraOp.Available)
        {
            using var noGrad = torch.no_grad();
            for (int i = 0; i < batches; i++) scoreBatch(i);
            return;
        }

        int next = -1;
        ExceptionDispatchInfo? failure = null;
        void Work()
        {
            using var limit = CallingThreadIntraOp.Limit(threads / Count);
            using var noGrad = torch.no_grad();
            int i;
            while (Volatile.Read(ref failure) is null && (i = Interlocked.Increment(ref next)) < batches)
            {
                try { scoreBatch(i); }
                catch (Exception e) { Interlocked.CompareExchange(ref failure, ExceptionDispatchInfo.Capture(e), null); }
            }
        }
        // A pool thread keeps its OpenMP state between calls, where a new thread would start a new one each time. A
        // helper the pool has not started by the time the caller ran out of batches is told not to start, so that a
        // busy pool (a web server's) never makes scoring wait.
        const int NotStarted = 0, Started = 1, Skipped = 2;
        int helperState = NotStarted;
        var helper = Task.Run(() =>
        {
            if (Interlocked.CompareExchange(ref helperState, Started, NotStarted) == NotStarted) Work();
        });
        Work();
        if (Interlocked.CompareExchange(ref helperState, Skipped, NotStarted) == Started) helper.Wait();
        failure?.Throw();
    }
}
