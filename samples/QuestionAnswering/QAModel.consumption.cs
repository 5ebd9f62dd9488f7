using Microsoft.ML;
using MLNet.FineTune;

namespace QuestionAnswering;

public static partial class QAModel
{
    /// <summary>Where the sample saves the model: beside the built sample (bin/, git-ignored), as the sentiment sample
    /// does, not in the working directory (the repository root when run as the README says).</summary>
    public static readonly string MLNetModelPath = Path.Combine(AppContext.BaseDirectory, "QAModel.zip");

    private static Lazy<PredictionEngine<ModelInput, ModelOutput>> PredictEngine = new(() => CreatePredictEngine(MLNetModelPath), true);

    /// <summary>Answers one question from its context with the model saved at <see cref="MLNetModelPath"/>.</summary>
    public static ModelOutput Predict(ModelInput input) => PredictEngine.Value.Predict(input);

    /// <summary>Points <see cref="Predict"/> at another saved model.</summary>
    public static void UseModel(string path) => PredictEngine = new(() => CreatePredictEngine(path), true);

    private static PredictionEngine<ModelInput, ModelOutput> CreatePredictEngine(string path)
    {
        var mlContext = new MLContext();
        var model = mlContext.Model.LoadWithClearErrors(path, out _);
        return mlContext.Model.CreatePredictionEngine<ModelInput, ModelOutput>(model);
    }
}
