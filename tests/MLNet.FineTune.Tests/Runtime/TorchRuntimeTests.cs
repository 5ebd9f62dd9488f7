using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Runtime;

[TestClass]
public sealed class TorchRuntimeTests
{
    [TestMethod]
    public void TorchSharpRunsThroughTheLoader()
    {
        // Without the loader, on a libstdc++ older than GCC 13 (this Debian 12 machine), the first torch call throws
        // "This application or script uses TorchSharp but doesn't contain a reference to libtorch-cpu-linux-x64":
        // libLibTorchSharp.so needs GLIBCXX_3.4.32 (std::ios_base_library_init) and dlopen refuses it.
        TorchRuntime.EnsureLoaded();
        Console.WriteLine($"system needs the libstdc++ patch: {TorchRuntime.SystemNeedsCompatPatch()}; patched bridge: {TorchRuntime.PatchedBridgePath ?? "(none needed)"}");
        using var a = tensor(new float[] { 1, 2, 3, 4 }, 2, 2);
        using var b = a.matmul(a);
        CollectionAssert.AreEqual(new float[] { 7, 10, 15, 22 }, b.data<float>().ToArray());
        using var x = ones(3, requires_grad: true);
        using var y = (x * x).sum();
        y.backward();
        CollectionAssert.AreEqual(new float[] { 2, 2, 2 }, x.grad!.data<float>().ToArray());
        if (TorchRuntime.SystemNeedsCompatPatch())
            Assert.IsNotNull(TorchRuntime.PatchedBridgePath, "this system needs the patched bridge, but none was loaded");
    }

    [TestMethod]
    public void AFolderWithTheBridgeButNoLibTorch_IsDetectedAndTheErrorNamesTheBackendPackages()
    {
        var bridge = Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).FirstOrDefault();
        if (bridge is null) Assert.Inconclusive("no libLibTorchSharp.so in the test output (non-Linux backend)");
        Assert.IsNotNull(TorchRuntime.FindLibTorchBeside(Path.GetDirectoryName(bridge!)!), "the test output carries TorchSharp-cpu: libtorch is beside the bridge");

        // An application folder as `dotnet publish` leaves it without a backend package: TorchSharp's bridge alone.
        var app = Directory.CreateTempSubdirectory("mlft-no-backend-").FullName;
        try
        {
            File.Copy(bridge!, Path.Combine(app, "libLibTorchSharp.so"));
            Assert.IsNull(TorchRuntime.FindLibTorchBeside(app));
            var message = TorchRuntime.MissingBackendMessage(Path.Combine(app, "libLibTorchSharp.so"));
            Console.WriteLine(message);
            foreach (var package in new[] { "TorchSharp-cpu", "TorchSharp-cuda-linux", "TorchSharp-cuda-windows", "libtorch.so", app })
                StringAssert.Contains(message, package);
            File.WriteAllBytes(Path.Combine(app, "libtorch.so"), []);
            Assert.IsNotNull(TorchRuntime.FindLibTorchBeside(app));
        }
        finally
        {
            Directory.Delete(app, recursive: true);
        }
    }

    [TestMethod]
    public void OpenMpThreadsSleepUnlessTheUserChoseAWaitPolicy()
    {
        // .NET's managed environment is the snapshot taken at process start; the native one is what libgomp reads.
        var fromUser = Environment.GetEnvironmentVariable(OpenMpWaitPolicy.VariableName);
        TorchRuntime.EnsureLoaded();
        var native = OpenMpWaitPolicy.ReadNative();
        Console.WriteLine($"OMP_WAIT_POLICY at start: {fromUser ?? "(unset)"}; native now: {native}; reported: {TorchRuntime.ThreadWaitPolicy}");
        if (fromUser is null)
        {
            Assert.AreEqual(OpenMpWaitPolicy.LibraryDefault, native, "the library should set PASSIVE where the user set nothing");
            Assert.AreEqual("PASSIVE (set by MLNet.FineTune)", TorchRuntime.ThreadWaitPolicy);
        }
        else
        {
            Assert.AreEqual(fromUser, native, "a wait policy the user chose (or an empty one: OpenMP's default) must be kept");
            StringAssert.EndsWith(TorchRuntime.ThreadWaitPolicy, fromUser.Length == 0 ? "(OMP_WAIT_POLICY is empty)" : "(from the environment)");
        }
    }

    [TestMethod]
    public void PatchRewritesOnlyTheVersionNeedAndTheSymbol()
    {
        var bridge = Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).FirstOrDefault();
        if (bridge is null) Assert.Inconclusive("no libLibTorchSharp.so in the test output (non-Linux backend)");
        var original = File.ReadAllBytes(bridge!);
        Assert.IsTrue(LibStdCxxCompatPatch.NeedsPatch(original));
        var patched = LibStdCxxCompatPatch.Patch(original, bridge!);
        Assert.AreEqual(original.Length, patched.Length);
        Assert.IsFalse(LibStdCxxCompatPatch.NeedsPatch(patched));
        int changed = original.Zip(patched).Count(p => p.First != p.Second);
        Console.WriteLine($"bytes changed: {changed} of {original.Length}");
        // 4 bytes of hash + 2 characters of the version name + at most the symbol name's length.
        Assert.IsTrue(changed <= 4 + 2 + LibStdCxxCompatPatch.MissingSymbol.Length, $"{changed} bytes changed");
        Assert.ThrowsExactly<InvalidDataException>(() => LibStdCxxCompatPatch.Patch(patched, "already-patched.so"));
    }

    [TestMethod]
    public void ElfHashMatchesTheSystemVDefinition()
    {
        // vna_hash values the GNU linker wrote into libLibTorchSharp.so for these version names.
        Assert.AreEqual(0x08922974u, LibStdCxxCompatPatch.ElfHash("GLIBCXX_3.4"));
        Assert.AreEqual(0x0297f870u, LibStdCxxCompatPatch.ElfHash("GLIBCXX_3.4.20"));
        Assert.AreEqual(0x09691a75u, LibStdCxxCompatPatch.ElfHash("GLIBC_2.2.5"));
    }

    [TestMethod]
    public void CpuIsChosenWithoutAGpuRequestAndAMissingGpuIsAnErrorUnlessFallbackIsAllowed()
    {
        Assert.AreEqual(DeviceType.CPU, ComputeDevice.Select(null, fallbackToCpu: false).type);
        if (cuda.is_available()) Assert.Inconclusive("CUDA is available here; the no-GPU paths cannot be checked");
        Assert.AreEqual(DeviceType.CPU, ComputeDevice.Select(0, fallbackToCpu: true).type);
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => ComputeDevice.Select(0, fallbackToCpu: false));
        StringAssert.Contains(error.Message, "FallbackToCpu");
    }
}
