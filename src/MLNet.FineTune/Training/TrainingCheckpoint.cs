using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Training;

/// <summary>Everything in a checkpoint besides tensors: where training stands and what it was configured with.</summary>
internal sealed record CheckpointState
{
    public int FormatVersion { get; init; } = TrainingCheckpoint.FormatVersion;
    /// <summary>Optimizer steps completed (also the scheduler position).</summary>
    public long GlobalStep { get; init; }
    /// <summary>0-based epoch of the next micro-batch.</summary>
    public int Epoch { get; init; }
    /// <summary>Index of the next micro-batch in that epoch's order.</summary>
    public int NextBatchInEpoch { get; init; }
    public long TotalSteps { get; init; }
    // What the data order depends on: a resume with other values would visit other examples.
    public int Seed { get; init; }
    public int ExampleCount { get; init; }
    public int BatchSize { get; init; }
    public int GradientAccumulationSteps { get; init; }
    public bool LengthBucketing { get; init; }
    public int LengthBucketingMegaBatches { get; init; }
    // Early stopping and best-model tracking.
    public string? MetricName { get; init; }
    public bool HigherIsBetter { get; init; }
    public double? BestMetric { get; init; }
    public long? BestStep { get; init; }
    public int PatienceCounter { get; init; }
    public List<TrainingStepRecord> History { get; init; } = [];
    /// <summary>What identifies the run (<see cref="TrainingSetup.RunFingerprint"/>); null when the setup gave none.</summary>
    public Dictionary<string, string>? RunFingerprint { get; init; }
}

/// <summary>
/// A resumable training checkpoint: a folder <c>checkpoint-&lt;step&gt;</c> holding the trainable weights
/// (<c>trainable.safetensors</c>), the AdamW moments and step (<c>optimizer.safetensors</c>), TorchSharp's CPU
/// generator state (<c>rng_state.safetensors</c>), the best weights so far when tracked (<c>best.safetensors</c>) and
/// <c>trainer_state.json</c> (step, data-order position, early-stopping state, history). The folder is written under a
/// temporary name and renamed into place, so a crash never leaves a half-written checkpoint under the final name.
/// </summary>
internal static class TrainingCheckpoint
{
    public const int FormatVersion = 1;
    public const string StateFile = "trainer_state.json", WeightsFile = "trainable.safetensors", OptimizerFile = "optimizer.safetensors",
        RngFile = "rng_state.safetensors", BestFile = "best.safetensors", FolderPrefix = "checkpoint-";

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // NaN losses and metrics survive
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>Writes a checkpoint and prunes old ones; returns its folder.</summary>
    public static string Write(string directory, CheckpointState state, FlatAdamW optimizer, IReadOnlyList<Tensor>? bestWeights, int? keep)
    {
        Directory.CreateDirectory(directory);
        var final = Path.Combine(directory, FolderPrefix + state.GlobalStep.ToString(CultureInfo.InvariantCulture));
        var temp = Path.Combine(directory, $".{FolderPrefix}{state.GlobalStep}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            using (var scope = NewDisposeScope())
            {
                SafeTensors.Save(Path.Combine(temp, WeightsFile), optimizer.NamedWeights());
                var (moments, metadata) = optimizer.StateDict();
                SafeTensors.Save(Path.Combine(temp, OptimizerFile), moments, metadata);
                SafeTensors.Save(Path.Combine(temp, RngFile), new Dictionary<string, Tensor> { ["cpu"] = torch.get_rng_state() });
                if (bestWeights is not null) SafeTensors.Save(Path.Combine(temp, BestFile), optimizer.NamedWeights(bestWeights));
            }
            AtomicFile.WriteAllText(Path.Combine(temp, StateFile), JsonSerializer.Serialize(state, Json));
            AtomicFile.ReplaceDirectory(temp, final); // a rerun past the same step replaces it; the old one goes only once the new is in
        }
        catch
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
        if (keep is int k)
            foreach (var old in List(directory).SkipLast(k)) Directory.Delete(old.Folder, recursive: true);
        return final;
    }

