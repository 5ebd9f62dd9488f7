using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>
/// Dropout as every model family and PEFT layer applies it (Srivastava et al. 2014, inverted): in training each element
/// is zeroed with probability p and the kept ones are multiplied by 1/(1-p) (rounded to the input's dtype, as libtorch
/// does), so the expected output equals the input; the identity in eval mode and for p = 0. The gradient flows through
/// the same mask. On the CPU the mask is drawn by <see cref="DropoutMask"/>, 30-50x faster than libtorch's
/// <c>bernoulli_</c> (see there; forward + backward 3-10x faster, docs/performance.md); on other devices libtorch's own
/// (fused) dropout runs.
/// </summary>
internal sealed class InvertedDropout : nn.Module<Tensor, Tensor>
{
    /// <summary>A dropout layer; it has no parameters, so it adds nothing to <c>state_dict()</c>.</summary>
    /// <param name="p">Probability of zeroing an element, in [0, 1].</param>
    public InvertedDropout(double p) : base(nameof(InvertedDropout))
    {
        CheckProbability(p, nameof(p));
        P = p;
    }

    /// <summary>Probability of zeroing an element.</summary>
    public double P { get; }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input) => Apply(input, P, training);

    /// <summary>Dropout of <paramref name="input"/> with probability <paramref name="p"/> when <paramref name="training"/>;
    /// otherwise (or for p = 0) an alias of the input, unchanged.</summary>
    public static Tensor Apply(Tensor input, double p, bool training)
    {
        CheckProbability(p, nameof(p));
        if (!training || p == 0 || input.numel() == 0) return input.alias();
        if (p == 1) return input * zeros_like(input);
        if (input.device_type != DeviceType.CPU || !DropoutMask.Supports(input.dtype, input.numel()))
            return nn.functional.dropout(input, p, training: true);
        using var mask = DropoutMask.Draw(input.shape, input.dtype, p);                      // input's shape, 0 or 1/(1-p)
        return input * mask;                                                                  // autograd keeps mask for the gradient
    }

    private static void CheckProbability(double p, string name)
    {
        if (!(p >= 0 && p <= 1)) throw new ArgumentOutOfRangeException(name, p, "Dropout probability must be in [0, 1].");
    }
}

/// <summary>
/// Dropout masks on the CPU. libtorch draws its CPU dropout mask with <c>bernoulli_</c>, one element at a time from its
/// Mersenne twister under a lock: 6-9 ns per element on one core whatever the dtype, 25-40 times the multiply that
/// applies the mask, so on a bf16 model dropout cost as much as the rest of a training step. Here one 64-bit seed is
/// drawn from torch's default generator (so <c>torch.manual_seed</c> makes masks reproducible and later draws move on),
/// and element i takes 32 bits of SplitMix64 (Steele, Lea and Flood 2014) at counter i / 2 + 1: a counter-based
/// generator, vectorised, drawn on the calling thread (about 0.2 ns per element). An element is zeroed when its 32 bits
/// fall below round(p 2^32), so the drop probability is p to within 2^-33.
/// </summary>
internal static class DropoutMask
{
    private const ulong Gamma = 0x9E3779B97F4A7C15;        // SplitMix64's increment (the golden ratio in 64 bits)

    /// <summary>Whether a mask of <paramref name="count"/> elements in <paramref name="dtype"/> is drawn here: bfloat16,
    /// float16, float32 or float64, at most 2 GB (the span TorchSharp gives over a tensor's memory).</summary>
    public static bool Supports(ScalarType dtype, long count) =>
        (dtype is ScalarType.BFloat16 or ScalarType.Float16 or ScalarType.Float32 or ScalarType.Float64) &&
        count * (dtype == ScalarType.Float64 ? 8 : dtype == ScalarType.Float32 ? 4 : 2) <= int.MaxValue;

