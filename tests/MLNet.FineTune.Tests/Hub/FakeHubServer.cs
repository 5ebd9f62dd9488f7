using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace MLNet.FineTune.Tests.Hub;

/// <summary>
/// A tiny HTTP/1.1 server on 127.0.0.1 that answers as the Hugging Face hub's resolve endpoint does: HEAD/GET on
/// /{org}/{name}/resolve/{revision}/{path} with X-Repo-Commit and ETag (git blob sha1) for plain files, a 302 to a
/// CDN-like host (a second port) with X-Linked-Etag (sha256) and X-Linked-Size for LFS files (*.safetensors, *.bin),
/// 401 with X-Error-Code GatedRepo / RepoNotFound, 404 with EntryNotFound / RevisionNotFound; the CDN honours Range.
/// It can cut one download midway and corrupt files. It stops on Dispose and by itself after two minutes.
/// </summary>
internal sealed class FakeHubServer : IDisposable
{
    private readonly TcpListener _hub = new(IPAddress.Loopback, 0);
    private readonly TcpListener _cdn = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new(TimeSpan.FromMinutes(2));
    private readonly ConcurrentDictionary<string, FakeRepo> _repos = new();
    private int _cutAfter = -1;

    public FakeHubServer()
    {
        _hub.Start();
        _cdn.Start();
        _ = AcceptLoop(_hub, HandleHub);
        _ = AcceptLoop(_cdn, HandleCdn);
    }

    public string Endpoint => $"http://127.0.0.1:{((IPEndPoint)_hub.LocalEndpoint).Port}";
    public string CdnEndpoint => $"http://127.0.0.1:{((IPEndPoint)_cdn.LocalEndpoint).Port}";

    /// <summary>Every request either host received, in order.</summary>
    public ConcurrentQueue<RecordedRequest> Requests { get; } = new();

    /// <summary>The token a gated repository accepts.</summary>
    public string GatedToken { get; } = "hf_test_" + Guid.NewGuid().ToString("N");

    /// <summary>sha256 etags whose bytes the CDN serves with one byte flipped.</summary>
    public ConcurrentDictionary<string, bool> Corrupt { get; } = new();

    /// <summary>The next CDN download sends this many bytes of its body, then closes the connection.</summary>
    public void CutNextDownloadAfter(int bytes) => _cutAfter = bytes;

    public FakeRepo AddRepo(string repoId, bool gated = false) => _repos[repoId] = new FakeRepo(gated);

    public IEnumerable<RecordedRequest> Gets => Requests.Where(r => r.Method == "GET");

    public void Dispose()
    {
        _stop.Cancel();
        _hub.Stop();
        _cdn.Stop();
    }

    public static string GitBlobSha1(byte[] content) =>
        Convert.ToHexString(SHA1.HashData([.. Encoding.ASCII.GetBytes($"blob {content.Length}\0"), .. content])).ToLowerInvariant();

    public static string Sha256(byte[] content) => Convert.ToHexString(SHA256.HashData(content)).ToLowerInvariant();

    private static bool IsLfs(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal);

