using MLNet.FineTune.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>The weights half of PEFT's adapter folder: <c>adapter_model.safetensors</c>, keys
/// <c>base_model.model.&lt;module path&gt;.&lt;adapter tensor&gt;</c>.</summary>
internal static class PeftAdapterFile
{
    /// <summary>PEFT's weights file name.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";

    // Tensor names that live on an adapted layer (the rest of a key is the layer's module path).
    // Keys of an adapter layer's own tensors end with one of these (each method names its own), so the rest of the key
    // is the wrapped linear layer's path.
    private static IEnumerable<string> LayerSuffixes => PeftMethods.All.SelectMany(m => m.AdapterTensorNames).Append("base_layer.bias");

    /// <summary>Reads the adapter's tensors onto the CPU, as stored.</summary>
    /// <exception cref="FileNotFoundException">No safetensors file (a pickle-only <c>adapter_model.bin</c> is named
    /// as unsupported).</exception>
    public static Dictionary<string, Tensor> ReadWeights(string folder)
    {
        var path = Path.Combine(folder, WeightsFileName);
        if (!File.Exists(path))
        {
            var bin = Path.Combine(folder, "adapter_model.bin");
            throw new FileNotFoundException(File.Exists(bin)
                ? $"{folder} holds adapter_model.bin (a pickle), which this library does not read: save the adapter with safe_serialization=True."
                : $"Adapter weights not found: {path}.", path);
        }
        return SafeTensors.Load(path);
    }

    /// <summary>Checks, before the model is touched, that every key of an adapter names a module or parameter the
    /// model has; throws naming the first key (in sorted order) that does not.</summary>
    /// <exception cref="InvalidDataException">A key that does not fit (an adapter for another base model?).</exception>
    public static void CheckPathsFit(nn.Module model, IEnumerable<string> keys, string source)
    {
        var modules = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var stateKeys = model.state_dict().Keys.ToHashSet(StringComparer.Ordinal);
        foreach (var key in keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            if (!key.StartsWith(PeftModel.KeyPrefix, StringComparison.Ordinal))
                throw new InvalidDataException($"{source}: key '{key}' is not a PEFT adapter key (expected '{PeftModel.KeyPrefix}<module path>.<tensor>').");
            var rest = key[PeftModel.KeyPrefix.Length..];
            var suffix = LayerSuffixes.FirstOrDefault(s => rest.EndsWith("." + s, StringComparison.Ordinal));
            if (suffix is not null)
            {
                var path = rest[..^(suffix.Length + 1)];
                if (!modules.TryGetValue(path, out var module))
                    throw new InvalidDataException($"{source}: key '{key}' does not fit this model: it has no module '{path}'. The adapter was made for another base model (its modules: {Describe(modules.Keys)}).");
                if (BaseLinear.TryCreate(module) is null)
                    throw new InvalidDataException($"{source}: key '{key}' does not fit this model: '{path}' is a {module.GetType().Name}, not a linear layer.");
            }
            else if (!stateKeys.Contains(rest))
                throw new InvalidDataException($"{source}: key '{key}' does not fit this model: it has no parameter '{rest}'. The adapter was made for another base model.");
        }
    }

    /// <summary>Copies an adapter file's tensors into the injected model's adapter tensors (converting dtype),
    /// after checking that the key sets agree and every shape fits (<see cref="CheckFits"/>).</summary>
    /// <exception cref="InvalidDataException">The first key whose shape differs, or that the injected model lacks, or
    /// the first tensor the file lacks.</exception>
    public static void CopyInto(IReadOnlyDictionary<string, Tensor> destination, IReadOnlyDictionary<string, Tensor> file, string source)
    {
        CheckFits(destination, file, source);
        using (no_grad())
            foreach (var (key, tensor) in file)
                destination[key].copy_(tensor);
    }

    /// <summary>Checks that an adapter file's tensors and the adapter tensors they are meant for have the same keys
    /// and shapes; throws naming the first key (in sorted order) that does not fit.</summary>
    /// <exception cref="InvalidDataException">The first key whose shape differs, or that the adapter lacks, or the
    /// first tensor the file lacks.</exception>
    public static void CheckFits(IReadOnlyDictionary<string, Tensor> destination, IReadOnlyDictionary<string, Tensor> file, string source)
    {
        foreach (var key in file.Keys.OrderBy(k => k, StringComparer.Ordinal))
        {
            if (!destination.TryGetValue(key, out var target))
                throw new InvalidDataException($"{source}: key '{key}' does not fit this model: the config's targets did not create it (the file and adapter_config.json disagree?).");
            if (!target.shape.SequenceEqual(file[key].shape))
                throw new InvalidDataException(
                    $"{source}: key '{key}' has shape [{string.Join(", ", file[key].shape)}] but this model's is [{string.Join(", ", target.shape)}]. The adapter was made for another base model (or another rank).");
        }
        var missing = destination.Keys.Where(k => !file.ContainsKey(k)).OrderBy(k => k, StringComparer.Ordinal).FirstOrDefault();
        if (missing is not null)
            throw new InvalidDataException($"{source}: the adapter lacks '{missing}', which its config calls for on this model.");
    }

    private static string Describe(IEnumerable<string> names)
    {
        var list = names.Take(6).ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list) + ", ...";
    }
}
