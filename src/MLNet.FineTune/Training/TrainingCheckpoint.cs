using System.Globalization;
using System.Text.Json;
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
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"TrainerOptions.ResumeFromCheckpoint: '{path}' does not exist.");
        var all = List(path);
        if (all.Count == 0)
            throw new FileNotFoundException($"TrainerOptions.ResumeFromCheckpoint: '{path}' is neither a checkpoint (no {StateFile}) nor a folder holding {FolderPrefix}<step> checkpoints.");
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

    /// <summary>Loads the tensors of a checkpoint: weights into the parameters, the optimizer state, the generator
    /// state; returns the best-weights snapshot when the checkpoint has one (the caller disposes it).</summary>
    public static IReadOnlyList<Tensor>? LoadTensors(string folder, FlatAdamW optimizer)
    {
        IReadOnlyList<Tensor>? best = null;
        using var scope = NewDisposeScope();
        var weightsPath = Path.Combine(folder, WeightsFile);
        optimizer.LoadWeights(SafeTensors.Load(weightsPath), weightsPath);
        var optimizerPath = Path.Combine(folder, OptimizerFile);
        var (_, metadata, _) = SafeTensors.ReadHeader(optimizerPath);
        optimizer.LoadStateDict(SafeTensors.Load(optimizerPath), metadata, optimizerPath);
        var rngPath = Path.Combine(folder, RngFile);
        var rng = SafeTensors.Load(rngPath);
        if (!rng.TryGetValue("cpu", out var cpuState)) throw new InvalidDataException($"{rngPath} has no tensor 'cpu'.");
        torch.set_rng_state(cpuState);
        var bestPath = Path.Combine(folder, BestFile);
        if (File.Exists(bestPath))
        {
            var snapshot = optimizer.CloneWeights();
            using (no_grad())
            {
                var loaded = SafeTensors.Load(bestPath);
                foreach (var (name, view) in optimizer.NamedWeights(snapshot))
                {
                    if (!loaded.TryGetValue(name, out var value)) throw new InvalidDataException($"{bestPath} has no tensor '{name}'.");
                    view.copy_(value);
                }
            }
            best = snapshot;
        }
        return best;
    }
}
