using System.Text.Json.Nodes;

namespace MLNet.FineTune.Hub;

/// <summary>
/// Resolves a Hugging Face model id ("org/name", "org/name@revision") to a local folder through the huggingface_hub
/// cache, downloading what the model needs, so a .NET app and a Python notebook share one cache. A string naming an
/// existing folder is returned unchanged.
/// </summary>
public static class HuggingFaceHub
{
    /// <summary>Tokenizer files the tokenizers here read, fetched when the repository has them.</summary>
    internal static readonly string[] TokenizerFiles =
    [
        "tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "special_tokens_map.json",
        "vocab.json", "merges.txt", "added_tokens.json",
    ];

    private const string SafetensorsWeights = "model.safetensors";
    private const string SafetensorsIndex = "model.safetensors.index.json";
    private const string AdapterConfig = "adapter_config.json";
    private const string AdapterWeights = "adapter_model.safetensors";

    /// <summary>
    /// The local folder of a base model: <paramref name="idOrFolder"/> itself when it is an existing folder, else the
    /// cache snapshot of the repository it names, with config.json, model.safetensors (or model.safetensors.index.json
    /// and its shards), the tokenizer files and generation_config.json when the repository has them. Files already in
    /// the cache are not downloaded again.
    /// </summary>
    /// <param name="idOrFolder">A folder, or "org/name", or "org/name@revision" (a branch, tag or commit hash).</param>
    /// <param name="options">Endpoint, token, cache and offline mode; null reads them from the environment as huggingface_hub does.</param>
    /// <param name="progress">Receives the bytes of each file as it downloads.</param>
    /// <param name="cancellationToken">Stops a download; what has arrived stays for the next call to resume.</param>
    /// <returns>The folder (a snapshot: <c>&lt;cache&gt;/models--org--name/snapshots/&lt;commit&gt;</c> for an id).</returns>
    /// <exception cref="DirectoryNotFoundException">Neither an existing folder nor a model id.</exception>
    /// <exception cref="HubException">The hub refused (gated: set HF_TOKEN), the repository has no config.json or no
    /// weights, a download is corrupt, or offline the cache lacks files (the message names them).</exception>
    /// <exception cref="NotSupportedException">The repository has only pickle weights (pytorch_model.bin).</exception>
    public static string ResolveModel(string idOrFolder, HubOptions? options = null,
        IProgress<HubDownloadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Resolve(idOrFolder, RepoKind.Model, [], options, progress, null, cancellationToken);

    /// <summary>
    /// The local folder of a PEFT adapter: <paramref name="idOrFolder"/> itself when it is an existing folder, else the
    /// cache snapshot of the repository it names, with adapter_config.json, adapter_model.safetensors, and the
    /// tokenizer files when the repository has them.
    /// </summary>
    /// <inheritdoc cref="ResolveModel" path="/param"/>
    /// <exception cref="DirectoryNotFoundException">Neither an existing folder nor an id.</exception>
    /// <exception cref="HubException">The hub refused, the repository has no adapter_config.json or weights, a
    /// download is corrupt, or offline the cache lacks files.</exception>
    /// <exception cref="NotSupportedException">The adapter is only in pickle form (adapter_model.bin).</exception>
    public static string ResolveAdapter(string idOrFolder, HubOptions? options = null,
        IProgress<HubDownloadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Resolve(idOrFolder, RepoKind.Adapter, [], options, progress, null, cancellationToken);

    /// <summary>True when <paramref name="idOrFolder"/> is not an existing folder but has the form of a model id.</summary>
    public static bool IsModelId(string idOrFolder) => !Directory.Exists(idOrFolder) && HubRepoId.TryParse(idOrFolder) is not null;

    internal enum RepoKind { Model, Adapter }

    /// <summary>The resolution behind both public methods; <paramref name="extraFiles"/> are optional files a caller
    /// also wants (e.g. a task's labels file beside an adapter), <paramref name="log"/> gets one line per download.</summary>
    internal static string Resolve(string idOrFolder, RepoKind kind, IReadOnlyList<string> extraFiles, HubOptions? options,
        IProgress<HubDownloadProgress>? progress, Action<string>? log, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(idOrFolder);
        if (Directory.Exists(idOrFolder)) return idOrFolder;
        var id = HubRepoId.TryParse(idOrFolder) ?? throw new DirectoryNotFoundException(
            $"'{idOrFolder}' is neither an existing folder nor a Hugging Face id ('org/name' or 'org/name@revision').");
        options ??= new HubOptions();
        var cache = new HubCache(options.ResolvedCacheDirectory, id.RepoId);
        if (options.ResolvedOffline)
            return new Resolution(id, kind, extraFiles, cache, client: null, progress, log, ct, offlineReason: "offline: HF_HUB_OFFLINE or HubOptions.Offline").Run();
        var client = new HubClient(options.ResolvedEndpoint, options.ResolvedToken, log);
        try
        {
            return new Resolution(id, kind, extraFiles, cache, client, progress, log, ct, offlineReason: null).Run();
        }
        catch (HubUnreachableException unreachable)
        {
            // As huggingface_hub does: without a connection, what the cache already holds still serves.
            log?.Invoke($"{unreachable.Message}; resolving {id} from the cache.");
            return new Resolution(id, kind, extraFiles, cache, client: null, progress, log, ct, offlineReason: unreachable.Message).Run();
        }
    }

    /// <summary>One resolution: the files of one repository at one commit, from the hub or (client null) the cache only.</summary>
    private sealed class Resolution(HubRepoId id, RepoKind kind, IReadOnlyList<string> extraFiles, HubCache cache, HubClient? client,
        IProgress<HubDownloadProgress>? progress, Action<string>? log, CancellationToken ct, string? offlineReason)
    {
        private readonly List<string> _missing = [];
        private string? _commit = HubRepoId.IsCommitHash(id.Revision) ? id.Revision : null;

        public string Run()
        {
            if (client is null)
            {
                _commit ??= cache.ReadRef(id.Revision) ?? throw Offline(
                    $"the cache has never resolved revision '{id.Revision}' ({Path.Combine(cache.RepoFolder, "refs", id.Revision)} is absent)");
            }
            if (kind == RepoKind.Model) FetchModel(); else FetchAdapter();
            foreach (var file in TokenizerFiles.Concat(extraFiles)) Fetch(file, required: false);
            if (_missing.Count > 0)
                throw Offline($"the cache lacks {string.Join(", ", _missing)} at commit {_commit}");
            return cache.SnapshotFolder(_commit!);
        }

        private void FetchModel()
        {
            if (Fetch("config.json", required: true) is null && client is not null)
                throw new HubException($"{id} has no config.json: it is not a transformers model repository (an adapter goes in InitialAdapter).");
            if (Fetch(SafetensorsWeights, required: false) is null)
            {
                if (Fetch(SafetensorsIndex, required: false) is { } index) FetchShards(index);
                else if (client is null) _missing.Add($"{SafetensorsWeights} (or {SafetensorsIndex} and its shards)");
                else RefuseWithoutSafetensors(["pytorch_model.bin", "pytorch_model.bin.index.json"], $"{SafetensorsWeights} or {SafetensorsIndex}");
            }
            Fetch("generation_config.json", required: false);
        }

        private void FetchAdapter()
        {
            if (Fetch(AdapterConfig, required: true) is null && client is not null)
                throw new HubException($"{id} has no {AdapterConfig}: it is not a PEFT adapter repository (a base model goes in BaseModel).");
            if (Fetch(AdapterWeights, required: client is null) is null && client is not null)
                RefuseWithoutSafetensors(["adapter_model.bin"], AdapterWeights);
        }

        private void FetchShards(string indexPath)
        {
            var weightMap = JsonNode.Parse(File.ReadAllText(indexPath))?["weight_map"]?.AsObject()
                ?? throw new HubException($"{SafetensorsIndex} of {id} has no weight_map.");
            foreach (var shard in weightMap.Select(entry => entry.Value?.GetValue<string>()).Distinct())
            {
                if (shard is null) continue;
                if (Fetch(shard, required: true) is null && client is not null)
                    throw new HubException($"{id} lists the shard {shard} in {SafetensorsIndex}, but the hub has no such file.");
            }
        }

        private void RefuseWithoutSafetensors(string[] pickleFiles, string expected)
        {
            var pickle = pickleFiles.FirstOrDefault(file => Fetch(file, required: false, download: false) is not null);
            if (pickle is not null)
                throw new NotSupportedException(
                    $"{id} has its weights only as {pickle}, a PyTorch pickle, and no {expected}: pickle files can run code when " +
                    "loaded, so they are refused. Use a revision with safetensors (the hub's safetensors conversion bot opens a " +
                    "pull request: 'org/name@refs/pr/N'), or convert it in Python with safetensors and load the folder.");
            throw new HubException($"{id} has no weights: neither {expected} nor {string.Join(" nor ", pickleFiles)}.");
        }

        /// <summary>
        /// The file's snapshot path, or null when the repository has no such file. Offline, a file the cache lacks is
        /// recorded as missing when <paramref name="required"/>. With <paramref name="download"/> false, only whether it
        /// exists is asked (a non-null, non-path answer).
        /// </summary>
        private string? Fetch(string file, bool required, bool download = true)
        {
            ct.ThrowIfCancellationRequested();
            if (_commit is { } known)
            {
                if (cache.TryGetSnapshotFile(known, file) is { } cached) return cached;
                if (cache.IsMarkedAbsent(known, file)) return null;
            }
            if (client is null)
            {
                if (required) _missing.Add(file);
                return null;
            }
            var (metadata, commitOfAbsent) = client.HeadAsync(id.RepoId, _commit ?? id.Revision, file, ct).GetAwaiter().GetResult();
            if (metadata is null)
            {
                if ((_commit ?? commitOfAbsent) is { } commit)
                {
                    Pin(commit);
                    cache.MarkAbsent(commit, file);
                }
                return null;
            }
            Pin(metadata.Commit);
            if (!download) return metadata.Etag;
            var pointer = cache.SnapshotPath(_commit!, file);
            if (File.Exists(pointer)) return pointer;
            var blob = cache.BlobPath(metadata.Etag);
            using (HubFileLock.Acquire(cache.LockPath(metadata.Etag), ct))
            {
                if (File.Exists(pointer)) return pointer; // another process finished it while we waited
                bool newBlob = !File.Exists(blob);
                if (newBlob)
                {
                    log?.Invoke($"Downloading {file} of {id} ({(metadata.Size is { } size ? $"{size:N0} bytes" : "size unknown")}) from {client.Endpoint}.");
                    client.DownloadAsync(metadata, blob, id.RepoId, file, progress, ct).GetAwaiter().GetResult();
                }
                cache.LinkSnapshotFile(blob, pointer, newBlob);
            }
            return pointer;
        }

        /// <summary>All files come from the commit the first answer named, so a push during the download cannot mix commits.</summary>
        private void Pin(string commit)
        {
            if (_commit is null)
            {
                _commit = commit;
                cache.WriteRef(id.Revision, commit);
            }
        }

        private HubException Offline(string what) => new(
            $"Cannot resolve {id} from the cache at {cache.RepoFolder} ({offlineReason}): {what}. Run once with the hub " +
            "reachable (unset HF_HUB_OFFLINE) to download it, or give BaseModel as a local folder.");
    }
}
