using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace MLNet.FineTune.Checkpoints;

/// <summary>Reads the weights of a Hugging Face model folder: <c>model.safetensors</c> or a sharded
/// <c>model.safetensors.index.json</c>, F32/F16/BF16 converted to the requested dtype.</summary>
internal static class HfCheckpoint
{
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>The weight files of a folder (one file, or the shards its index names).</summary>
    public static IReadOnlyList<string> WeightFiles(string folder)
    {
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Model folder not found: {folder}");
        var single = Path.Combine(folder, SingleFile);
        if (File.Exists(single)) return [single];
        var index = Path.Combine(folder, IndexFile);
        if (File.Exists(index)) return ReadIndex(index).Values.Distinct().Select(f => Path.Combine(folder, f)).ToList();
        var legacy = new[] { "pytorch_model.bin", "model.pt", "tf_model.h5" }.Where(f => File.Exists(Path.Combine(folder, f))).ToList();
        throw new FileNotFoundException(
            $"No weights in {folder}: expected {SingleFile} or {IndexFile}." +
            (legacy.Count > 0 ? $" Found {string.Join(", ", legacy)}, which this library does not read (pickle or other formats); save the model with safe_serialization=True." : ""));
    }

    /// <summary>Loads the state dict of a folder onto the CPU.</summary>
    /// <param name="folder">The model folder.</param>
    /// <param name="dtype">Floating-point tensors are converted to this type; null keeps the stored types.</param>
    public static Dictionary<string, Tensor> Load(string folder, ScalarType? dtype = null)
    {
        var index = Path.Combine(folder, IndexFile);
        if (!File.Exists(Path.Combine(folder, SingleFile)) && File.Exists(index))
        {
            var map = ReadIndex(index);
            var result = new Dictionary<string, Tensor>();
            foreach (var shard in map.Values.Distinct())
            {
                var path = Path.Combine(folder, shard);
                if (!File.Exists(path)) throw new FileNotFoundException($"{index} names shard {shard}, which is missing.", path);
                foreach (var (name, tensor) in SafeTensors.Load(path, dtype, n => map.TryGetValue(n, out var f) && f == shard))
                    result[name] = tensor;
            }
            var missing = map.Keys.Where(k => !result.ContainsKey(k)).ToList();
            if (missing.Count > 0)
            {
                foreach (var t in result.Values) t.Dispose();
                throw new InvalidDataException($"{index} maps {missing.Count} tensor(s) to shards that do not contain them, first: '{missing[0]}' in {map[missing[0]]}.");
            }
            return result;
        }
        return SafeTensors.Load(WeightFiles(folder)[0], dtype);
    }

    private static Dictionary<string, string> ReadIndex(string path)
    {
        try
        {
            var weightMap = JsonNode.Parse(File.ReadAllText(path))?["weight_map"] as JsonObject
                ?? throw new InvalidDataException($"{path} has no 'weight_map'.");
            return weightMap.ToDictionary(p => p.Key, p => p.Value!.GetValue<string>());
        }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e); }
    }
}
