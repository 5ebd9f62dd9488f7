using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune;

namespace QuestionAnswering;

public static partial class QAModel
{
    /// <summary>Scores the model on SQuAD rows (from LoadFromSquadJson) as the official SQuAD scripts do.</summary>
    public static QuestionAnsweringMetrics Evaluate(MLContext mlContext, ITransformer model, IDataView testData) =>
        mlContext.FineTune().EvaluateQuestionAnswering(model.Transform(testData));

    /// <summary>Scores a predictions file (question id to answer text, as run_qa.py and the SQuAD scripts write it)
    /// against a SQuAD dataset file.</summary>
    public static QuestionAnsweringMetrics EvaluatePredictions(string datasetPath, string predictionsPath) =>
        SquadEvaluator.Evaluate(SquadJson.Read(datasetPath), SquadJson.ReadPredictions(predictionsPath));

    /// <summary>Writes the model's answers on SQuAD rows as a predictions file (question id to answer text).</summary>
    public static void WritePredictions(MLContext mlContext, ITransformer model, IDataView testData, string path)
    {
        var scored = model.Transform(testData);
        var ids = scored.GetColumn<string>("Id").ToArray();
        var answers = scored.GetColumn<string>("Answer").ToArray();
        var json = new JsonObject();
        for (int i = 0; i < ids.Length; i++) json[ids[i]] = answers[i];
        WriteAtomically(path, json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>The result file's keys: SQuAD scores in %, v2.0 splits (null when not applicable), training size and time.</summary>
    public static JsonObject ResultJson(QuestionAnsweringMetrics metrics, int? trainExamples, double? trainSeconds, JsonArray? learningCurve = null)
    {
        bool v1 = metrics.Version == SquadVersion.V1;
        var json = new JsonObject
        {
            ["exact_match"] = metrics.ExactMatch,
            ["f1"] = metrics.F1,
            // v1.1 has only answerable questions: its scores are the has-answer scores.
            ["has_ans_exact"] = v1 ? metrics.ExactMatch : metrics.HasAnsExact,
            ["has_ans_f1"] = v1 ? metrics.F1 : metrics.HasAnsF1,
            ["no_ans_exact"] = metrics.NoAnsExact,
            ["no_ans_f1"] = metrics.NoAnsF1,
            ["train_examples"] = trainExamples,
            ["train_seconds"] = trainSeconds is { } s ? Math.Round(s, 1) : null,
            ["squad_version"] = v1 ? "1.1" : "2.0",
            ["total"] = metrics.Total,
        };
        if (metrics.BestF1 is { } bestF1)
        {
            json["best_f1"] = bestF1;
            json["best_f1_thresh"] = metrics.BestF1Threshold;
        }
        if (learningCurve is not null) json["learning_curve"] = learningCurve;
        return json;
    }

    /// <summary>Writes to a temporary file, then moves it into place: a reader never sees half a file.</summary>
    public static void WriteAtomically(string path, string text)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var temp = full + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, full, overwrite: true);
    }
}
