using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>
/// A variant of LoRA's computation inside <see cref="LoraLinear"/> (PEFT's <c>LoraVariant</c>): its extra parameter,
/// its forward and its merge. Plain LoRA has none; DoRA is one (Peft/Lora/Dora). One instance per layer, so a variant
/// may keep per-layer state (DoRA's norm at merge time).
/// </summary>
internal interface ILoraVariant
{
    /// <summary>The variant's trained tensor, created after A and B are initialised (under no_grad), saved as
    /// <c>lora_magnitude_vector</c>; null when it has none.</summary>
    Parameter? CreateParameter(LoraLinear layer, ScalarType adapterDType);

    /// <summary>The layer's output given the base output <paramref name="result"/> (..., out) and A, B cast to the
    /// compute dtype.</summary>
    Tensor Forward(LoraLinear layer, Tensor x, Tensor result, Tensor a, Tensor b);

    /// <summary>The merged weight (out, in) from the base weight and scaling * B A, both float32.</summary>
    Tensor Merge(LoraLinear layer, Tensor weightOutIn, Tensor delta);

    /// <summary>The base weight (out, in) back from the merged weight and scaling * B A.</summary>
    Tensor Unmerge(LoraLinear layer, Tensor mergedOutIn, Tensor delta);
}
