namespace MLNet.FineTune.Hub;

/// <summary>
/// Where and how <see cref="HuggingFaceHub"/> resolves model ids. Every property left null is read from the environment
/// variables huggingface_hub reads, so a .NET app and a Python notebook share one cache and one login.
/// </summary>
public sealed class HubOptions
{
    /// <summary>The hub's address; null reads <c>HF_ENDPOINT</c>, default <c>https://huggingface.co</c>.</summary>
    public string? Endpoint { get; set; }

    /// <summary>An access token for gated or private repositories; null reads <c>HF_TOKEN</c>, else the token file
    /// <c>huggingface-cli login</c> writes (<c>HF_TOKEN_PATH</c>, default <c>$HF_HOME/token</c>); an empty string sends none.</summary>
    public string? Token { get; set; }

    /// <summary>The cache folder; null reads <c>HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, default
    /// <c>~/.cache/huggingface/hub</c>.</summary>
    public string? CacheDirectory { get; set; }

    /// <summary>True resolves from the cache only, without a request; null reads <c>HF_HUB_OFFLINE</c> (1, ON, YES or TRUE).</summary>
    public bool? Offline { get; set; }

    internal string ResolvedEndpoint =>
        (Endpoint ?? NonEmpty("HF_ENDPOINT") ?? "https://huggingface.co").TrimEnd('/');

    internal bool ResolvedOffline => Offline ?? (IsTrue("HF_HUB_OFFLINE") || IsTrue("TRANSFORMERS_OFFLINE"));

    internal string ResolvedCacheDirectory =>
        ExpandUser(CacheDirectory ?? NonEmpty("HF_HUB_CACHE") ?? NonEmpty("HUGGINGFACE_HUB_CACHE") ?? Path.Combine(HfHome, "hub"));

    internal string? ResolvedToken
    {
        get
        {
            if (Token is not null) return Token.Length > 0 ? Token : null;
            if (NonEmpty("HF_TOKEN") is { } token) return token.Trim();
            if (NonEmpty("HUGGING_FACE_HUB_TOKEN") is { } legacy) return legacy.Trim();
            var tokenFile = ExpandUser(NonEmpty("HF_TOKEN_PATH") ?? Path.Combine(HfHome, "token"));
            return File.Exists(tokenFile) && File.ReadAllText(tokenFile).Trim() is { Length: > 0 } saved ? saved : null;
        }
    }

    private static string HfHome => ExpandUser(NonEmpty("HF_HOME") ??
        Path.Combine(NonEmpty("XDG_CACHE_HOME") ?? Path.Combine(UserHome, ".cache"), "huggingface"));

    private static string UserHome => Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);

    private static string ExpandUser(string path) =>
        path == "~" ? UserHome : path.StartsWith("~/", StringComparison.Ordinal) || path.StartsWith("~\\", StringComparison.Ordinal)
            ? Path.Combine(UserHome, path[2..]) : path;

    private static string? NonEmpty(string variable) =>
        Environment.GetEnvironmentVariable(variable) is { Length: > 0 } value ? value : null;

    // huggingface_hub's _is_true: these spellings, case-insensitive.
    private static bool IsTrue(string variable) =>
        NonEmpty(variable)?.Trim().ToUpperInvariant() is "1" or "ON" or "YES" or "TRUE";
}

/// <summary>One step of a file download from the hub.</summary>
/// <param name="RepoId">The repository, e.g. "sentence-transformers/all-MiniLM-L6-v2".</param>
/// <param name="File">The file's path in the repository.</param>
/// <param name="BytesDownloaded">Bytes of the file on disk so far (a resumed download starts above 0).</param>
/// <param name="TotalBytes">The file's size, or null when the hub did not say.</param>
public sealed record HubDownloadProgress(string RepoId, string File, long BytesDownloaded, long? TotalBytes);

/// <summary>A repository, revision or file the hub (or, offline, the cache) cannot provide; the message says which and why.</summary>
public class HubException : IOException
{
    /// <summary>Creates the exception with a message that names the repository and file at fault.</summary>
    public HubException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>The hub could not be reached (no connection, DNS, timeout): resolution falls back to the cache.</summary>
internal sealed class HubUnreachableException(string message, Exception inner) : HubException(message, inner);
