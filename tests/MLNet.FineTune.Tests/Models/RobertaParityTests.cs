using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>RoBERTa against transformers 5.17 (roberta-tiny: pad_token_id 1, first row right-padded by 2).</summary>
[TestClass]
public sealed class RobertaParityTests
{
    [ClassInitialize] public static void LoadTorch(TestContext _) => MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();

    private const double Tolerance = 1e-5;

    [TestMethod]
    public void BaseModelMatchesTransformers()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("roberta-tiny");
        var (model, report) = ModelFactory.FromPretrainedBaseModel(fixture.Folder);
        Console.WriteLine(report);
        Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType<RobertaModel>(model);

        var output = model.forward(fixture.Inputs());
        Parity.AssertClose(output.LastHiddenState, fixture.Expected["last_hidden_state"], Tolerance, "roberta-tiny last_hidden_state");
    }

    [TestMethod]
    public void PositionsCountRealTokensSoLeftPaddingMatchesTransformersRightPadded()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("roberta-tiny");
        var (model, _) = ModelFactory.FromPretrainedBaseModel(fixture.Folder);
        var roberta = (RobertaModel)model;

        // transformers' create_position_ids_from_input_ids on the fixture: pad (1) -> 1, real tokens 2, 3, ...
        var positions = roberta.PositionIds(fixture.Inputs().InputIds);
        CollectionAssert.AreEqual(new long[] { 2, 3, 4, 5, 6, 7, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9 }, positions.data<long>().ToArray());

        // The padded row moved to the left: its real tokens must equal transformers' right-padded result.
        var real = fixture.InputIds[0][..6];
        var left = model.forward(new EncoderInputs(EncoderFixture.Matrix([[1, 1, .. real]]), EncoderFixture.Matrix([[0, 0, 1, 1, 1, 1, 1, 1]])));
        var reference = fixture.Expected["last_hidden_state"][0, ..6];
        Parity.AssertClose(left.LastHiddenState[0, 2..], reference, Tolerance, "left-padded row vs transformers' right-padded row");
    }

    [TestMethod]
    public void StateDictKeysAndShapesEqualTheCheckpoint()
    {
        var fixture = EncoderFixture.Load("roberta-tiny");
        var checkpoint = fixture.CheckpointKeysAndShapes();
        Parity.AssertSameKeys(checkpoint, EncoderFixture.KeysAndShapes(ModelFactory.CreateBaseModel(fixture.Config)), "RobertaModel vs roberta-tiny");

        // Task models: transformers builds them without the pooler, under 'roberta.', plus their head.
        static bool NoPooler(string key) => !key.StartsWith("pooler.", StringComparison.Ordinal);
        Parity.AssertSameKeys(
            Parity.Expect(checkpoint, "roberta", NoPooler,
                "classifier.dense.weight [32, 32]", "classifier.dense.bias [32]", "classifier.out_proj.weight [5, 32]", "classifier.out_proj.bias [5]"),
            EncoderFixture.KeysAndShapes(ModelFactory.CreateSequenceClassification(fixture.Config, 5)), "RobertaForSequenceClassification");
        Parity.AssertSameKeys(
            Parity.Expect(checkpoint, "roberta", NoPooler, "qa_outputs.weight [2, 32]", "qa_outputs.bias [2]"),
            EncoderFixture.KeysAndShapes(ModelFactory.CreateQuestionAnswering(fixture.Config)), "RobertaForQuestionAnswering");
    }

    [TestMethod]
    public void BaseCheckpointIntoClassifierReportsTheHeadAndThePooler()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("roberta-tiny");
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 2);
        Console.WriteLine(report);
        CollectionAssert.AreEquivalent(new[] { "classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias" }, report.Missing.ToArray());
        CollectionAssert.AreEquivalent(new[] { "pooler.dense.weight", "pooler.dense.bias" }, report.Unexpected.ToArray());
        Assert.AreEqual(37, report.Loaded.Count);
        CollectionAssert.AreEqual(new long[] { 2, 2 }, model.forward(fixture.Inputs()).shape);
    }
}
