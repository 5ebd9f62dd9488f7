namespace MLNet.FineTune.Hub;

/// <summary>Download progress as log lines (an ML.NET channel): one per quarter of each file, so a large file shows
/// it is moving without flooding the log.</summary>
internal sealed class HubDownloadLog(Action<string> log) : IProgress<HubDownloadProgress>
{
    private readonly Dictionary<string, int> _quartersLogged = [];

    public void Report(HubDownloadProgress value)
    {
        if (value.TotalBytes is not { } total || total == 0) return;
        int quarter = (int)(4 * value.BytesDownloaded / total);
        var key = value.RepoId + "/" + value.File;
        lock (_quartersLogged)
        {
            if (_quartersLogged.TryGetValue(key, out var logged) && logged >= quarter) return;
            _quartersLogged[key] = quarter;
        }
        if (quarter > 0) log($"{key}: {value.BytesDownloaded:N0} of {total:N0} bytes ({25 * quarter}%)");
    }
}
