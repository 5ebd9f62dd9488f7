using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using MLNet.FineTune.Hub;
using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Hub;

/// <summary>
/// <see cref="HuggingFaceHub"/> against <see cref="FakeHubServer"/> on loopback: the huggingface_hub cache layout,
/// no second download, resume, integrity, offline mode, a cache laid out by Python, gated and pickle-only repositories,
/// revisions, adapters, and that a resolved folder loads like the fixture it came from.
/// </summary>
[TestClass]
public sealed class HuggingFaceHubTests
{
    private const string RepoId = "tiny-org/bert-tiny";
    private string _cache = "";
    private FakeHubServer _server = null!;
    private Dictionary<string, byte[]> _files = null!;

    [TestInitialize]
    public void Init()
    {
        _cache = Directory.CreateTempSubdirectory("mlft-hub-").FullName;
        _server = new FakeHubServer();
        _files = Directory.GetFiles(TinyModels.BertTiny()).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
    }

    [TestCleanup]
    public void Cleanup()
    {
        _server.Dispose();
        Directory.Delete(_cache, recursive: true);
    }

    private HubOptions Options(string? token = "") => new() { Endpoint = _server.Endpoint, CacheDirectory = _cache, Token = token, Offline = false };

    private string RepoFolder(string repoId = RepoId) => Path.Combine(_cache, "models--" + repoId.Replace("/", "--"));

    [TestMethod]
    public void DownloadLandsInTheHuggingFaceHubLayout()
    {
        var commit = _server.AddRepo(RepoId).Commit(_files);
        var progress = new List<HubDownloadProgress>();
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options(), new SynchronousProgress<HubDownloadProgress>(progress.Add));

        var repo = RepoFolder();
        Assert.AreEqual(Path.Combine(repo, "snapshots", commit), folder);
        Assert.AreEqual(commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        foreach (var (name, content) in _files)
        {
            var pointer = Path.Combine(folder, name);
            // Plain files are stored under their git blob sha1, LFS files under their sha256, as the hub's etags name them.
            var etag = name.EndsWith(".safetensors") ? FakeHubServer.Sha256(content) : FakeHubServer.GitBlobSha1(content);
            Assert.AreEqual(Path.Combine("..", "..", "blobs", etag), new FileInfo(pointer).LinkTarget, $"{name} is a relative symlink to its blob");
            CollectionAssert.AreEqual(content, File.ReadAllBytes(Path.Combine(repo, "blobs", etag)), name);
            CollectionAssert.AreEqual(content, File.ReadAllBytes(pointer), name);
        }
        // Files the repository lacks are remembered as huggingface_hub remembers them.
        Assert.IsTrue(File.Exists(Path.Combine(repo, ".no_exist", commit, "tokenizer.json")));
        Assert.IsTrue(File.Exists(Path.Combine(repo, ".no_exist", commit, "generation_config.json")));
        Assert.AreEqual(0, Directory.GetFiles(repo, "*.incomplete", SearchOption.AllDirectories).Length);
        var weights = _files["model.safetensors"];
        Assert.AreEqual(weights.Length, progress.Last(p => p.File == "model.safetensors").BytesDownloaded);
        Assert.AreEqual(weights.Length, progress.Last(p => p.File == "model.safetensors").TotalBytes);
        // The LFS download went to the CDN-like host named by the redirect.
        Assert.AreEqual(1, _server.Gets.Count(r => r.Host == "cdn" && r.Path.Contains(FakeHubServer.Sha256(weights))));
    }

