using MLNet.FineTune.Runtime;

namespace MLNet.FineTune.Tests;

[TestClass]
public static class AssemblySetup
{
    /// <summary>Tests may call TorchSharp before touching any library type; prepare the native loader first.</summary>
    [AssemblyInitialize]
    public static void LoadTorch(TestContext _) => TorchRuntime.EnsureLoaded();
}
