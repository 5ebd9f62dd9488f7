using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>DistilBERT against transformers 5.17 (distilbert-tiny; first row right-padded by 2).</summary>
[TestClass]
public sealed class DistilBertParityTests
{
    [ClassInitialize] public static void LoadTorch(TestContext _) => MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();

    private const double Tolerance = 1e-5;

    [TestMethod]
    public void BaseModelMatchesTransformers()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("distilbert-tiny");
        var (model, report) = ModelFactory.FromPretrainedBaseModel(fixture.Folder);
        Console.WriteLine(report);
        Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType<DistilBertModel>(model);

        var output = model.forward(fixture.Inputs());
        Assert.IsNull(output.PooledOutput, "DistilBERT has no pooler");
        Parity.AssertClose(output.LastHiddenState, fixture.Expected["last_hidden_state"], Tolerance, "distilbert-tiny last_hidden_state");
    }

    [TestMethod]
    public void StateDictKeysAndShapesEqualTheCheckpoint()
    {
        var fixture = EncoderFixture.Load("distilbert-tiny");
        var checkpoint = fixture.CheckpointKeysAndShapes();
        Parity.AssertSameKeys(checkpoint, EncoderFixture.KeysAndShapes(ModelFactory.CreateBaseModel(fixture.Config)), "DistilBertModel vs distilbert-tiny");

        Parity.AssertSameKeys(
            Parity.Expect(checkpoint, "distilbert", _ => true,
                "pre_classifier.weight [32, 32]", "pre_classifier.bias [32]", "classifier.weight [4, 32]", "classifier.bias [4]"),
            EncoderFixture.KeysAndShapes(ModelFactory.CreateSequenceClassification(fixture.Config, 4)), "DistilBertForSequenceClassification");
        Parity.AssertSameKeys(
            Parity.Expect(checkpoint, "distilbert", _ => true, "qa_outputs.weight [2, 32]", "qa_outputs.bias [2]"),
            EncoderFixture.KeysAndShapes(ModelFactory.CreateQuestionAnswering(fixture.Config)), "DistilBertForQuestionAnswering");
    }

    [TestMethod]
    public void BaseCheckpointIntoTaskModelsReportsTheNewHeads()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("distilbert-tiny");
        var (classifier, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 2);
        Console.WriteLine($"classifier: {report}");
        CollectionAssert.AreEquivalent(new[] { "pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias" }, report.Missing.ToArray());
        Assert.AreEqual(0, report.Unexpected.Count);
        CollectionAssert.AreEqual(new[] { "pre_classifier", "classifier" }, classifier.HeadModuleNames.ToArray());

        var (qa, qaReport) = ModelFactory.FromPretrainedQuestionAnswering(fixture.Folder);
        Console.WriteLine($"qa: {qaReport}");
        CollectionAssert.AreEquivalent(new[] { "qa_outputs.weight", "qa_outputs.bias" }, qaReport.Missing.ToArray());
        var (start, end) = qa.forward(fixture.Inputs());
        CollectionAssert.AreEqual(new long[] { 2, 12 }, start.shape);
        CollectionAssert.AreEqual(new long[] { 2, 12 }, end.shape);
    }

    [TestMethod]
    public void SinusoidalPositionsFollowTheFormula()
    {
        using var scope = NewDisposeScope();
        var config = MLNet.FineTune.Checkpoints.HfConfig.Parse(
            """{"model_type":"distilbert","vocab_size":50,"dim":8,"n_layers":1,"n_heads":2,"hidden_dim":16,"max_position_embeddings":10,"sinusoidal_pos_embds":true}""");
        var model = new DistilBertModel(config);
        var table = model.state_dict()["embeddings.position_embeddings.weight"];
        // position 3, feature 4 (even, pair 2): sin(3 / 10000^(4/8)); feature 5 (odd, pair 2): cos(3 / 10000^(4/8))
        double angle = 3 / Math.Pow(10000, 4.0 / 8);
        Assert.AreEqual(Math.Sin(angle), table[3, 4].item<float>(), 1e-6);
        Assert.AreEqual(Math.Cos(angle), table[3, 5].item<float>(), 1e-6);
        Assert.IsFalse(table.requires_grad, "sinusoidal positions are frozen");
    }
}
