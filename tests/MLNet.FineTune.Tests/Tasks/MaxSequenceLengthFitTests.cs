using System.Text.Json.Nodes;
using Microsoft.ML;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Tasks;

/// <summary>
/// MaxSequenceLength beyond the positions the model has (config.json max_position_embeddings; for RoBERTa minus its
/// offset pad_token_id + 1) is an error when Fit starts, naming both numbers and the folder, not a surprise at the
/// first long input in production. bert-tiny has 64 positions, so QuestionAnsweringOptions' default 384 is refused too.
/// </summary>
[TestClass]
public sealed class MaxSequenceLengthFitTests
{
    public sealed class Review { public string Text { get; set; } = ""; public bool Label { get; set; } }

    public sealed class QaRow
    {
        public string Id { get; set; } = "";
        public string Context { get; set; } = "Anna lives in Oslo.";
        public string Question { get; set; } = "Where does Anna live?";
        public string AnswerText { get; set; } = "Oslo";
        public int AnswerStart { get; set; } = 14;
    }

    private static IDataView Reviews(MLContext ml) => ml.Data.LoadFromEnumerable(
        Enumerable.Range(0, 8).Select(i => new Review { Text = i % 2 == 0 ? "the movie was good" : "the food was awful", Label = i % 2 == 0 }));

    [TestMethod]
    public void AClassifiersMaxSequenceLengthBeyondThePositionTable_IsRefusedAtFit()
    {
        var ml = new MLContext(seed: 1);
        var folder = TinyModels.BertTiny();
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = folder, MaxSequenceLength = 128, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32,
        }).Fit(Reviews(ml)), "MaxSequenceLength", "128", "64", "max_position_embeddings", folder);

        // The largest allowed length trains.
        Assert.IsNotNull(ml.FineTune().Lora(new TextClassificationOptions
        {
            BaseModel = folder, MaxSequenceLength = 64, Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32,
        }).Fit(Reviews(ml)));
    }

    [TestMethod]
    public void QuestionAnsweringsDefault384OnASmallerModel_IsRefusedAtFit()
    {
        var ml = new MLContext(seed: 1);
        var rows = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 4).Select(i => new QaRow { Id = $"q{i}" }));
        NamedErrors.Expect<ArgumentOutOfRangeException>(() => ml.FineTune().Lora(new QuestionAnsweringOptions
        {
            BaseModel = TinyModels.BertTiny(), Epochs = 1, BatchSize = 4, Precision = TrainingPrecision.Float32,
        }).Fit(rows), "MaxSequenceLength", "384", "64");
    }

    [TestMethod]
    public void RobertasUsablePositionsExcludeItsPaddingOffset()
    {
        var config = HfConfig.Load(TestPaths.Fixture("hf-reference", "roberta-tiny"));
        int? usable = ModelRegistry.MaxInputTokens(config);
        Console.WriteLine($"roberta-tiny: max_position_embeddings {config.GetInt("max_position_embeddings")}, pad_token_id {config.GetInt("pad_token_id")}: {usable} usable");
        Assert.AreEqual(config.GetInt("max_position_embeddings") - config.GetInt("pad_token_id") - 1, usable);
        Assert.AreEqual(64, ModelRegistry.MaxInputTokens(HfConfig.Load(TinyModels.BertTiny())));
    }
}
