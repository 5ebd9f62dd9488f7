using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using MLNet.FineTune.Models;
using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.Tokenization;
using MLNet.FineTune.Training;
using TextGeneration;
using static TextGeneration.TextModel;

// Fine-tunes a causal language model with LoRA (or DoRA, adapters, IA3, full fine-tuning) and generates text.
//
//   dotnet run --project samples/TextGeneration -c Release
//       stories260K (../shared/models/stories260K, a 260K-parameter Llama trained on TinyStories) learns a style from
//       240 stories the sample writes (always Pip the fox, always Willow Hollow): generations before and after,
//       perplexity on the training stories (held-in), on 40 unseen stories of the style, and on the model's own
//       stories (its original domain: what the fine-tune may make it forget). Saves TextModel.zip and the adapter.
//
//   dotnet run --project samples/TextGeneration -c Release -- [--model <folder>] [--train <jsonl>]
//       [--validation <jsonl>] [--epochs N] [--method lora|qlora|dora|adapters|ia3|full] [--max-train N] [--json <path>]
if (args.Length > 0 && args[0] is "-h" or "--help")
{
    Console.WriteLine(Usage);
    return 0;
}
try
{
    return Run(CommandLine.Parse(args));
}
catch (Exception e) when (e is ArgumentException or FileNotFoundException or InvalidDataException or DirectoryNotFoundException)
{
    Console.Error.WriteLine($"error: {e.Message}");
    if (e is ArgumentException) Console.Error.WriteLine(Usage);
    return 2;
}