    private async Task AcceptLoop(TcpListener listener, Func<Request, NetworkStream, Task> handle)
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(async () =>
            {
                using (client)
                {
                    try
                    {
                        var stream = client.GetStream();
                        if (await ReadRequest(stream) is { } request) await handle(request, stream);
                    }
                    catch (IOException) { } // the client went away
                }
            });
        }
    }

    private Task HandleHub(Request request, NetworkStream stream)
    {
        Requests.Enqueue(new RecordedRequest("hub", request.Method, request.Path, request.Header("Range"), request.Header("Authorization")));
        var parts = request.Path.Split('?')[0].TrimStart('/').Split('/');
        if (parts.Length < 5 || parts[2] != "resolve") return Respond(stream, request, 404, [], []);
        var repoId = parts[0] + "/" + parts[1];
        var revision = Uri.UnescapeDataString(parts[3]);
        var file = string.Join('/', parts.Skip(4).Select(Uri.UnescapeDataString));
        if (!_repos.TryGetValue(repoId, out var repo))
            return Respond(stream, request, 401, [("X-Error-Code", "RepoNotFound")], []);
        if (repo.Gated && request.Header("Authorization") != "Bearer " + GatedToken)
            return Respond(stream, request, 401, [("X-Error-Code", "GatedRepo")], []);
        var commit = repo.Branches.TryGetValue(revision, out var branchCommit) ? branchCommit : repo.Commits.ContainsKey(revision) ? revision : null;
        if (commit is null) return Respond(stream, request, 404, [("X-Error-Code", "RevisionNotFound")], []);
        if (!repo.Commits[commit].TryGetValue(file, out var content))
            return Respond(stream, request, 404, [("X-Error-Code", "EntryNotFound"), ("X-Repo-Commit", commit)], []);
        if (!IsLfs(file))
            return Respond(stream, request, 200, [("X-Repo-Commit", commit), ("ETag", $"\"{GitBlobSha1(content)}\"")], content);
        var sha = Sha256(content);
        return Respond(stream, request, 302,
        [
            ("X-Repo-Commit", commit), ("X-Linked-Etag", $"\"{sha}\""), ("X-Linked-Size", content.Length.ToString()),
            ("ETag", $"W/\"{GitBlobSha1(Encoding.ASCII.GetBytes(sha))}\""), ("Location", $"{CdnEndpoint}/repos/{sha}?signature=test"),
        ], []);
    }

    private async Task HandleCdn(Request request, NetworkStream stream)
    {
        Requests.Enqueue(new RecordedRequest("cdn", request.Method, request.Path, request.Header("Range"), request.Header("Authorization")));
        var sha = request.Path.Split('?')[0].Split('/').Last();
        var content = _repos.Values.SelectMany(r => r.Commits.Values).SelectMany(files => files.Values).FirstOrDefault(c => Sha256(c) == sha);
        if (content is null) { await Respond(stream, request, 404, [], []); return; }
        if (Corrupt.ContainsKey(sha)) { content = (byte[])content.Clone(); content[content.Length / 2] ^= 0xFF; }
        long from = 0;
        if (request.Header("Range") is { } range && range.StartsWith("bytes=", StringComparison.Ordinal) && range.EndsWith('-'))
            from = long.Parse(range["bytes=".Length..^1]);
        if (from >= content.Length && from > 0)
        {
            await Respond(stream, request, 416, [("Content-Range", $"bytes */{content.Length}")], []);
            return;
        }
        var body = content[(int)from..];
        List<(string, string)> headers = from > 0 ? [("Content-Range", $"bytes {from}-{content.Length - 1}/{content.Length}")] : [];
        int cut = Interlocked.Exchange(ref _cutAfter, -1);
        if (cut >= 0 && request.Method == "GET" && cut < body.Length)
        {
            await WriteHead(stream, from > 0 ? 206 : 200, headers, body.Length);
            await stream.WriteAsync(body.AsMemory(0, cut));
            await stream.FlushAsync();
            return; // closing now: the client sees the body end early
        }
        await Respond(stream, request, from > 0 ? 206 : 200, headers, body);
    }

    private static async Task Respond(NetworkStream stream, Request request, int status, List<(string, string)> headers, byte[] body)
    {
        await WriteHead(stream, status, headers, body.Length);
        if (request.Method != "HEAD") await stream.WriteAsync(body);
        await stream.FlushAsync();
    }

    private static async Task WriteHead(NetworkStream stream, int status, List<(string Name, string Value)> headers, long contentLength)
    {
        var head = new StringBuilder($"HTTP/1.1 {status} {(HttpStatusCode)status}\r\n");
        foreach (var (name, value) in headers) head.Append($"{name}: {value}\r\n");
        head.Append($"Content-Length: {contentLength}\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()));
    }

    private static async Task<Request?> ReadRequest(NetworkStream stream)
    {
        var bytes = new List<byte>();
        var one = new byte[1];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        while (bytes.Count < 16384)
        {
            if (await stream.ReadAsync(one, timeout.Token) == 0) return null;
            bytes.Add(one[0]);
            if (bytes.Count >= 4 && bytes[^4] == '\r' && bytes[^3] == '\n' && bytes[^2] == '\r' && bytes[^1] == '\n') break;
        }
        var lines = Encoding.ASCII.GetString(bytes.ToArray()).Split("\r\n");
        var first = lines[0].Split(' ');
        var headers = lines.Skip(1).Where(l => l.Contains(':'))
            .ToDictionary(l => l[..l.IndexOf(':')].Trim(), l => l[(l.IndexOf(':') + 1)..].Trim(), StringComparer.OrdinalIgnoreCase);
        return new Request(first[0], first[1], headers);
    }

    private sealed record Request(string Method, string Path, Dictionary<string, string> Headers)
    {
        public string? Header(string name) => Headers.TryGetValue(name, out var value) ? value : null;
    }
}

/// <summary>One request as the fake hub saw it.</summary>
internal sealed record RecordedRequest(string Host, string Method, string Path, string? Range, string? Authorization);

/// <summary>A repository of the fake hub: commits (hash -> files) and branches or tags (name -> hash).</summary>
internal sealed class FakeRepo(bool gated)
{
    public bool Gated { get; } = gated;
    public Dictionary<string, Dictionary<string, byte[]>> Commits { get; } = [];
    public Dictionary<string, string> Branches { get; } = [];

    /// <summary>Adds a commit of these files (its hash derived from them) and points <paramref name="branch"/> at it.</summary>
    public string Commit(Dictionary<string, byte[]> files, string branch = "main")
    {
        var hash = Convert.ToHexString(SHA1.HashData(Encoding.UTF8.GetBytes(string.Join(";", files.OrderBy(f => f.Key, StringComparer.Ordinal)
            .Select(f => f.Key + "=" + FakeHubServer.Sha256(f.Value))) + Commits.Count))).ToLowerInvariant();
        Commits[hash] = files;
        Branches[branch] = hash;
        return hash;
    }
}
