using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Rotary position embedding settings (Su et al. 2021, RoFormer), read from either spelling of config.json:
/// transformers 5's <c>rope_parameters</c> {rope_theta, rope_type, ...} or 4's <c>rope_theta</c> + <c>rope_scaling</c>
/// {type | rope_type, factor, ...}.
/// </summary>
/// <param name="RopeType">"default", "linear" (position interpolation) or "llama3" (Llama 3.1 frequency-dependent scaling).</param>
/// <param name="Theta">Base of the frequencies (10000 in the paper; 500000 in Llama 3; 1e6 in Qwen2).</param>
/// <param name="Factor">Context extension factor (linear, llama3).</param>
/// <param name="LowFreqFactor">llama3: wavelengths above original/low are divided by the factor.</param>
/// <param name="HighFreqFactor">llama3: wavelengths below original/high are kept.</param>
/// <param name="OriginalMaxPositionEmbeddings">llama3: the pretraining context length.</param>
internal sealed record RopeParameters(string RopeType, double Theta, double Factor = 1, double LowFreqFactor = 1,
    double HighFreqFactor = 4, int OriginalMaxPositionEmbeddings = 8192)
{
    /// <summary>The types this library computes.</summary>
    public static IReadOnlyList<string> SupportedTypes { get; } = ["default", "linear", "llama3"];

    /// <summary>Reads the RoPE settings of a config (both spellings); theta defaults to 10000.</summary>
    /// <exception cref="NotSupportedException">A rope type outside <see cref="SupportedTypes"/>, or partial rotary.</exception>
    public static RopeParameters FromConfig(HfConfig config)
    {
        // transformers 5 folds theta and scaling into one object; 4 keeps theta at the top and scaling apart.
        var parameters = config["rope_parameters"] as JsonObject ?? config["rope_scaling"] as JsonObject;
        string source = config.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
        double theta = Number(config.FirstOf("rope_parameters.rope_theta", "rope_theta")) ?? 10000.0;
        string type = (parameters?["rope_type"] ?? parameters?["type"])?.GetValue<string>() ?? "default";
        if (!SupportedTypes.Contains(type))
            throw new NotSupportedException(
                $"{config.Path}: {source} has rope type '{type}', which is not supported; supported: {string.Join(", ", SupportedTypes)}.");
        double partial = Number(config.FirstOf("rope_parameters.partial_rotary_factor", "partial_rotary_factor")) ?? 1.0;
        if (partial != 1.0)
            throw new NotSupportedException($"{config.Path}: partial_rotary_factor {partial} is not supported (rotary over the whole head only).");
        double Get(string key, double fallback) => Number(parameters?[key]) ?? fallback;
        double factor = Get("factor", 1.0);
        if (type != "default" && parameters?["factor"] is null)
            throw new InvalidDataException($"{config.Path}: {source} of type '{type}' has no 'factor'.");
        return new RopeParameters(type, theta, factor, Get("low_freq_factor", 1.0), Get("high_freq_factor", 4.0),
            (int)Get("original_max_position_embeddings", 8192));
    }

    private static double? Number(JsonNode? node) => node is null ? null : node.GetValue<double>();

    /// <summary>
    /// The inverse frequencies (D / 2) for head size D, computed in float32 with torch as transformers does:
    /// 1 / theta^(2i / D); linear divides them by the factor; llama3 divides low frequencies (wavelength &gt;
    /// original / low_freq_factor) by the factor, keeps high ones (wavelength &lt; original / high_freq_factor) and
    /// blends in between with s = (original / wavelength - low) / (high - low): (1 - s) f / factor + s f.
    /// </summary>
    public float[] InverseFrequencies(int headDim)
    {
        using var scope = NewDisposeScope();
        var exponent = arange(0, headDim, 2, ScalarType.Int64).to_type(ScalarType.Float32) / headDim;   // (D / 2)
        var inverse = 1.0 / pow(tensor((float)Theta), exponent);
        switch (RopeType)
        {
            case "linear":
                inverse = inverse / Factor;
                break;
            case "llama3":
                double lowWavelength = OriginalMaxPositionEmbeddings / LowFreqFactor;
                double highWavelength = OriginalMaxPositionEmbeddings / HighFreqFactor;
                var wavelength = 2 * Math.PI / inverse;
                var scaled = where(wavelength.gt(lowWavelength), inverse / Factor, inverse);
                var smooth = (OriginalMaxPositionEmbeddings / wavelength - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
                var blended = (1 - smooth) * scaled / Factor + smooth * scaled;
                var medium = wavelength.ge(highWavelength).logical_and(wavelength.le(lowWavelength));
                inverse = where(medium, blended, scaled);
                break;
        }
        return inverse.to_type(ScalarType.Float32).data<float>().ToArray();
    }
}

/// <summary>Applies rotary position embedding in the rotate-half convention of Hugging Face's Llama checkpoints.</summary>
internal sealed class RotaryEmbedding(float[] inverseFrequencies)
{
    /// <summary>The inverse frequencies (D / 2), float32. Not a buffer: they stay float32 whatever the model's dtype.</summary>
    public float[] InverseFrequencies { get; } = inverseFrequencies;

    /// <summary>cos and sin (B, T, D) for positions (B, T), computed in float32 then cast to the activations' dtype.</summary>
    public (Tensor Cos, Tensor Sin) CosSin(Tensor positionIds, ScalarType dtype)
    {
        var inverse = tensor(InverseFrequencies, device: positionIds.device);                                    // (D / 2)
        var angles = positionIds.to_type(ScalarType.Float32).unsqueeze(-1) * inverse.unsqueeze(0).unsqueeze(0);   // (B, T, D / 2)
        var both = cat([angles, angles], dim: -1);                                                               // (B, T, D)
        return (both.cos().to_type(dtype), both.sin().to_type(dtype));
    }

    /// <summary>x (B, H, T, D) rotated: x cos + rotate_half(x) sin, where rotate_half(x) = [-x2, x1].</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        long half = x.shape[^1] / 2;
        var rotated = cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], dim: -1);
        return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
    }
}