static int Run(CommandLine cl)
{
    var modelFolder = cl.Model ?? DefaultModelFolder();
    var mlContext = new MLContext(seed: 1);

    // The data: the user's JSONL files, or the style set this sample writes (200 stories to train on, 40 held out).
    List<ModelInput> trainRows, validationRows;
    DataShape shape;
    string dataName;
    if (cl.Train is { } trainPath)
    {
        (trainRows, shape) = JsonlFile.Read(trainPath);
        validationRows = [];
        if (cl.Validation is { } validationPath)
        {
            var (rows, validationShape) = JsonlFile.Read(validationPath);
            if (validationShape != shape) throw new InvalidDataException($"{validationPath} has {validationShape} rows but {trainPath} has {shape} rows.");
            validationRows = rows;
        }
        dataName = trainPath;
    }
    else
    {
        var stories = StyleStories.All(seed: 1);
        var dataFolder = Path.Combine(AppContext.BaseDirectory, "Data");
        Directory.CreateDirectory(dataFolder);
        var trainPath2 = Path.Combine(dataFolder, "style_train.jsonl");
        JsonlFile.WriteTexts(trainPath2, stories.Take(200));
        JsonlFile.WriteTexts(Path.Combine(dataFolder, "style_validation.jsonl"), stories.Skip(200));
        (trainRows, shape) = JsonlFile.Read(trainPath2);
        validationRows = stories.Skip(200).Select(s => new ModelInput { Text = s }).ToList();
        dataName = $"{trainPath2} (stories of Pip the fox in Willow Hollow, written by this sample)";
    }
    if (cl.MaxTrain is int max && max < trainRows.Count) trainRows = trainRows.Take(max).ToList();

    var settings = new TrainingSettings
    {
        BaseModel = modelFolder,
        Shape = shape,
        Method = cl.Method,
        Epochs = cl.Epochs ?? 3,
        Progress = new StepPrinter(),
        Generation = new GenerationOptions { MaxNewTokens = 60 },
    };
    IDataView train = mlContext.Data.LoadFromEnumerable(trainRows);
    IDataView? validation = validationRows.Count > 0 ? mlContext.Data.LoadFromEnumerable(validationRows) : null;
    Console.WriteLine($"Base model: {modelFolder}");
    Console.WriteLine($"Data: {trainRows.Count} {shape} rows from {dataName}; {validationRows.Count} held-out rows");

    // Before: the base model as it is. Its own stories (sampled, seeded) stand for its original domain.
    var pretrained = LoadPretrained(mlContext, settings);
    var original = OriginalDomain(mlContext, pretrained, shape, count: 40);
    var heldInBefore = Evaluate(mlContext, pretrained, train);
    var validationBefore = validation is null ? null : Evaluate(mlContext, pretrained, validation);
    var originalBefore = Evaluate(mlContext, pretrained, original);
    var prompts = shape == DataShape.Text
        ? new[] { "Once upon a time", "One day, a little", "" }
        : (validationRows.Count > 0 ? validationRows : trainRows).Take(3).Select(r => r.Prompt).ToArray();
    var before = pretrained.Generate(prompts);

    // Fine-tune.
    Console.WriteLine($"Fine-tuning with {cl.Method} ({settings.Epochs} epochs, batch {settings.BatchSize}, lr {DefaultLearningRate(cl.Method)})");
    var clock = Stopwatch.StartNew();
    var model = RetrainModel(mlContext, train, settings);
    double trainSeconds = clock.Elapsed.TotalSeconds;
    int epochsRun = model.TrainingHistory?.Steps.Select(s => s.Epoch).DefaultIfEmpty(settings.Epochs).Max() ?? settings.Epochs;
    long tokens = CountTokens(pretrained, trainRows, shape) * epochsRun;
    double tokensPerSecond = tokens / trainSeconds;
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Trained in {trainSeconds:F1} s ({tokensPerSecond:F0} tokens/s end to end, {tokens} tokens); {model.TrainableParameters}"));

    var heldInAfter = Evaluate(mlContext, model, train);
    var validationAfter = validation is null ? null : Evaluate(mlContext, model, validation);
    var originalAfter = Evaluate(mlContext, model, original);
    var after = model.Generate(prompts);

    PrintComparison($"Held-in: the {trainRows.Count} training rows", heldInBefore, heldInAfter);
    if (validationBefore is not null) PrintComparison($"Held-out: {validationRows.Count} unseen rows of the same data", validationBefore, validationAfter!);
    PrintComparison("Original domain: 40 stories the base model wrote itself (forgetting shows as a rise)", originalBefore, originalAfter);
    Console.WriteLine();
    Console.WriteLine("Generations (greedy), before -> after:");
    for (int i = 0; i < prompts.Length; i++)
    {
        Console.WriteLine($"  prompt: \"{prompts[i]}\"");
        Console.WriteLine($"    before: {before[i].ReplaceLineEndings(" ")}");
        Console.WriteLine($"    after:  {after[i].ReplaceLineEndings(" ")}");
    }

    // Save, reload through the consumption code (a PredictionEngine over the zip), check it generates the same. Both
    // generate one prompt alone: in bfloat16, a prompt left-padded in a batch can round differently and pick another token.
    SaveModel(mlContext, model, train.Schema, MLNetModelPath);
    var reloaded = TextModel.Generate(new ModelInput { Text = prompts[0], Prompt = prompts[0] });
    var alone = model.Generate([prompts[0]])[0];
    Console.WriteLine($"Saved {MLNetModelPath} ({new FileInfo(MLNetModelPath).Length / 1024.0:F0} KiB); reloaded model generates the same text: {reloaded.GeneratedText == alone}");
    if (cl.Method != FineTuneMethod.Full)
    {
        var adapterFolder = Path.Combine(AppContext.BaseDirectory, "TextModel.adapter");
        model.SaveAdapter(adapterFolder);
        Console.WriteLine($"PEFT adapter: {adapterFolder} ({string.Join(", ", Directory.GetFiles(adapterFolder).Select(Path.GetFileName))})");
    }

    if (cl.Json is { } jsonPath)
    {
        var json = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["perplexity_before"] = Math.Round(heldInBefore.Perplexity, 4),
            ["perplexity_after"] = Math.Round(heldInAfter.Perplexity, 4),
            ["validation_perplexity_before"] = validationBefore is null ? null : Math.Round(validationBefore.Perplexity, 4),
            ["validation_perplexity_after"] = validationAfter is null ? null : Math.Round(validationAfter.Perplexity, 4),
            ["original_domain_perplexity_before"] = Math.Round(originalBefore.Perplexity, 4),
            ["original_domain_perplexity_after"] = Math.Round(originalAfter.Perplexity, 4),
            ["train_examples"] = trainRows.Count,
            ["train_seconds"] = Math.Round(trainSeconds, 2),
            ["tokens_per_second"] = Math.Round(tokensPerSecond, 1),
            ["samples"] = prompts.Select((p, i) => new Dictionary<string, string> { ["prompt"] = p, ["before"] = before[i], ["after"] = after[i] }).ToList(),
        }, new JsonSerializerOptions { WriteIndented = true });
        var full = Path.GetFullPath(jsonPath);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllText(full + ".tmp", json);
        File.Move(full + ".tmp", full, overwrite: true);
        Console.WriteLine($"Wrote {full}");
    }
    return 0;
}