    /// <summary>The complete checkpoints in a directory, oldest first.</summary>
    public static IReadOnlyList<(long Step, string Folder)> List(string directory) =>
        !Directory.Exists(directory) ? [] : Directory.GetDirectories(directory, FolderPrefix + "*")
            .Select(d => (Ok: long.TryParse(Path.GetFileName(d)[FolderPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var s), Step: s, Folder: d))
            .Where(x => x.Ok && File.Exists(Path.Combine(x.Folder, StateFile)))
            .OrderBy(x => x.Step).Select(x => (x.Step, x.Folder)).ToList();

    /// <summary>A checkpoint folder itself, or the newest checkpoint inside a directory of them.</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(Path.Combine(path, StateFile))) return path;
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"ResumeFromCheckpoint: '{path}' does not exist.");
        var all = List(path);
        if (all.Count == 0)
            throw new FileNotFoundException($"ResumeFromCheckpoint: '{path}' is neither a checkpoint (no {StateFile}) nor a folder holding {FolderPrefix}<step> checkpoints.");
        return all[^1].Folder;
    }

    /// <summary>Reads the state file of a checkpoint folder.</summary>
    public static CheckpointState ReadState(string folder)
    {
        var file = Path.Combine(folder, StateFile);
        CheckpointState? state;
        try { state = JsonSerializer.Deserialize<CheckpointState>(File.ReadAllText(file), Json); }
        catch (JsonException e) { throw new InvalidDataException($"Checkpoint state {file} is not valid: {e.Message}", e); }
        if (state is null) throw new InvalidDataException($"Checkpoint state {file} is empty.");
        if (state.FormatVersion != FormatVersion)
            throw new InvalidDataException($"Checkpoint {folder} has format version {state.FormatVersion}; this library reads version {FormatVersion}.");
        return state;
    }

    /// <summary>Throws when a checkpoint was written by another run: its recorded fingerprint differs from this run's
    /// in any entry (or an entry is recorded on one side only). The message names every entry that differs and, for
    /// JSON objects (an adapter config), the keys within it.</summary>
    /// <exception cref="ArgumentException">The fingerprints differ.</exception>
    public static void CheckSameRun(string folder, IReadOnlyDictionary<string, string>? recorded, IReadOnlyDictionary<string, string>? current)
    {
        recorded ??= new Dictionary<string, string>();
        current ??= new Dictionary<string, string>();
        var differences = recorded.Keys.Union(current.Keys).Order(StringComparer.Ordinal)
            .Select(name => DescribeDifference(name, recorded.GetValueOrDefault(name), current.GetValueOrDefault(name)))
            .OfType<string>().ToList();
        if (differences.Count > 0)
            throw new ArgumentException($"Cannot resume from {folder}: it was written by another run. What differs: {string.Join("; ", differences)}. " +
                "Resume with the base model, method and task settings the checkpoint was written with, or train without ResumeFromCheckpoint.");
    }

    /// <summary>"name: what differs", or null when both sides agree.</summary>
    private static string? DescribeDifference(string name, string? recorded, string? current)
    {
        if (recorded == current) return null;
        if (recorded is null) return $"{name} (not recorded in the checkpoint; this run has {Abbreviate(current!)})";
        if (current is null) return $"{name} (recorded in the checkpoint as {Abbreviate(recorded)}; this run has none)";
        if (ParseObject(recorded) is { } before && ParseObject(current) is { } now)
        {
            var keys = before.Select(p => p.Key).Union(now.Select(p => p.Key)).Where(k => !JsonNode.DeepEquals(before[k], now[k])).Order(StringComparer.Ordinal).ToList();
            string Value(JsonObject o, string key) => o.ContainsKey(key) ? Abbreviate(o[key]?.ToJsonString() ?? "null") : "absent";
            if (keys.Count > 0)
                return $"{name}: " + string.Join(", ", keys.Select(k => $"{k} {Value(before, k)} in the checkpoint, {Value(now, k)} now"));
        }
        return $"{name}: {Abbreviate(recorded)} in the checkpoint, {Abbreviate(current)} now";
    }

    private static JsonObject? ParseObject(string text)
    {
        try { return JsonNode.Parse(text) as JsonObject; }
        catch (JsonException) { return null; }
    }

    private static string Abbreviate(string value) => value.Length <= 80 ? value : value[..77] + "...";

    /// <summary>Loads the tensors of a checkpoint: weights into the parameters, the optimizer state, the generator
    /// state; returns the best-weights snapshot when the checkpoint has one (the caller disposes it). Every file is
    /// read and checked against the optimizer's parameters before anything is copied, so a checkpoint that does not
    /// fit leaves the model, the optimizer and the generator as they were.</summary>
    public static IReadOnlyList<Tensor>? LoadTensors(string folder, FlatAdamW optimizer)
    {
        using var scope = NewDisposeScope();
        var weightsPath = Path.Combine(folder, WeightsFile);
        var weights = SafeTensors.Load(weightsPath);
        optimizer.CheckWeights(weights, weightsPath);
        var optimizerPath = Path.Combine(folder, OptimizerFile);
        var (_, metadata, _) = SafeTensors.ReadHeader(optimizerPath);
        var moments = SafeTensors.Load(optimizerPath);
        optimizer.CheckStateDict(moments, metadata, optimizerPath);
        var rngPath = Path.Combine(folder, RngFile);
        if (!SafeTensors.Load(rngPath).TryGetValue("cpu", out var cpuState)) throw new InvalidDataException($"{rngPath} has no tensor 'cpu'.");
        var bestPath = Path.Combine(folder, BestFile);
        var best = File.Exists(bestPath) ? SafeTensors.Load(bestPath) : null;
        if (best is not null) optimizer.CheckWeights(best, bestPath);

        // Everything fits: only now does anything change.
        optimizer.LoadWeights(weights, weightsPath);
        optimizer.LoadStateDict(moments, metadata, optimizerPath);
        torch.set_rng_state(cpuState);
        if (best is null) return null;
        var snapshot = optimizer.CloneWeights();
        using (no_grad())
            foreach (var (name, view) in optimizer.NamedWeights(snapshot))
                view.copy_(best[name]);
        return snapshot;
    }
}