    [TestMethod]
    public void WithoutSymlinksSnapshotsHoldTheFilesThemselves()
    {
        var commit = _server.AddRepo(RepoId).Commit(_files);
        new HubCache(_cache, RepoId).AssumeNoSymlinks();
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options());
        foreach (var (name, content) in _files)
        {
            var file = new FileInfo(Path.Combine(folder, name));
            Assert.IsNull(file.LinkTarget, name);
            CollectionAssert.AreEqual(content, File.ReadAllBytes(file.FullName), name);
        }
        // As huggingface_hub does: a fresh blob is moved into the snapshot rather than stored twice.
        Assert.IsFalse(File.Exists(Path.Combine(RepoFolder(), "blobs", FakeHubServer.Sha256(_files["model.safetensors"]))));
        int before = _server.Requests.Count;
        Assert.AreEqual(folder, HuggingFaceHub.ResolveModel(RepoId + "@" + commit, Options()));
        Assert.AreEqual(before, _server.Requests.Count);
    }

    [TestMethod]
    public void SecondRunDownloadsNothing()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var first = HuggingFaceHub.ResolveModel(RepoId, Options());
        int before = _server.Requests.Count;
        var second = HuggingFaceHub.ResolveModel(RepoId, Options());
        var again = _server.Requests.Skip(before).ToList();
        Assert.AreEqual(first, second);
        // One HEAD to learn what "main" points at; every file then comes from the snapshot or the .no_exist markers.
        Assert.AreEqual(1, again.Count, string.Join("; ", again));
        Assert.AreEqual("HEAD", again[0].Method);
        Console.WriteLine($"first run: {before} requests, second run: {again.Count}");
    }

    [TestMethod]
    public void InterruptedDownloadResumesWithARangeRequest()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var weights = _files["model.safetensors"];
        int cut = weights.Length / 3;
        _server.CutNextDownloadAfter(cut);
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options());
        CollectionAssert.AreEqual(weights, File.ReadAllBytes(Path.Combine(folder, "model.safetensors")));
        var cdn = _server.Gets.Where(r => r.Host == "cdn").ToList();
        Assert.AreEqual(2, cdn.Count, string.Join("; ", cdn));
        Assert.IsNull(cdn[0].Range);
        Assert.AreEqual($"bytes={cut}-", cdn[1].Range);
        Console.WriteLine($"cut at {cut} of {weights.Length} bytes; resumed with Range {cdn[1].Range}");
    }

    [TestMethod]
    public void PartialFileOfAnEarlierProcessIsResumed()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var weights = _files["model.safetensors"];
        var blobs = Path.Combine(RepoFolder(), "blobs");
        Directory.CreateDirectory(blobs);
        int half = weights.Length / 2;
        File.WriteAllBytes(Path.Combine(blobs, FakeHubServer.Sha256(weights) + ".incomplete"), weights[..half]);
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options());
        CollectionAssert.AreEqual(weights, File.ReadAllBytes(Path.Combine(folder, "model.safetensors")));
        Assert.AreEqual($"bytes={half}-", _server.Gets.Single(r => r.Host == "cdn").Range);
    }

    [TestMethod]
    public void CorruptDownloadIsDetectedAndNeverCached()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var sha = FakeHubServer.Sha256(_files["model.safetensors"]);
        _server.Corrupt[sha] = true;
        var error = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId, Options()));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "model.safetensors");
        StringAssert.Contains(error.Message, "sha256");
        StringAssert.Contains(error.Message, sha);
        var blobs = Path.Combine(RepoFolder(), "blobs");
        Assert.IsFalse(File.Exists(Path.Combine(blobs, sha)), "a corrupt file never sits under its final name");
        Assert.IsFalse(File.Exists(Path.Combine(blobs, sha + ".incomplete")), "a corrupt download is deleted, not resumed");

        _server.Corrupt.Clear();
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options());
        CollectionAssert.AreEqual(_files["model.safetensors"], File.ReadAllBytes(Path.Combine(folder, "model.safetensors")));
    }

    [TestMethod]
    public void OfflineResolvesFromTheCacheAndNamesWhatIsMissing()
    {
        var offline = new HubOptions { Endpoint = _server.Endpoint, CacheDirectory = _cache, Offline = true };
        var missing = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId, offline));
        Console.WriteLine(missing.Message);
        StringAssert.Contains(missing.Message, RepoId);
        StringAssert.Contains(missing.Message, "HF_HUB_OFFLINE");
        StringAssert.Contains(missing.Message, "'main'");

        _server.AddRepo(RepoId).Commit(_files);
        var online = HuggingFaceHub.ResolveModel(RepoId, Options());
        int before = _server.Requests.Count;
        Assert.AreEqual(online, HuggingFaceHub.ResolveModel(RepoId, offline));
        Assert.AreEqual(before, _server.Requests.Count, "offline sends no request");

        // A snapshot that lost its weights: the error names the file.
        File.Delete(Path.Combine(online, "model.safetensors"));
        var lacking = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId, offline));
        Console.WriteLine(lacking.Message);
        StringAssert.Contains(lacking.Message, "model.safetensors");
    }

    [TestMethod]
    public void UnreachableHubFallsBackToTheCache()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var online = HuggingFaceHub.ResolveModel(RepoId, Options());
        var endpoint = _server.Endpoint;
        _server.Dispose(); // the port now refuses connections
        var log = new List<string>();
        var options = new HubOptions { Endpoint = endpoint, CacheDirectory = _cache, Offline = false, Token = "" };
        Assert.AreEqual(online, HuggingFaceHub.Resolve(RepoId, HuggingFaceHub.RepoKind.Model, [], options, null, log.Add, default));
        Assert.IsTrue(log.Any(l => l.Contains("from the cache")), string.Join("\n", log));
    }

    /// <summary>
    /// A cache exactly as Python's huggingface_hub leaves it after hf_hub_download (blobs named by etag, refs/main,
    /// relative symlinks in snapshots/, .no_exist markers for files it found absent) is used without a download,
    /// online and offline.
    /// </summary>
    [TestMethod]
    public void CacheLaidOutByPythonIsUsedAsIs()
    {
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        var repo = RepoFolder();
        var snapshot = Path.Combine(repo, "snapshots", commit);
        Directory.CreateDirectory(Path.Combine(repo, "blobs"));
        Directory.CreateDirectory(snapshot);
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), commit); // Python writes the hash without a newline
        foreach (var (name, content) in _files)
        {
            var etag = name.EndsWith(".safetensors") ? FakeHubServer.Sha256(content) : FakeHubServer.GitBlobSha1(content);
            File.WriteAllBytes(Path.Combine(repo, "blobs", etag), content);
            File.CreateSymbolicLink(Path.Combine(snapshot, name), "../../blobs/" + etag);
        }
        var noExist = Path.Combine(repo, ".no_exist", commit);
        Directory.CreateDirectory(noExist);
        foreach (var absent in HuggingFaceHub.TokenizerFiles.Append("generation_config.json").Where(f => !_files.ContainsKey(f)))
            File.WriteAllBytes(Path.Combine(noExist, absent), []);

        var offline = new HubOptions { CacheDirectory = _cache, Offline = true };
        Assert.AreEqual(snapshot, HuggingFaceHub.ResolveModel(RepoId, offline));
        Assert.AreEqual(snapshot, HuggingFaceHub.ResolveModel(RepoId + "@" + commit, offline));

        // Online, with the hub at the same commit: one HEAD, no download.
        var hub = _server.AddRepo(RepoId);
        hub.Commits[commit] = _files;
        hub.Branches["main"] = commit;
        Assert.AreEqual(snapshot, HuggingFaceHub.ResolveModel(RepoId, Options()));
        Assert.AreEqual(0, _server.Gets.Count());
        Assert.AreEqual(1, _server.Requests.Count);
        // Pinned to the commit: not even a HEAD.
        Assert.AreEqual(snapshot, HuggingFaceHub.ResolveModel(RepoId + "@" + commit, Options()));
        Assert.AreEqual(1, _server.Requests.Count);
    }

    [TestMethod]
    public void GatedRepositoryNeedsTheToken()
    {
        _server.AddRepo(RepoId, gated: true).Commit(_files);
        var error = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId, Options(token: "")));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "gated");
        StringAssert.Contains(error.Message, "HF_TOKEN");
        StringAssert.Contains(error.Message, RepoId);
        var wrong = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId, Options(token: "hf_wrong")));
        StringAssert.Contains(wrong.Message, "was refused");

        var folder = HuggingFaceHub.ResolveModel(RepoId, Options(token: _server.GatedToken));
        Assert.IsTrue(File.Exists(Path.Combine(folder, "model.safetensors")));
        Assert.IsTrue(_server.Requests.Where(r => r.Host == "hub").Any(r => r.Authorization == "Bearer " + _server.GatedToken));
        // The signed CDN URL needs no token, so it never leaves the hub's host.
        Assert.IsTrue(_server.Requests.Where(r => r.Host == "cdn").All(r => r.Authorization is null));
    }

    [TestMethod]
    public void UnknownRepositoryAndRevisionAreNamed()
    {
        var repo = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel("nobody/nothing", Options()));
        StringAssert.Contains(repo.Message, "nobody/nothing");
        StringAssert.Contains(repo.Message, "not found");
        StringAssert.Contains(repo.Message, "not a local folder");
        _server.AddRepo(RepoId).Commit(_files);
        var revision = Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel(RepoId + "@v9", Options()));
        StringAssert.Contains(revision.Message, "'v9'");
        var notAnId = Assert.ThrowsExactly<DirectoryNotFoundException>(() => HuggingFaceHub.ResolveModel("no/such/folder", Options()));
        StringAssert.Contains(notAnId.Message, "no/such/folder");
    }

    [TestMethod]
    public void PickleOnlyRepositoryIsRefused()
    {
        _server.AddRepo("tiny-org/pickled").Commit(new() { ["config.json"] = _files["config.json"], ["pytorch_model.bin"] = [1, 2, 3, 4] });
        var error = Assert.ThrowsExactly<NotSupportedException>(() => HuggingFaceHub.ResolveModel("tiny-org/pickled", Options()));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "pytorch_model.bin");
        StringAssert.Contains(error.Message, "safetensors");
        Assert.IsFalse(_server.Gets.Any(r => r.Host == "cdn" || r.Path.EndsWith("pytorch_model.bin")), "the pickle is never downloaded");

        _server.AddRepo("tiny-org/empty").Commit(new() { ["config.json"] = _files["config.json"] });
        StringAssert.Contains(Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveModel("tiny-org/empty", Options())).Message, "no weights");
    }

    [TestMethod]
    public void RevisionPinsTheCommit()
    {
        var repo = _server.AddRepo(RepoId);
        var oldConfig = JsonNode.Parse(_files["config.json"])!.AsObject();
        oldConfig["note"] = "v1";
        var v1 = repo.Commit(new(_files) { ["config.json"] = Encoding.UTF8.GetBytes(oldConfig.ToJsonString()) }, branch: "v1");
        var main = repo.Commit(_files);
        Assert.AreNotEqual(v1, main);

        var tagged = HuggingFaceHub.ResolveModel(RepoId + "@v1", Options());
        Assert.AreEqual(Path.Combine(RepoFolder(), "snapshots", v1), tagged);
        Assert.AreEqual(v1, File.ReadAllText(Path.Combine(RepoFolder(), "refs", "v1")));
        StringAssert.Contains(File.ReadAllText(Path.Combine(tagged, "config.json")), "\"note\":\"v1\"");
        var latest = HuggingFaceHub.ResolveModel(RepoId, Options());
        Assert.AreEqual(Path.Combine(RepoFolder(), "snapshots", main), latest);
        Assert.AreEqual(new FileInfo(Path.Combine(tagged, "model.safetensors")).LinkTarget, new FileInfo(Path.Combine(latest, "model.safetensors")).LinkTarget,
            "both snapshots share one blob of the unchanged weights");
        Assert.AreEqual(1, _server.Gets.Count(r => r.Host == "cdn"), "the shared weights were downloaded once");
        Assert.AreEqual(tagged, HuggingFaceHub.ResolveModel(RepoId + "@" + v1, Options()));
    }

    [TestMethod]
    public void ResolvedModelLoadsAsTheFixtureFolderDoes()
    {
        _server.AddRepo(RepoId).Commit(_files);
        var folder = HuggingFaceHub.ResolveModel(RepoId, Options());
        AssertSameWeights(TinyModels.BertTiny(), folder);
    }

    [TestMethod]
    public void ShardedCheckpointIsFetchedThroughItsIndex()
    {
        var weights = _files["model.safetensors"];
        const string shard = "model-00001-of-00001.safetensors";
        var index = new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = new JsonObject(TensorNames(weights).Select(n => KeyValuePair.Create(n, (JsonNode?)shard))) };
        var files = new Dictionary<string, byte[]>(_files);
        files.Remove("model.safetensors");
        files["model.safetensors.index.json"] = Encoding.UTF8.GetBytes(index.ToJsonString());
        files[shard] = weights;
        _server.AddRepo("tiny-org/sharded").Commit(files);
        var folder = HuggingFaceHub.ResolveModel("tiny-org/sharded", Options());
        Assert.IsTrue(File.Exists(Path.Combine(folder, shard)));
        AssertSameWeights(TinyModels.BertTiny(), folder);
    }

    [TestMethod]
    public void AdapterRepositoryResolvesAndPickleAdapterIsRefused()
    {
        var adapterFolder = TestPaths.Fixture("hf-reference", "bert-tiny-cls-lora", "adapter");
        var adapter = Directory.GetFiles(adapterFolder).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);
        _server.AddRepo("tiny-org/bert-tiny-lora").Commit(adapter);
        var folder = HuggingFaceHub.ResolveAdapter("tiny-org/bert-tiny-lora", Options());
        foreach (var (name, content) in adapter) CollectionAssert.AreEqual(content, File.ReadAllBytes(Path.Combine(folder, name)), name);

        _server.AddRepo("tiny-org/pickled-lora").Commit(new() { ["adapter_config.json"] = adapter["adapter_config.json"], ["adapter_model.bin"] = [1, 2] });
        StringAssert.Contains(Assert.ThrowsExactly<NotSupportedException>(() => HuggingFaceHub.ResolveAdapter("tiny-org/pickled-lora", Options())).Message, "adapter_model.bin");
        // A base model repository is not an adapter.
        _server.AddRepo(RepoId).Commit(_files);
        StringAssert.Contains(Assert.ThrowsExactly<HubException>(() => HuggingFaceHub.ResolveAdapter(RepoId, Options())).Message, "adapter_config.json");
    }

    [TestMethod]
    public void ExistingFolderStaysAFolder()
    {
        var folder = TinyModels.BertTiny();
        Assert.AreEqual(folder, HuggingFaceHub.ResolveModel(folder, Options()));
        Assert.AreEqual(0, _server.Requests.Count);
        Assert.IsFalse(HuggingFaceHub.IsModelId(folder));
        Assert.IsTrue(HuggingFaceHub.IsModelId("org/name@refs/pr/1"));
    }

    private static void AssertSameWeights(string expectedFolder, string actualFolder)
    {
        var (expected, _) = ModelFactory.FromPretrainedBaseModel(expectedFolder);
        var (actual, report) = ModelFactory.FromPretrainedBaseModel(actualFolder);
        var expectedState = expected.state_dict();
        var actualState = actual.state_dict();
        CollectionAssert.AreEquivalent(expectedState.Keys.ToList(), actualState.Keys.ToList());
        double maxError = expectedState.Max(p => (p.Value.to_type(TorchSharp.torch.ScalarType.Float64) - actualState[p.Key].to_type(TorchSharp.torch.ScalarType.Float64)).abs().max().item<double>());
        Console.WriteLine($"resolved folder vs fixture folder: {expectedState.Count} tensors, max abs difference {maxError}");
        Assert.AreEqual(0.0, maxError);
        Assert.AreEqual(0, report.Missing.Count);
    }

    private static IEnumerable<string> TensorNames(byte[] safetensors)
    {
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(safetensors);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(safetensors, 8, headerLength))!.AsObject();
        return header.Select(entry => entry.Key).Where(key => key != "__metadata__");
    }
}

/// <summary>An IProgress that reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool).</summary>
internal sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
