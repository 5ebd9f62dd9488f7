using MLNet.FineTune.Runtime;
using TorchSharp;

namespace MLNet.FineTune.Tests.Runtime;

/// <summary>
/// <see cref="ScoringWorkers"/>: every batch scored exactly once, gradients off on both workers, OpenMP limited on both
/// while they score and restored on the caller after, and a batch's exception rethrown as it was thrown.
/// </summary>
[TestClass]
public sealed class ScoringWorkersTests
{
    [TestMethod]
    public void EveryBatchIsScoredOnceWithGradientsOffAndTheCallersThreadsRestored()
    {
        TorchRuntime.EnsureLoaded();
        const int batches = 37;
        var calls = new int[batches];
        var threadIds = new System.Collections.Concurrent.ConcurrentDictionary<int, bool>();
        bool gradientsSeen = false;
        int callerThreads = torch.get_num_threads();
        ScoringWorkers.ForEach(batches, torch.CPU, b =>
        {
            Interlocked.Increment(ref calls[b]);
            threadIds[Environment.CurrentManagedThreadId] = true;
            if (torch.is_grad_enabled()) gradientsSeen = true;
            using var scope = torch.NewDisposeScope();
            torch.randn(64, 64).matmul(torch.randn(64, 64)); // a real operator on each worker
            Thread.Sleep(1);
        });
        Console.WriteLine($"{batches} batches on {threadIds.Count} thread(s); torch threads {callerThreads}; per-thread OpenMP limit available: {CallingThreadIntraOp.Available}");
        CollectionAssert.AreEqual(Enumerable.Repeat(1, batches).ToArray(), calls, "each batch exactly once");
        Assert.IsFalse(gradientsSeen, "scoring runs without autograd on every worker");
        Assert.IsTrue(torch.is_grad_enabled(), "the caller's grad mode is its own again");
        if (callerThreads >= ScoringWorkers.Count && CallingThreadIntraOp.Available)
            Assert.AreEqual(ScoringWorkers.Count, threadIds.Count, "two workers score side by side");
        Assert.AreEqual(callerThreads, torch.get_num_threads(), "the caller's thread count is restored");
    }

    [TestMethod]
    public void ABatchsExceptionIsRethrownAsThrownAndStopsTheOthers()
    {
        TorchRuntime.EnsureLoaded();
        int started = 0;
        var error = Assert.ThrowsExactly<InvalidDataException>(() => ScoringWorkers.ForEach(1000, torch.CPU, b =>
        {
            Interlocked.Increment(ref started);
            if (b == 3) throw new InvalidDataException("row 3 of the data to score is broken");
            Thread.Sleep(1);
        }));
        Assert.AreEqual("row 3 of the data to score is broken", error.Message);
        Console.WriteLine($"batches started before the workers stopped: {started} of 1000");
        Assert.IsTrue(started < 1000, "the workers stop taking batches after a failure");
    }

    [TestMethod]
    public void OneBatchOrACudaDeviceRunsOnTheCallingThread()
    {
        TorchRuntime.EnsureLoaded();
        foreach (var (batches, device) in new[] { (1, torch.CPU), (5, new torch.Device(DeviceType.CUDA, 0)) })
        {
            var threads = new HashSet<int>();
            ScoringWorkers.ForEach(batches, device, _ => { lock (threads) threads.Add(Environment.CurrentManagedThreadId); });
            CollectionAssert.AreEqual(new[] { Environment.CurrentManagedThreadId }, threads.ToArray(), $"{batches} batch(es) on {device.type}");
        }
    }
}
