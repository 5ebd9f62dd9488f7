using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.RegularExpressions;

namespace MLNet.FineTune.Hub;

/// <summary>What a HEAD on a resolve URL says about a file (huggingface_hub's HfFileMetadata).</summary>
/// <param name="Commit">X-Repo-Commit: the commit the revision resolved to.</param>
/// <param name="Etag">X-Linked-Etag (LFS: the sha256 of the content) else ETag (git's blob sha1), unquoted.</param>
/// <param name="Size">X-Linked-Size else Content-Length.</param>
/// <param name="DownloadUri">Where the bytes are: the CDN location an LFS file redirects to, else the resolve URL.</param>
internal sealed record HubFileMetadata(string Commit, string Etag, long? Size, Uri DownloadUri);

/// <summary>The hub's resolve endpoint over HTTP: file metadata by HEAD, resumable downloads into the cache's blobs.</summary>
internal sealed partial class HubClient(string endpoint, string? token, Action<string>? log)
{
    private const int MaxRedirects = 5;
    private const int MaxDownloadAttempts = 5;
    private const int BufferSize = 1 << 20;
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(30);

    // Redirects are followed by hand: a relative one (a renamed repository) keeps the token, while an absolute one is
    // the CDN, whose signed URL needs none, so the token never leaves the hub's host.
    private static readonly HttpClient Http = new(new SocketsHttpHandler
    {
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        ConnectTimeout = TimeSpan.FromSeconds(15),
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
    })
    { Timeout = Timeout.InfiniteTimeSpan };

    private readonly Uri _endpoint = new(endpoint + "/");

    public string Endpoint => endpoint;

    /// <summary>The resolve URL of a file: {endpoint}/{repo}/resolve/{revision}/{file}, the revision escaped whole.</summary>
    public Uri ResolveUrl(string repoId, string revision, string file) =>
        new($"{endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");

