using System.Text.Json;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>
/// The class names a text classifier's adapter was trained on, saved beside its <c>adapter_config.json</c> as
/// <c>task_labels.json</c> (<c>{"labels": ["negative", "positive"]}</c>, in the order of the classifier's outputs).
/// PEFT's config has no field for them and would warn about an unknown key, so they live in a file of their own,
/// which PEFT never reads. <see cref="FineTuneOptions.InitialAdapter"/> checks them, so an adapter whose outputs mean
/// other classes is refused instead of continuing silently.
/// </summary>
internal static class AdapterLabels
{
    public const string FileName = "task_labels.json";

    private sealed record LabelsJson(string[] Labels);

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>The file's content for these classes.</summary>
    public static string ToJson(IReadOnlyList<string> names) => JsonSerializer.Serialize(new LabelsJson(names.ToArray()), Json);

    /// <summary>The class names saved with the adapter in <paramref name="folder"/>, or null when it has none (an
    /// adapter saved by PEFT, or by a task without labels).</summary>
    /// <exception cref="InvalidDataException">The file exists but is not what <see cref="ToJson"/> writes.</exception>
    public static IReadOnlyList<string>? Read(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<LabelsJson>(File.ReadAllText(path), Json)?.Labels
                ?? throw new InvalidDataException($"{path} has no 'labels' array.");
        }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid: {e.Message}", e); }
    }

    /// <summary>Throws unless the adapter in <paramref name="folder"/> was trained on <paramref name="labels"/>, in
    /// the same order, when it records its labels.</summary>
    /// <exception cref="ArgumentException">The recorded labels differ (both lists are named).</exception>
    public static void CheckSameLabels(string folder, ClassLabels labels, string labelColumnName)
    {
        if (Read(folder) is not { } saved || saved.SequenceEqual(labels.Names, StringComparer.Ordinal)) return;
        string order = saved.Order(StringComparer.Ordinal).SequenceEqual(labels.Names.Order(StringComparer.Ordinal), StringComparer.Ordinal)
            ? " The same classes in another order: the classifier's outputs would swap meaning." : "";
        throw new ArgumentException(
            $"InitialAdapter {folder} was trained on {saved.Count} classes ({string.Join(", ", saved)}; recorded in {FileName}), but the label column " +
            $"'{labelColumnName}' of the training data has {labels.Count} classes ({string.Join(", ", labels.Names)}).{order} Continue from an adapter trained " +
            "on the same labels, or leave InitialAdapter unset to train a new one.", nameof(FineTuneOptions.InitialAdapter));
    }

    /// <summary>
    /// Throws when the adapter's saved classifier was trained for another number of classes than
    /// <paramref name="model"/> (built for the training data's classes) predicts: the head's saved tensors are compared
    /// with the model's by shape, and the dimension that differs holds the adapter's class count. For adapters without
    /// <see cref="FileName"/> (saved by PEFT), whose head shape is the only record of their classes.
    /// </summary>
    /// <exception cref="ArgumentException">The class counts differ (both are named).</exception>
    public static void CheckClassCount(SequenceClassificationModel model, string folder, ClassLabels labels, string labelColumnName)
    {
        var path = Path.Combine(folder, PeftAdapterFile.WeightsFileName);
        if (!File.Exists(path)) return; // LoadAdapter names the missing file
        var saved = SafeTensors.ReadHeader(path).Entries.ToDictionary(e => e.Name, e => e.Shape, StringComparer.Ordinal);
        foreach (var (name, tensor) in model.state_dict().Where(p => model.HeadModuleNames.Any(h => p.Key.StartsWith(h + ".", StringComparison.Ordinal))))
        {
            if (!saved.TryGetValue(PeftModel.KeyPrefix + name, out var shape) || shape.Length != tensor.shape.Length) continue;
            int dim = Enumerable.Range(0, shape.Length).FirstOrDefault(d => shape[d] != tensor.shape[d], -1);
            if (dim < 0 || tensor.shape[dim] != labels.Count) continue;
            throw new ArgumentException(
                $"InitialAdapter {folder} holds a classifier for {shape[dim]} classes ('{PeftModel.KeyPrefix + name}' has shape [{string.Join(", ", shape)}]), " +
                $"but the label column '{labelColumnName}' of the training data has {labels.Count} classes ({string.Join(", ", labels.Names)}). Continue from " +
                "an adapter trained on the same labels, or leave InitialAdapter unset to train a new one.", nameof(FineTuneOptions.InitialAdapter));
        }
    }
}
