using Microsoft.ML;
using MLNet.FineTune;

namespace SentimentAnalysis;

public static partial class SentimentModel
{
    // Built on first use from the saved zip, once per process. A PredictionEngine is not thread-safe: use one per
    // thread, or ML.NET's PredictionEnginePool in a server.
    private static readonly Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine = new(() => CreatePredictEngine(MLNetModelPath), isThreadSafe: true);

    /// <summary>Scores one review with the model saved at <see cref="MLNetModelPath"/>.</summary>
    public static ModelOutput Predict(ModelInput input) => PredictEngine.Value.Predict(input);

    private static PredictionEngine<ModelInput, ModelOutput> CreatePredictEngine(string modelPath)
    {
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"No trained model at {modelPath}: run the sample without arguments to train and save one first.", modelPath);
        var mlContext = new MLContext();
        ITransformer model = mlContext.Model.LoadWithClearErrors(modelPath, out _);
        return mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(model);
    }
}