    /// <summary>A new contiguous CPU tensor of <paramref name="shape"/> in <paramref name="dtype"/> whose elements are 0
    /// with probability <paramref name="p"/> (0 &lt; p &lt; 1) and 1/(1-p) in <paramref name="dtype"/> otherwise.</summary>
    public static Tensor Draw(ReadOnlySpan<long> shape, ScalarType dtype, double p)
    {
        long count = 1;
        foreach (var size in shape) count *= size;
        if (!Supports(dtype, count)) throw new ArgumentException($"Dropout masks are drawn for floating-point dtypes up to 2 GB, not {count} elements of {dtype}.", nameof(dtype));
        if (!(p > 0 && p < 1)) throw new ArgumentOutOfRangeException(nameof(p), p, "The drop probability of a mask must be in (0, 1).");
        ulong seed = (ulong)randint(0L, long.MaxValue, [1L], ScalarType.Int64).item<long>();
        uint threshold = (uint)Math.Min(Math.Round(p * 4294967296.0), uint.MaxValue);
        var mask = empty(shape, dtype);
        switch (mask.element_size())
        {
            case 2: Fill<ushort>(mask, count, seed, threshold, KeptBits<ushort>(dtype, p)); break;
            case 4: Fill<uint>(mask, count, seed, threshold, KeptBits<uint>(dtype, p)); break;
            default: Fill<ulong>(mask, count, seed, threshold, KeptBits<ulong>(dtype, p)); break;
        }
        return mask;
    }

    /// <summary>The bit pattern of 1/(1-p) in <paramref name="dtype"/>, rounded by torch as its own dropout rounds it.</summary>
    private static T KeptBits<T>(ScalarType dtype, double p) where T : unmanaged
    {
        using var value = tensor(1.0 / (1.0 - p), ScalarType.Float64).to_type(dtype);
        return MemoryMarshal.Read<T>(value.bytes);
    }

    /// <summary>Element i of <paramref name="mask"/> (n elements) is kept when half i % 2 (the low half first) of
    /// SplitMix64's output at counter i / 2 + 1 is at least <paramref name="threshold"/>. One thread: the mask costs less
    /// than the multiply that applies it.</summary>
    private static unsafe void Fill<T>(Tensor mask, long n, ulong seed, uint threshold, T kept) where T : unmanaged
    {
        var data = (T*)Unsafe.AsPointer(ref mask.bytes.GetPinnableReference());   // libtorch's memory: it does not move
        long i = 0;
        if (typeof(T) != typeof(ulong) && Vector.IsHardwareAccelerated)
        {
            // Each Vector<ulong> of SplitMix64 outputs decides 2 lanes elements (its 32-bit halves, in memory order); a
            // 2-byte dtype narrows two of them into one store.
            int lanes = Vector<ulong>.Count, perStep = typeof(T) == typeof(ushort) ? 4 * lanes : 2 * lanes;
            Span<ulong> first = stackalloc ulong[lanes];
            for (int k = 0; k < lanes; k++) first[k] = seed + (ulong)(1 + k) * Gamma;
            var state = new Vector<ulong>(first);
            var step = new Vector<ulong>((ulong)lanes * Gamma);
            var limit = new Vector<uint>(threshold);
            if (typeof(T) == typeof(uint))
            {
                var value = new Vector<uint>(Unsafe.As<T, uint>(ref kept));
                for (; i + perStep <= n; i += perStep, state += step)
                    Unsafe.WriteUnaligned(data + i, Vector.GreaterThanOrEqual(Vector.AsVectorUInt32(Mix(state)), limit) & value);
            }
            else
            {
                var value = new Vector<ushort>(Unsafe.As<T, ushort>(ref kept));
                for (; i + perStep <= n; i += perStep)
                {
                    var low = Vector.GreaterThanOrEqual(Vector.AsVectorUInt32(Mix(state)), limit);
                    state += step;
                    var high = Vector.GreaterThanOrEqual(Vector.AsVectorUInt32(Mix(state)), limit);
                    state += step;
                    Unsafe.WriteUnaligned(data + i, Vector.Narrow(low, high) & value);
                }
            }
        }
        for (; i < n; i++)
        {
            ulong bits = Mix(seed + (ulong)(i / 2 + 1) * Gamma);
            uint half = (i & 1) == 0 ? (uint)bits : (uint)(bits >> 32);
            data[i] = half >= threshold ? kept : default;
        }
    }

    // SplitMix64's output function (Stafford's "Mix13" finaliser).
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }

    private static Vector<ulong> Mix(Vector<ulong> z)
    {
        z = (z ^ Vector.ShiftRightLogical(z, 30)) * new Vector<ulong>(0xBF58476D1CE4E5B9);
        z = (z ^ Vector.ShiftRightLogical(z, 27)) * new Vector<ulong>(0x94D049BB133111EB);
        return z ^ Vector.ShiftRightLogical(z, 31);
    }
}
