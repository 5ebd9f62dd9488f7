using System.Globalization;

namespace SentimentAnalysis;

/// <summary>The real-data run's arguments (Program.cs's usage text describes them).</summary>
public sealed record CommandLine
{
    public required string Train { get; init; }
    public string? Validation { get; init; }
    public string? Test { get; init; }
    public int? Split { get; init; }
    public int? MaxTrain { get; init; }
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    public int MaxLength { get; init; } = 128;
    public double? LearningRate { get; init; }
    public FineTuneMethod Method { get; init; } = FineTuneMethod.Lora;
    public int Seed { get; init; } = 1;
    public string? Json { get; init; }

    /// <exception cref="ArgumentException">An unknown option, a missing or malformed value, or a missing input file.</exception>
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

        string? Path(string name)
        {
            if (!values.TryGetValue(name, out var p)) return null;
            if (!File.Exists(p)) throw new FileNotFoundException($"{name}: file not found: {System.IO.Path.GetFullPath(p)}", p);
            return p;
        }
        int? Int(string name, int min)
        {
            if (!values.TryGetValue(name, out var s)) return null;
            if (!int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) || v < min)
                throw new ArgumentException($"{name} must be an integer of at least {min}; got '{s}'.");
            return v;
        }

        var train = Path("--train") ?? throw new ArgumentException("--train <tsv> is required when arguments are given.");
        var cl = new CommandLine
        {
            Train = train,
            Validation = Path("--validation"),
            Test = Path("--test"),
            Split = Int("--split", 1),
            MaxTrain = Int("--max-train", 1),
            Epochs = Int("--epochs", 1) ?? 3,
            BatchSize = Int("--batch-size", 1) ?? 32,
            MaxLength = Int("--max-length", 8) ?? 128,
            Seed = Int("--seed", 0) ?? 1,
            Json = values.GetValueOrDefault("--json"),
            Method = values.TryGetValue("--method", out var m) ? ParseMethod(m) : FineTuneMethod.Lora,
            LearningRate = values.TryGetValue("--learning-rate", out var lr)
                ? double.TryParse(lr, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && x > 0 ? x
                    : throw new ArgumentException($"--learning-rate must be a positive number; got '{lr}'.")
                : null,
        };
        if (cl.Split is not null && cl.Test is not null) throw new ArgumentException("Give either --test or --split, not both.");
        if (cl.Split is null && cl.Test is null && cl.Validation is null)
            throw new ArgumentException("Nothing to test on: give --test <tsv>, --validation <tsv>, or --split N.");
        return cl;
    }

    private static readonly HashSet<string> Known =
        ["--train", "--validation", "--test", "--split", "--max-train", "--epochs", "--batch-size", "--max-length", "--learning-rate", "--method", "--seed", "--json"];

    private static FineTuneMethod ParseMethod(string s) => s.ToLowerInvariant() switch
    {
        "lora" => FineTuneMethod.Lora,
        "dora" => FineTuneMethod.Dora,
        "qlora" => FineTuneMethod.QLora,
        "adapters" or "adapter" => FineTuneMethod.Adapters,
        "ia3" => FineTuneMethod.IA3,
        "full" => FineTuneMethod.Full,
        _ => throw new ArgumentException($"--method must be lora, dora, qlora, adapters, ia3 or full; got '{s}'."),
    };
}
