using Microsoft.ML;
using MLNet.FineTune;
using MLNet.FineTune.Models;
using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.Training;
using static TextGeneration.TextModel;

namespace TextGeneration;

/// <summary>The parameter-efficient method to fine-tune with.</summary>
public enum FineTuneMethod { Lora, QLora, Dora, Adapters, IA3, Full }

/// <summary>What a training run may change; everything else comes from the defaults below.</summary>
public sealed record TrainingSettings
{
    public required string BaseModel { get; init; }
    public DataShape Shape { get; init; } = DataShape.Text;
    public FineTuneMethod Method { get; init; } = FineTuneMethod.Lora;
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 8;
    public int MaxSequenceLength { get; init; } = 256;
    /// <summary>Null: the method's default (<see cref="TextModel.DefaultLearningRate"/>).</summary>
    public double? LearningRate { get; init; }
    public int Seed { get; init; } = 1;
    public IDataView? ValidationSet { get; init; }
    public IProgress<TrainingProgress>? Progress { get; init; }
    public GenerationOptions Generation { get; init; } = new() { MaxNewTokens = 60 };
}

public static partial class TextModel
{
    /// <summary>Learning rates for a small causal model: LoRA on every linear layer learns a style in a few epochs at
    /// 5e-3; adapters and IA3 train fewer weights and need more; full fine-tuning needs far less.</summary>
    public static double DefaultLearningRate(FineTuneMethod method) => method switch
    {
        FineTuneMethod.Lora or FineTuneMethod.QLora or FineTuneMethod.Dora => 5e-3,
        FineTuneMethod.Adapters => 1e-2,
        FineTuneMethod.IA3 => 3e-2,
        FineTuneMethod.Full => 5e-4,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
    };

    // Every linear layer of a Llama/Mistral/Qwen2 block; GPT-2's are c_attn, c_proj, c_fc.
    private static readonly string[] LlamaLinears = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    private static readonly string[] Gpt2Linears = ["c_attn", "c_proj", "c_fc"];

    /// <summary>The task options: the base folder, the data shape's columns, the training loop, generation.</summary>
    public static CausalLMOptions Options(TrainingSettings settings) => new()
    {
        BaseModel = settings.BaseModel,
        TextColumnName = settings.Shape == DataShape.Text ? "Text" : null,
        PromptColumnName = settings.Shape == DataShape.PromptCompletion ? "Prompt" : null,
        CompletionColumnName = settings.Shape == DataShape.PromptCompletion ? "Completion" : null,
        MaxSequenceLength = settings.MaxSequenceLength,
        Epochs = settings.Epochs,
        BatchSize = settings.BatchSize,
        LearningRate = settings.LearningRate ?? DefaultLearningRate(settings.Method),
        WarmupRatio = 0.1,
        ValidationSet = settings.ValidationSet,
        Seed = settings.Seed,
        Precision = TrainingPrecision.Auto, // a bfloat16 frozen base on CPUs with native bf16, float32 elsewhere
        Dropout = 0,                        // a style fine-tune of a few hundred rows: the model's dropout adds nothing
        Progress = settings.Progress,
        Generation = settings.Generation,
    };

    /// <summary>Builds the fine-tuning estimator for <paramref name="settings"/>.</summary>
    public static CausalLMEstimator BuildPipeline(MLContext mlContext, TrainingSettings settings)
    {
        var options = Options(settings);
        var targets = IsGpt2(settings.BaseModel) ? Gpt2Linears : LlamaLinears;
        var catalog = mlContext.FineTune();
        return settings.Method switch
        {
            FineTuneMethod.Lora => catalog.Lora(options, new LoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = targets }),
            FineTuneMethod.QLora => catalog.QLora(options, new QLoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = targets }),
            FineTuneMethod.Dora => catalog.Dora(options, new DoraOptions { Rank = 8, Alpha = 16, Dropout = 0.05, TargetModules = targets }),
            FineTuneMethod.Adapters => catalog.Adapters(options, new AdapterOptions { ReductionFactor = 4 }),
            FineTuneMethod.IA3 => catalog.IA3(options, new IA3Options()),
            FineTuneMethod.Full => catalog.FullFineTune(options),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Method, "Unknown method."),
        };
    }

    /// <summary>The base model untouched, behind the same transformer type: for the "before" numbers.</summary>
    public static CausalLMTransformer LoadPretrained(MLContext mlContext, TrainingSettings settings) =>
        mlContext.FineTune().PretrainedCausalLM(Options(settings));

    /// <summary>Trains the pipeline on <paramref name="trainData"/>.</summary>
    public static CausalLMTransformer RetrainModel(MLContext mlContext, IDataView trainData, TrainingSettings settings) =>
        BuildPipeline(mlContext, settings).Fit(trainData);

    /// <summary>Saves the trained model to a zip that <see cref="Generate"/> (or any ML.NET app) loads.</summary>
    public static void SaveModel(MLContext mlContext, ITransformer model, DataViewSchema inputSchema, string path) =>
        mlContext.Model.SaveAtomically(model, inputSchema, path);

    private static bool IsGpt2(string folder) =>
        File.ReadAllText(Path.Combine(folder, "config.json")).Contains("\"gpt2\"", StringComparison.Ordinal);
}
