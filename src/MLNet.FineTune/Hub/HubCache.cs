using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Hub;

/// <summary>
/// One repository's folder in the huggingface_hub cache, laid out exactly as that library lays it out:
/// <c>models--org--name/refs/&lt;revision&gt;</c> (a file holding the commit hash),
/// <c>snapshots/&lt;commit&gt;/&lt;path&gt;</c> (relative symlinks to <c>../../blobs/&lt;etag&gt;</c>; copies where symlinks
/// are unavailable), <c>blobs/&lt;etag&gt;</c>, <c>.no_exist/&lt;commit&gt;/&lt;path&gt;</c> (empty markers of files the
/// hub said are absent) and the lock files under <c>&lt;cache&gt;/.locks/models--org--name/&lt;etag&gt;.lock</c>.
/// </summary>
internal sealed class HubCache
{
    private static readonly Dictionary<string, bool> SymlinksSupported = new(StringComparer.Ordinal);

    public HubCache(string cacheRoot, string repoId)
    {
        CacheRoot = cacheRoot;
        FolderName = "models--" + repoId.Replace("/", "--");
        RepoFolder = Path.Combine(cacheRoot, FolderName);
    }

    public string CacheRoot { get; }
    public string FolderName { get; }
    public string RepoFolder { get; }

    public string SnapshotFolder(string commit) => Path.Combine(RepoFolder, "snapshots", commit);
    public string SnapshotPath(string commit, string file) => Path.Combine(SnapshotFolder(commit), Native(file));
    public string BlobPath(string etag) => Path.Combine(RepoFolder, "blobs", etag);
    public string LockPath(string etag) => Path.Combine(CacheRoot, ".locks", FolderName, etag + ".lock");
    private string RefPath(string revision) => Path.Combine(RepoFolder, "refs", Native(revision));
    private string NoExistPath(string commit, string file) => Path.Combine(RepoFolder, ".no_exist", commit, Native(file));

    /// <summary>The commit a branch or tag last resolved to, or null when the cache has never resolved it.</summary>
    public string? ReadRef(string revision) =>
        File.Exists(RefPath(revision)) ? File.ReadAllText(RefPath(revision)).Trim() : null;

    /// <summary>Records that <paramref name="revision"/> is at <paramref name="commit"/> (written to a temp name, then moved).</summary>
    public void WriteRef(string revision, string commit)
    {
        if (revision == commit || ReadRef(revision) == commit) return;
        AtomicFile.WriteAllText(RefPath(revision), commit);
    }

    public bool IsMarkedAbsent(string commit, string file) => File.Exists(NoExistPath(commit, file));

    public void MarkAbsent(string commit, string file) => AtomicFile.WriteAllText(NoExistPath(commit, file), "");

    /// <summary>The snapshot file when present: a symlink whose blob exists, or a copied file.</summary>
    public string? TryGetSnapshotFile(string commit, string file)
    {
        var pointer = SnapshotPath(commit, file);
        return File.Exists(pointer) ? pointer : null; // File.Exists follows the link: false for a dangling one
    }

    /// <summary>
    /// Makes the snapshot entry point at the blob, as huggingface_hub's _create_symlink does: a relative symlink
    /// (<c>../../blobs/&lt;etag&gt;</c>); where the file system refuses symlinks, a fresh blob is moved into the
    /// snapshot and an older one copied.
    /// </summary>
    public void LinkSnapshotFile(string blob, string pointer, bool newBlob)
    {
        var folder = Path.GetDirectoryName(pointer)!;
        Directory.CreateDirectory(folder);
        if (File.Exists(pointer) || new FileInfo(pointer).LinkTarget is not null) File.Delete(pointer);
        if (AreSymlinksSupported(Path.GetDirectoryName(Path.GetDirectoryName(blob))!))
        {
            try
            {
                File.CreateSymbolicLink(pointer, Path.GetRelativePath(folder, blob));
                return;
            }
            catch (IOException) when (File.Exists(pointer)) { return; } // another process linked it between delete and create
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // e.g. across volumes: copy below
        }
        if (newBlob) File.Move(blob, pointer);
        else AtomicFile.Write(pointer, target => { using var source = File.OpenRead(blob); source.CopyTo(target); });
    }

    /// <summary>Makes this repository folder behave as on a file system without symlinks (Windows without developer
    /// mode): tests of the copy fallback on Linux.</summary>
    internal void AssumeNoSymlinks()
    {
        lock (SymlinksSupported) SymlinksSupported[RepoFolder] = false;
    }

    /// <summary>Whether a relative symlink can be made in <paramref name="folder"/> (tested once per folder, as huggingface_hub does).</summary>
    private static bool AreSymlinksSupported(string folder)
    {
        lock (SymlinksSupported)
        {
            if (SymlinksSupported.TryGetValue(folder, out var known)) return known;
            Directory.CreateDirectory(folder);
            var probe = Path.Combine(folder, "symlink-probe-" + Guid.NewGuid().ToString("N"));
            bool supported;
            try
            {
                File.WriteAllText(probe + ".src", "");
                File.CreateSymbolicLink(probe + ".dst", Path.GetFileName(probe + ".src"));
                supported = true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException) { supported = false; }
            finally
            {
                foreach (var leftover in new[] { probe + ".dst", probe + ".src" })
                    try { File.Delete(leftover); } catch (IOException) { }
            }
            return SymlinksSupported[folder] = supported;
        }
    }

    /// <summary>A repository path ("a/b.json") as a relative path on this system; refuses paths that climb out.</summary>
    private static string Native(string repoPath)
    {
        if (repoPath.Split('/').Any(part => part is ".." or "") || Path.IsPathRooted(repoPath))
            throw new HubException($"Refusing the repository path '{repoPath}': it would leave the cache folder.");
        return repoPath.Replace('/', Path.DirectorySeparatorChar);
    }
}