// ../shared/models/stories260K from the working folder or any folder above the executable, else a clear error.
static string DefaultModelFolder()
{
    var candidates = new List<string> { Path.GetFullPath(Path.Combine("..", "shared", "models", "stories260K")) };
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        candidates.Add(Path.Combine(dir.FullName, "shared", "models", "stories260K"));
    return candidates.FirstOrDefault(c => File.Exists(Path.Combine(c, "config.json")))
        ?? throw new DirectoryNotFoundException(
            "No --model given and the default model folder ../shared/models/stories260K was not found (looked in " +
            $"{candidates[0]} and above the executable). Pass --model <folder> with a Hugging Face causal LM (config.json, " +
            "model.safetensors, tokenizer.json or tokenizer.model), e.g. a Llama, Mistral, Qwen2 or GPT-2 checkpoint.");
}

// The base model's own stories, sampled from its beginning-of-sequence token (seeded): its original domain.
static IDataView OriginalDomain(MLContext mlContext, CausalLMTransformer pretrained, DataShape shape, int count)
{
    var sampler = pretrained.WithGeneration(new GenerationOptions { MaxNewTokens = 120, DoSample = true, Temperature = 1.0, TopK = 0, Seed = 7, BatchSize = count });
    var stories = sampler.Generate(Enumerable.Repeat("", count).ToList()).Where(s => s.Trim().Length > 0).ToList();
    var rows = stories.Select(s => shape == DataShape.Text ? new ModelInput { Text = s } : new ModelInput { Prompt = "", Completion = s });
    return mlContext.Data.LoadFromEnumerable(rows.ToList());
}

// Tokens one epoch feeds the model (BOS/EOS as the tokenizer adds them), for tokens per second.
static long CountTokens(CausalLMTransformer model, IReadOnlyList<ModelInput> rows, DataShape shape) =>
    rows.Sum(r => (long)model.CountTokens(shape == DataShape.Text ? r.Text : r.Prompt + r.Completion) + 1);

partial class Program
{
    private const string Usage = """
        usage: TextGeneration   (stories260K learns a style from stories this sample writes; before/after numbers)
               TextGeneration [--model <folder>] [--train <jsonl>] [--validation <jsonl>] [--epochs N]
                              [--method lora|qlora|dora|adapters|ia3|full] [--max-train N] [--json <path>]
          --model       a Hugging Face causal LM folder (config.json, model.safetensors, tokenizer files);
                        default ../shared/models/stories260K
          --train       JSONL, one object per line: {"text": "..."} (loss on every token) or
                        {"prompt": "...", "completion": "..."} (loss on the completion only); default: the style stories
          --validation  JSONL of the same shape, scored before and after
          --epochs      default 3; --method default lora; --max-train N trains on the first N rows
          --json        writes perplexity_before/after (held-in), original_domain_perplexity_before/after,
                        train_examples, train_seconds, tokens_per_second and samples (prompt, before, after)
        """;
}

/// <summary>One line per tenth of the run. Reports arrive on the training thread, in order.</summary>
sealed class StepPrinter : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress p)
    {
        long every = Math.Max(1, p.TotalSteps / 10);
        if (p.Step % every == 0 || p.Step == p.TotalSteps)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  epoch {p.Epoch} step {p.Step}/{p.TotalSteps}  loss {p.Loss:F4}  lr {p.LearningRate:G3}"));
    }
}
