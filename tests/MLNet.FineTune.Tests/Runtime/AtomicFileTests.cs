using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Tests.Runtime;

/// <summary>Folder writes that never lose the old copy before the new one is complete.</summary>
[TestClass]
public sealed class AtomicFileTests
{
    private string _dir = "";

    [TestInitialize] public void Init() => _dir = Directory.CreateTempSubdirectory("mlft-atomic-").FullName;
    [TestCleanup] public void Cleanup() => Directory.Delete(_dir, recursive: true);

    private string[] Entries() => Directory.GetFileSystemEntries(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

    [TestMethod]
    public void AFileSetWhoseWriteFailsLeavesTheFolderAsItWas()
    {
        var folder = Path.Combine(_dir, "set");
        AtomicFile.WriteFileSet(folder, "config.json", temp =>
        {
            File.WriteAllText(Path.Combine(temp, "weights.bin"), "old weights");
            File.WriteAllText(Path.Combine(temp, "config.json"), "old config");
        });
        var e = Assert.ThrowsExactly<IOException>(() => AtomicFile.WriteFileSet(folder, "config.json", temp =>
        {
            File.WriteAllText(Path.Combine(temp, "weights.bin"), "new weights");
            throw new IOException("disk full (simulated) before the config was written");
        }));
        Console.WriteLine($"{e.Message}; folder: {File.ReadAllText(Path.Combine(folder, "weights.bin"))} + {File.ReadAllText(Path.Combine(folder, "config.json"))}; entries beside: {string.Join(", ", Entries())}");
        Assert.AreEqual("old weights", File.ReadAllText(Path.Combine(folder, "weights.bin")));
        Assert.AreEqual("old config", File.ReadAllText(Path.Combine(folder, "config.json")));
        CollectionAssert.AreEqual(new[] { "set" }, Entries(), "the temporary folder is removed");

        var missing = Assert.ThrowsExactly<InvalidOperationException>(() => AtomicFile.WriteFileSet(folder, "config.json",
            temp => File.WriteAllText(Path.Combine(temp, "weights.bin"), "new weights")));
        StringAssert.Contains(missing.Message, "config.json");
        Assert.AreEqual("old weights", File.ReadAllText(Path.Combine(folder, "weights.bin")), "a set without its commit file is not moved in");
    }

    [TestMethod]
    public void ReplacingAFolderKeepsTheOldOneUntilTheNewOneIsIn()
    {
        var folder = Path.Combine(_dir, "checkpoint-4");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "state.json"), "old");
        File.WriteAllText(Path.Combine(folder, "best.bin"), "old best");

        // The new folder cannot be moved in (it vanished): the old one must come back, not be lost.
        var gone = Path.Combine(_dir, ".checkpoint-4.new.tmp");
        Assert.ThrowsExactly<DirectoryNotFoundException>(() => AtomicFile.ReplaceDirectory(gone, folder));
        Console.WriteLine($"after a failed replace: {string.Join(", ", Entries())}; state {File.ReadAllText(Path.Combine(folder, "state.json"))}");
        Assert.AreEqual("old", File.ReadAllText(Path.Combine(folder, "state.json")));
        CollectionAssert.AreEqual(new[] { "checkpoint-4" }, Entries(), "the old folder is back under its name, nothing left aside");

        var replacement = Path.Combine(_dir, ".checkpoint-4.new.tmp");
        Directory.CreateDirectory(replacement);
        File.WriteAllText(Path.Combine(replacement, "state.json"), "new");
        AtomicFile.ReplaceDirectory(replacement, folder);
        Console.WriteLine($"after a replace: {string.Join(", ", Entries())}; files {string.Join(", ", Directory.GetFiles(folder).Select(Path.GetFileName))}");
        Assert.AreEqual("new", File.ReadAllText(Path.Combine(folder, "state.json")));
        Assert.IsFalse(File.Exists(Path.Combine(folder, "best.bin")), "the folder is replaced whole: no stale file of the old one");
        CollectionAssert.AreEqual(new[] { "checkpoint-4" }, Entries(), "the old folder is deleted once the new one is in");
    }
}
