using TorchSharp;

namespace MLNet.FineTune.Runtime;

/// <summary>Chooses the TorchSharp device the way ML.NET's own TorchSharp trainers do.</summary>
internal static class ComputeDevice
{
    /// <summary>
    /// CUDA device <paramref name="gpuDeviceId"/> when one was asked for and CUDA is available (the application carries
    /// a CUDA backend and a GPU exists); otherwise the CPU, unless a GPU was asked for and
    /// <paramref name="fallbackToCpu"/> is false, which is an error.
    /// </summary>
    /// <param name="gpuDeviceId">MLContext.GpuDeviceId: null asks for the CPU.</param>
    /// <param name="fallbackToCpu">MLContext.FallbackToCpu.</param>
    public static torch.Device Select(int? gpuDeviceId, bool fallbackToCpu)
    {
        TorchRuntime.EnsureLoaded();
        if (gpuDeviceId is null) return torch.CPU;
        if (torch.cuda.is_available())
        {
            int count = torch.cuda.device_count();
            if (gpuDeviceId < 0 || gpuDeviceId >= count)
                throw new ArgumentOutOfRangeException(nameof(gpuDeviceId), gpuDeviceId,
                    $"MLContext.GpuDeviceId is {gpuDeviceId} but CUDA reports {count} device(s).");
            return new torch.Device(DeviceType.CUDA, gpuDeviceId.Value);
        }
        if (fallbackToCpu) return torch.CPU;
        throw new InvalidOperationException(
            $"MLContext.GpuDeviceId is {gpuDeviceId} but CUDA is not available (the application needs a CUDA backend " +
            "package such as TorchSharp-cuda-linux or TorchSharp-cuda-windows, and a GPU). Set MLContext.FallbackToCpu = true to train on the CPU instead.");
    }
}
