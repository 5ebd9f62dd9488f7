using System.Globalization;

namespace TextGeneration;

/// <summary>The sample's arguments (Program.cs's usage text describes them).</summary>
public sealed record CommandLine
{
    public string? Model { get; init; }
    public string? Train { get; init; }
    public string? Validation { get; init; }
    public int? Epochs { get; init; }
    public int? MaxTrain { get; init; }
    public FineTuneMethod Method { get; init; } = FineTuneMethod.Lora;
    public string? Json { get; init; }

    private static readonly HashSet<string> Known = ["--model", "--train", "--validation", "--epochs", "--method", "--max-train", "--json"];

    /// <exception cref="ArgumentException">An unknown option, a missing or malformed value.</exception>
    /// <exception cref="FileNotFoundException">An input file or the model folder does not exist.</exception>
    public static CommandLine Parse(IReadOnlyList<string> args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i < args.Count; i++)
        {
            var name = args[i];
            if (!Known.Contains(name)) throw new ArgumentException($"Unknown option '{name}'.");
            if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal)) throw new ArgumentException($"Option {name} needs a value.");
            if (!values.TryAdd(name, args[++i])) throw new ArgumentException($"Option {name} is given twice.");
        }
        string? FilePath(string name)
        {
            if (!values.TryGetValue(name, out var p)) return null;
            if (!File.Exists(p)) throw new FileNotFoundException($"{name}: file not found: {Path.GetFullPath(p)}", p);
            return p;
        }
        int? Int(string name)
        {
            if (!values.TryGetValue(name, out var s)) return null;
            if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < 1)
                throw new ArgumentException($"{name} must be a positive integer; got '{s}'.");
            return v;
        }
        if (values.TryGetValue("--model", out var model) && !Directory.Exists(model))
            throw new DirectoryNotFoundException($"--model: folder not found: {Path.GetFullPath(model)}");
        var cl = new CommandLine
        {
            Model = model,
            Train = FilePath("--train"),
            Validation = FilePath("--validation"),
            Epochs = Int("--epochs"),
            MaxTrain = Int("--max-train"),
            Json = values.GetValueOrDefault("--json"),
            Method = values.TryGetValue("--method", out var m) ? ParseMethod(m) : FineTuneMethod.Lora,
        };
        if (cl.Validation is not null && cl.Train is null) throw new ArgumentException("--validation needs --train.");
        return cl;
    }

    private static FineTuneMethod ParseMethod(string name) => name.ToLowerInvariant() switch
    {
        "lora" => FineTuneMethod.Lora,
        "qlora" => FineTuneMethod.QLora,
        "dora" => FineTuneMethod.Dora,
        "adapters" => FineTuneMethod.Adapters,
        "ia3" => FineTuneMethod.IA3,
        "full" => FineTuneMethod.Full,
        _ => throw new ArgumentException($"--method must be lora, qlora, dora, adapters, ia3 or full; got '{name}'."),
    };
}
