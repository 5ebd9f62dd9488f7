using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Tests;

[TestClass]
public static class AssemblySetup
{
    /// <summary>Tests may call TorchSharp before touching any library type; prepare the native loader first.</summary>
    [AssemblyInitialize]
    public static void LoadTorch(TestContext _) => TorchRuntime.EnsureLoaded();

    /// <summary>The adapters, checkpoints and zips the tiny estimator runs wrote.</summary>
    [AssemblyCleanup]
    public static void RemoveScratchFolders()
    {
        try { Directory.Delete(Tasks.FineTuning.BothTasks.Folder, recursive: true); }
        catch (IOException) { } // a file still mapped by a loaded model: the OS's temp cleanup takes it later
    }
}
