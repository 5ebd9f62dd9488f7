namespace MLNet.FineTune.Hub;

/// <summary>
/// The per-blob lock huggingface_hub takes (<c>.locks/models--org--name/&lt;etag&gt;.lock</c>), so two processes never
/// download one blob at once. An exclusive FileStream is an flock on Linux and macOS, the lock Python's filelock takes.
/// </summary>
internal static class HubFileLock
{
    public static IDisposable Acquire(string path, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var waited = TimeSpan.Zero;
        var step = TimeSpan.FromMilliseconds(200);
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (waited < TimeSpan.FromHours(1))
            {
                // Another process holds it: it is downloading this blob; wait (cancellable) for it to finish.
                if (ct.WaitHandle.WaitOne(step)) ct.ThrowIfCancellationRequested();
                waited += step;
            }
        }
    }
}
