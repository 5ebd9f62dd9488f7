using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>One row of a <see cref="WeightMemory"/> report: the tensors of one storage kind.</summary>
/// <param name="Kind">"bfloat16", "float32", "nf4 codes", "nf4 state" (block maxima and code maps), ...</param>
/// <param name="Tensors">How many tensors.</param>
/// <param name="Values">Logical values they hold (a packed byte holds two 4-bit values).</param>
/// <param name="Bytes">Bytes of their storage, numel x element size.</param>
public sealed record WeightMemoryRow(string Kind, long Tensors, long Values, long Bytes);

/// <summary>
/// Bytes of a model's weights by storage kind, measured from its tensors: the frozen base (float weights by dtype,
/// 4-bit codes, quantization state) and, apart, the adapter's parameters. Print it with <see cref="ToString"/>.
/// </summary>
public sealed class WeightMemory
{
    private WeightMemory(IReadOnlyList<WeightMemoryRow> baseRows, WeightMemoryRow adapter)
    {
        BaseRows = baseRows;
        Adapter = adapter;
    }

    /// <summary>Base weights (every parameter and persistent buffer not belonging to an adapter), one row per kind.</summary>
    public IReadOnlyList<WeightMemoryRow> BaseRows { get; }

    /// <summary>The adapter's parameters (lora_A, lora_B, magnitudes, ...), all dtypes together.</summary>
    public WeightMemoryRow Adapter { get; }

    /// <summary>Bytes of all base weights.</summary>
    public long BaseBytes => BaseRows.Sum(r => r.Bytes);

    /// <summary>Bytes of the base weights of one kind (0 when absent).</summary>
    public long BytesOf(string kind) => BaseRows.Where(r => r.Kind == kind).Sum(r => r.Bytes);

    /// <summary>Measures <paramref name="model"/>'s tensors.</summary>
    public static WeightMemory Measure(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var adapterHandles = model.modules().OfType<AdaptedLinear>()
            .SelectMany(l => l.AdapterParameters()).Select(p => p.Parameter.Handle).ToHashSet();
        var packedHandles = new Dictionary<IntPtr, FourBitType>();
        var stateHandles = new Dictionary<IntPtr, FourBitType>();
        foreach (var module in model.modules().Prepend(model))
        {
            if (QuantizedWeights.StateOf(module) is not { } state) continue;
            var packed = module.named_parameters(recurse: false).First(p => p.name == "weight").parameter;
            packedHandles[packed.Handle] = state.QuantType;
            foreach (var (_, buffer) in state.named_buffers()) stateHandles[buffer.Handle] = state.QuantType;
        }

        var rows = new Dictionary<string, (long Tensors, long Values, long Bytes)>(StringComparer.Ordinal);
        (long Tensors, long Values, long Bytes) adapter = default;
        var seen = new HashSet<IntPtr>();
        foreach (var (_, t) in model.state_dict())
        {
            if (!seen.Add(t.Handle)) continue;   // tied weights count once
            long bytes = t.numel() * t.element_size();
            if (adapterHandles.Contains(t.Handle))
            {
                adapter = (adapter.Tensors + 1, adapter.Values + t.numel(), adapter.Bytes + bytes);
                continue;
            }
            string kind;
            long values = t.numel();
            if (packedHandles.TryGetValue(t.Handle, out var type)) { kind = $"{type.ToString().ToLowerInvariant()} codes"; values *= 2; }
            else if (stateHandles.TryGetValue(t.Handle, out type)) kind = $"{type.ToString().ToLowerInvariant()} state";
            else kind = t.dtype.ToString().ToLowerInvariant();
            var r = rows.GetValueOrDefault(kind);
            rows[kind] = (r.Tensors + 1, r.Values + values, r.Bytes + bytes);
        }
        return new WeightMemory(
            rows.OrderByDescending(r => r.Value.Bytes).Select(r => new WeightMemoryRow(r.Key, r.Value.Tensors, r.Value.Values, r.Value.Bytes)).ToList(),
            new WeightMemoryRow("adapter", adapter.Tensors, adapter.Values, adapter.Bytes));
    }

    /// <summary>A markdown table: one row per base kind, the base total (its bits per value include the quantization
    /// state), the adapter.</summary>
    public override string ToString()
    {
        var lines = new List<string> { "| weights | tensors | values | MiB | bits/value |", "|---|---:|---:|---:|---:|" };
        foreach (var r in BaseRows) lines.Add(Row(r));
        lines.Add(Row(new WeightMemoryRow("base total", BaseRows.Sum(r => r.Tensors), BaseRows.Where(r => !r.Kind.EndsWith(" state", StringComparison.Ordinal)).Sum(r => r.Values), BaseBytes)));
        lines.Add(Row(Adapter));
        return string.Join(Environment.NewLine, lines);
    }

    private static string Row(WeightMemoryRow r) =>
        $"| {r.Kind} | {r.Tensors} | {r.Values:N0} | {r.Bytes / 1048576.0:F2} | {(r.Values == 0 || r.Kind.EndsWith(" state", StringComparison.Ordinal) ? "-" : (8.0 * r.Bytes / r.Values).ToString("F2"))} |";
}