    /// <summary>The file's metadata, or null with the commit (when the hub named it) for a file absent at that revision.</summary>
    /// <exception cref="HubException">Gated, private or unknown repository, unknown revision, or another HTTP error.</exception>
    /// <exception cref="HubUnreachableException">No answer from the hub.</exception>
    public async Task<(HubFileMetadata? Metadata, string? CommitOfAbsent)> HeadAsync(string repoId, string revision, string file, CancellationToken ct)
    {
        var url = ResolveUrl(repoId, revision, file);
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Head, url);
            request.Headers.AcceptEncoding.Add(new StringWithQualityHeaderValue("identity")); // Content-Length is the real size
            using var response = await SendAsync(request, url, repoId, file, ct).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 300 and < 400 && response.Headers.Location is { } location && hop < MaxRedirects)
            {
                if (!location.IsAbsoluteUri) { url = new Uri(url, location); continue; } // renamed repository: same host
                return (Metadata(response, new Uri(url, location), repoId, file), null);
            }
            if (response.IsSuccessStatusCode) return (Metadata(response, url, repoId, file), null);
            var errorCode = Header(response, "X-Error-Code");
            if (status == 404 && errorCode is null or "EntryNotFound") return (null, Header(response, "X-Repo-Commit"));
            throw Refused(response, errorCode, repoId, revision, file);
        }
    }

    /// <summary>
    /// Downloads a file into <paramref name="blobPath"/>: the bytes go to <c>&lt;blob&gt;.incomplete</c>, resumed with a
    /// Range request where an earlier attempt (this call's or a killed process's) stopped, then are checked (size, and
    /// sha256 when the etag is one) and moved to the blob's name, so a partial file never sits under its final name.
    /// </summary>
    public async Task DownloadAsync(HubFileMetadata metadata, string blobPath, string repoId, string file,
        IProgress<HubDownloadProgress>? progress, CancellationToken ct)
    {
        var incomplete = blobPath + ".incomplete";
        Directory.CreateDirectory(Path.GetDirectoryName(blobPath)!);
        for (int attempt = 1; ; attempt++)
        {
            long have = File.Exists(incomplete) ? new FileInfo(incomplete).Length : 0;
            if (metadata.Size is { } size && have > size) { File.Delete(incomplete); have = 0; }
            if (metadata.Size is { } expected && have == expected && have > 0) break;
            try
            {
                if (await ReceiveAsync(metadata, incomplete, have, repoId, file, progress, ct).ConfigureAwait(false)) break;
            }
            // A broken-off body or a failed reconnect; a refusal (HubException other than unreachable) is final.
            catch (Exception e) when ((e is IOException or HttpRequestException) && (e is not HubException || e is HubUnreachableException)
                                      && attempt < MaxDownloadAttempts && !ct.IsCancellationRequested)
            {
                log?.Invoke($"Download of {repoId}/{file} broke off at {new FileInfo(incomplete).Length} bytes ({e.Message}); resuming (attempt {attempt + 1} of {MaxDownloadAttempts}).");
            }
            if (attempt >= MaxDownloadAttempts)
                throw new HubException($"Could not download {file} of {repoId}: it kept breaking off ({MaxDownloadAttempts} attempts); run again to resume from {incomplete}.");
        }
        Verify(incomplete, metadata, repoId, file);
        File.Move(incomplete, blobPath, overwrite: true);
    }

    /// <summary>One request for the bytes from <paramref name="have"/> on; true when the body arrived whole.</summary>
    private async Task<bool> ReceiveAsync(HubFileMetadata metadata, string incomplete, long have, string repoId, string file,
        IProgress<HubDownloadProgress>? progress, CancellationToken ct)
    {
        var url = metadata.DownloadUri;
        for (int hop = 0; ; hop++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            if (have > 0) request.Headers.Range = new RangeHeaderValue(have, null);
            using var response = await SendAsync(request, url, repoId, file, ct).ConfigureAwait(false);
            var status = (int)response.StatusCode;
            if (status is >= 300 and < 400 && response.Headers.Location is { } location && hop < MaxRedirects)
            {
                url = new Uri(url, location);
                continue;
            }
            if (status == 416 && have > 0) { File.Delete(incomplete); return false; } // the part on disk is not a prefix: start over
            if (!response.IsSuccessStatusCode)
                throw Refused(response, Header(response, "X-Error-Code"), repoId, null, file);
            // A server that ignores Range answers 200 with the whole file: start over instead of appending.
            bool resumed = status == 206 && response.Content.Headers.ContentRange?.From == have;
            if (!resumed) have = 0;
            long? total = metadata.Size ?? (response.Content.Headers.ContentLength is { } length ? length + have : null);
            await using var body = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
            await using var target = new FileStream(incomplete, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, BufferSize);
            var buffer = new byte[BufferSize];
            long done = have, reported = have;
            progress?.Report(new HubDownloadProgress(repoId, file, done, total));
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(ct);
            while (true)
            {
                stall.CancelAfter(RequestTimeout); // a connection that stops sending counts as broken off
                int read;
                try { read = await body.ReadAsync(buffer, stall.Token).ConfigureAwait(false); }
                catch (OperationCanceledException e) when (!ct.IsCancellationRequested) { throw new IOException("no data for " + RequestTimeout.TotalSeconds + " s", e); }
                if (read == 0) break;
                await target.WriteAsync(buffer.AsMemory(0, read), ct).ConfigureAwait(false);
                done += read;
                if (done - reported >= 16 * BufferSize) { progress?.Report(new HubDownloadProgress(repoId, file, done, total)); reported = done; }
            }
            progress?.Report(new HubDownloadProgress(repoId, file, done, total));
            return total is not { } t || done == t;
        }
    }

    /// <summary>Size and, for LFS files (whose etag is the content's sha256), the hash: a corrupt download is deleted.</summary>
    private static void Verify(string incomplete, HubFileMetadata metadata, string repoId, string file)
    {
        long actual = new FileInfo(incomplete).Length;
        if (metadata.Size is { } size && actual != size)
        {
            File.Delete(incomplete);
            throw new HubException($"Download of {file} from {repoId} is corrupt: {actual} bytes where the hub announced {size}. It was deleted; run again.");
        }
        if (!Sha256Pattern().IsMatch(metadata.Etag)) return;
        string hash;
        using (var stream = File.OpenRead(incomplete)) hash = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
        if (hash != metadata.Etag)
        {
            File.Delete(incomplete);
            throw new HubException($"Download of {file} from {repoId} is corrupt: its sha256 is {hash} where the hub announced {metadata.Etag}. It was deleted; run again.");
        }
    }

    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, Uri url, string repoId, string file, CancellationToken ct)
    {
        request.Headers.UserAgent.Add(new ProductInfoHeaderValue("MLNet.FineTune", typeof(HubClient).Assembly.GetName().Version?.ToString() ?? "0"));
        if (token is not null && SameOrigin(url, _endpoint)) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(RequestTimeout);
        try
        {
            return await Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
        }
        catch (HttpRequestException e) when (e.StatusCode is null)
        {
            throw new HubUnreachableException($"Could not reach {url.GetLeftPart(UriPartial.Authority)} for {file} of {repoId}: {e.Message}", e);
        }
        catch (OperationCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new HubUnreachableException($"No answer from {url.GetLeftPart(UriPartial.Authority)} within {RequestTimeout.TotalSeconds} s for {file} of {repoId}.", e);
        }
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        Uri.Compare(a, b, UriComponents.SchemeAndServer | UriComponents.Port, UriFormat.SafeUnescaped, StringComparison.OrdinalIgnoreCase) == 0;

    private static HubFileMetadata Metadata(HttpResponseMessage response, Uri downloadUri, string repoId, string file)
    {
        var commit = Header(response, "X-Repo-Commit")
            ?? throw new HubException($"The hub's answer for {file} of {repoId} lacks X-Repo-Commit: is {downloadUri.GetLeftPart(UriPartial.Authority)} a Hugging Face hub (HF_ENDPOINT)?");
        var etag = Header(response, "X-Linked-Etag") ?? Header(response, "ETag")
            ?? throw new HubException($"The hub's answer for {file} of {repoId} lacks an ETag, so the file cannot be cached.");
        var sizeText = Header(response, "X-Linked-Size");
        long? size = sizeText is not null && long.TryParse(sizeText, out var linked) ? linked : response.Content.Headers.ContentLength;
        return new HubFileMetadata(commit, NormalizeEtag(etag), size, downloadUri);
    }

    /// <summary>huggingface_hub's _normalize_etag: without a weak "W/" prefix and the quotes.</summary>
    internal static string NormalizeEtag(string etag)
    {
        if (etag.StartsWith("W/", StringComparison.Ordinal)) etag = etag[2..];
        return etag.Trim('"');
    }

    private HubException Refused(HttpResponseMessage response, string? errorCode, string repoId, string? revision, string file)
    {
        var status = (int)response.StatusCode;
        var page = $"{endpoint}/{repoId}";
        var tokenAdvice = token is null
            ? "No token was sent: set HF_TOKEN (or HubOptions.Token) to an access token of an account that may read it."
            : "The token sent (HF_TOKEN or HubOptions.Token) was refused: check it is valid and its account may read it.";
        return errorCode switch
        {
            "GatedRepo" => new HubException($"{repoId} is a gated repository: accept its terms at {page} while logged in, then set HF_TOKEN. {tokenAdvice} (HTTP {status} for {file})"),
            "RepoNotFound" => new HubException($"'{repoId}' is not a local folder, and the repository was not found at {endpoint} (HTTP {status}): check the path or the id; if the repository is private: {tokenAdvice}"),
            "RevisionNotFound" => new HubException($"Revision '{revision}' does not exist in {repoId} (HTTP {status}): give a branch, tag or commit hash after '@'."),
            _ when status is 401 or 403 => new HubException($"Access to {repoId} was refused (HTTP {status} for {file}): it is gated or private. {tokenAdvice}"),
            _ => new HubException($"The hub answered HTTP {status} {response.ReasonPhrase} for {file} of {repoId}."),
        };
    }

    private static string? Header(HttpResponseMessage response, string name) =>
        response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values) ? values.FirstOrDefault() : null;

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Pattern();
}
