using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Models;

/// <summary>What loading a checkpoint into a model did: never silent about keys that did not match.</summary>
/// <param name="Loaded">Model keys filled from the checkpoint.</param>
/// <param name="Missing">Model keys the checkpoint lacks (they keep their initialisation, e.g. a new task head).</param>
/// <param name="Unexpected">Checkpoint keys the model has no place for (e.g. a pretraining head).</param>
internal sealed record WeightLoadReport(IReadOnlyList<string> Loaded, IReadOnlyList<string> Missing, IReadOnlyList<string> Unexpected)
{
    /// <summary>A one-paragraph summary for logs.</summary>
    public override string ToString() =>
        $"loaded {Loaded.Count} tensors; missing (newly initialised) {Missing.Count}{List(Missing)}; unexpected (ignored) {Unexpected.Count}{List(Unexpected)}";

    /// <summary>
    /// An error unless the checkpoint supplied every weight of the model, except those under <paramref name="mayStartNew"/>
    /// (module paths such as a new task head, which start from random values as in transformers): a missing weight
    /// means the folder holds another family's checkpoint, other key names or an incomplete file, and the model would
    /// silently run or train with random weights there.
    /// </summary>
    /// <param name="source">What loaded, for the message (e.g. the folder).</param>
    /// <param name="modelType">config.json's model_type.</param>
    /// <param name="mayStartNew">Module paths whose weights may be missing.</param>
    /// <param name="hint">A last sentence: what to check.</param>
    /// <returns>Null, or the error naming the source, the first missing keys and the first unknown ones.</returns>
    public InvalidDataException? MissingWeightsError(string source, string modelType, IEnumerable<string> mayStartNew, string hint)
    {
        var allowed = mayStartNew.Select(m => m + ".").ToList();
        var missing = Missing.Where(key => !allowed.Any(m => key.StartsWith(m, StringComparison.Ordinal))).ToList();
        if (missing.Count == 0) return null;
        var unknown = Unexpected.Count == 0 ? "" :
            $" The checkpoint has {Unexpected.Count} key(s) the model does not know, first: {string.Join(", ", Unexpected.Take(3))}.";
        return new InvalidDataException(
            $"{source}: the checkpoint lacks {missing.Count} weight(s) of the {modelType} model, first: {string.Join(", ", missing.Take(5))}.{unknown} {hint}");
    }

    private static string List(IReadOnlyList<string> keys) =>
        keys.Count == 0 ? "" : ": " + string.Join(", ", keys.Take(8)) + (keys.Count > 8 ? ", ..." : "");
}

/// <summary>Copies Hugging Face state-dict tensors into a model whose keys are Hugging Face's.</summary>
internal static class WeightLoader
{
    /// <summary>
    /// Copies every checkpoint tensor whose key the model has into the model (converting dtype and device), as
    /// transformers' <c>from_pretrained</c> does: a base checkpoint loads into a task model by adding
    /// <paramref name="basePrefix"/>, and a task checkpoint into a base model by removing it.
    /// </summary>
    /// <exception cref="InvalidDataException">A key's shape differs between model and checkpoint (names both).</exception>
    public static WeightLoadReport Load(nn.Module model, IReadOnlyDictionary<string, Tensor> checkpoint, string? basePrefix, string sourceName = "checkpoint")
    {
        var target = model.state_dict();
        var mapped = MapKeys(target.Keys, checkpoint.Keys, basePrefix);
        var loaded = new List<string>();
        using (no_grad())
        {
            foreach (var (checkpointKey, modelKey) in mapped)
            {
                var destination = target[modelKey];
                var source = checkpoint[checkpointKey];
                if (!destination.shape.SequenceEqual(source.shape))
                    throw new InvalidDataException(
                        $"{sourceName}: '{checkpointKey}' has shape [{string.Join(", ", source.shape)}] but the model's '{modelKey}' is [{string.Join(", ", destination.shape)}]. " +
                        "The config does not describe these weights (a checkpoint of another model?).");
                destination.copy_(source);
                loaded.Add(modelKey);
            }
        }
        var loadedSet = loaded.ToHashSet();
        var missing = target.Keys.Where(k => !loadedSet.Contains(k)).ToList();
        var usedCheckpointKeys = mapped.Select(m => m.CheckpointKey).ToHashSet();
        var unexpected = checkpoint.Keys.Where(k => !usedCheckpointKeys.Contains(k)).ToList();
        return new WeightLoadReport(loaded, missing, unexpected);
    }

    private static List<(string CheckpointKey, string ModelKey)> MapKeys(IEnumerable<string> modelKeys, IEnumerable<string> checkpointKeys, string? basePrefix)
    {
        var model = modelKeys.ToHashSet();
        var result = new List<(string, string)>();
        string prefix = string.IsNullOrEmpty(basePrefix) ? "" : basePrefix + ".";
        bool modelHasPrefix = prefix != "" && model.Any(k => k.StartsWith(prefix, StringComparison.Ordinal));
        foreach (var key in checkpointKeys)
        {
            if (model.Contains(key)) result.Add((key, key));
            else if (modelHasPrefix && model.Contains(prefix + key)) result.Add((key, prefix + key));
            else if (prefix != "" && key.StartsWith(prefix, StringComparison.Ordinal) && model.Contains(key[prefix.Length..])) result.Add((key, key[prefix.Length..]));
        }
        return result;
    }
}
