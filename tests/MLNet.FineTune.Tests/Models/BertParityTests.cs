using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>BERT against transformers 5.17 on the committed fixtures (random tiny models, second row unpadded, first row
/// right-padded by 2): every position of every expected tensor is compared, padding positions included.</summary>
[TestClass]
public sealed class BertParityTests
{
    [ClassInitialize] public static void LoadTorch(TestContext _) => MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();

    private const double Tolerance = 1e-5;

    [TestMethod]
    public void BaseModelMatchesTransformers()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny");
        var (model, report) = ModelFactory.FromPretrainedBaseModel(fixture.Folder);
        Console.WriteLine(report);
        Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType<BertModel>(model);

        var output = model.forward(fixture.Inputs());
        Parity.AssertClose(output.LastHiddenState, fixture.Expected["last_hidden_state"], Tolerance, "bert-tiny last_hidden_state");
        Parity.AssertClose(output.PooledOutput!, fixture.Expected["pooler_output"], Tolerance, "bert-tiny pooler_output");
    }

    [TestMethod]
    public void SequenceClassificationMatchesTransformers()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny-cls");
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 3);
        Console.WriteLine(report);
        Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType<BertForSequenceClassification>(model);
        Assert.AreEqual(3, model.NumLabels);

        Parity.AssertClose(model.forward(fixture.Inputs()), fixture.Expected["logits"], Tolerance, "bert-tiny-cls logits");
    }

    [TestMethod]
    public void QuestionAnsweringMatchesTransformers()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny-qa");
        var (model, report) = ModelFactory.FromPretrainedQuestionAnswering(fixture.Folder);
        Console.WriteLine(report);
        Assert.AreEqual(0, report.Missing.Count + report.Unexpected.Count, report.ToString());
        Assert.IsInstanceOfType<BertForQuestionAnswering>(model);

        var (start, end) = model.forward(fixture.Inputs());
        Parity.AssertClose(start, fixture.Expected["start_logits"], Tolerance, "bert-tiny-qa start_logits");
        Parity.AssertClose(end, fixture.Expected["end_logits"], Tolerance, "bert-tiny-qa end_logits");
    }

    [TestMethod]
    public void StateDictKeysAndShapesEqualTheCheckpoints()
    {
        var bertTiny = EncoderFixture.Load("bert-tiny");
        Parity.AssertSameKeys(bertTiny.CheckpointKeysAndShapes(), EncoderFixture.KeysAndShapes(ModelFactory.CreateBaseModel(bertTiny.Config)), "BertModel vs bert-tiny");

        var cls = EncoderFixture.Load("bert-tiny-cls");
        Parity.AssertSameKeys(cls.CheckpointKeysAndShapes(), EncoderFixture.KeysAndShapes(ModelFactory.CreateSequenceClassification(cls.Config, 3)),
            "BertForSequenceClassification vs bert-tiny-cls");

        var qa = EncoderFixture.Load("bert-tiny-qa");
        Parity.AssertSameKeys(qa.CheckpointKeysAndShapes(), EncoderFixture.KeysAndShapes(ModelFactory.CreateQuestionAnswering(qa.Config)),
            "BertForQuestionAnswering vs bert-tiny-qa");
    }

    [TestMethod]
    public void PaddingOnEitherSideIsMasked()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny");
        var (model, _) = ModelFactory.FromPretrainedBaseModel(fixture.Folder);
        var ids = fixture.InputIds;
        var types = fixture.TokenTypeIds!;

        // Right padding: the padded row's real tokens equal that row run alone without padding.
        var alone = model.forward(new EncoderInputs(
            EncoderFixture.Matrix([ids[0][..10]]), ones(1, 10, ScalarType.Int64), EncoderFixture.Matrix([types[0][..10]]))).LastHiddenState;
        var padded = fixture.Expected["last_hidden_state"][0, ..10].unsqueeze(0);
        double rightError = Parity.MaxAbsError(alone, padded, "right padding");
        Console.WriteLine($"row alone vs right-padded row (transformers): max |diff| on real tokens = {rightError:E3}");
        Assert.IsTrue(rightError <= Tolerance);

        // Either side: whatever the padding positions hold, the real tokens' states do not change.
        long[][] mask = [[0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]];
        long[][] idsA = [[0, 0, .. ids[0][..10]], [.. ids[1][..10], 0, 0]];
        long[][] idsB = [[77, 401, .. ids[0][..10]], [.. ids[1][..10], 300, 12]];
        var a = model.forward(new EncoderInputs(EncoderFixture.Matrix(idsA), EncoderFixture.Matrix(mask))).LastHiddenState;
        var b = model.forward(new EncoderInputs(EncoderFixture.Matrix(idsB), EncoderFixture.Matrix(mask))).LastHiddenState;
        var real = EncoderFixture.Matrix(mask).to_type(ScalarType.Bool);
        double leakLeft = Parity.MaxAbsError(a[0][real[0]], b[0][real[0]], "left-padded row");
        double leakRight = Parity.MaxAbsError(a[1][real[1]], b[1][real[1]], "right-padded row");
        double padChange = (a - b).abs().max().item<float>();
        Console.WriteLine($"changing padding tokens: real-token change left {leakLeft:E3}, right {leakRight:E3}; padding-position change {padChange:E3}");
        Assert.IsTrue(leakLeft <= 1e-6 && leakRight <= 1e-6, "padding tokens leaked into real tokens");
        Assert.IsTrue(padChange > 1e-3, "the padding ids did change the inputs (the test would be vacuous otherwise)");
    }
}
