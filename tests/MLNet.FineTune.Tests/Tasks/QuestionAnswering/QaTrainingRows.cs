using Microsoft.ML;

namespace MLNet.FineTune.Tests.Tasks.QuestionAnswering;

/// <summary>
/// The small SQuAD-shaped training set the QA input tests break one row of: every row asks where Anna lives, answer
/// "Oslo" at 14 unless a test changes it, on the tiny BERT in float32.
/// </summary>
internal static class QaTrainingRows
{
    /// <summary>A training row with every column LoadFromSquadJson gives.</summary>
    public sealed class Row
    {
        public string Id { get; set; } = "";
        public string Context { get; set; } = "Anna lives in Oslo.";
        public string Question { get; set; } = "Where does Anna live?";
        public string AnswerText { get; set; } = "Oslo";
        public int AnswerStart { get; set; } = 14;
        public string[] AllAnswers { get; set; } = ["Oslo"];
        public bool IsImpossible { get; set; }
    }

    /// <summary><paramref name="count"/> identical rows with ids q0, q1, ...</summary>
    public static List<Row> Rows(int count) => Enumerable.Range(0, count).Select(i => new Row { Id = $"q{i}" }).ToList();

    /// <summary>One quick epoch on the tiny BERT, optionally validated on <paramref name="validation"/>.</summary>
    public static QuestionAnsweringOptions Options(IDataView? validation = null) => new()
    {
        BaseModel = TinyModels.BertTiny(), MaxSequenceLength = 64, DocStride = 16, Epochs = 1, BatchSize = 4,
        Precision = TrainingPrecision.Float32, Seed = 3, ValidationSet = validation,
    };
}
