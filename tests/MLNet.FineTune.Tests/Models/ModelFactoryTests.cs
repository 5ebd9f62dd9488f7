using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

[TestClass]
public sealed class ModelFactoryTests
{
    [ClassInitialize] public static void LoadTorch(TestContext _) => MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();

    [TestMethod]
    public void BaseCheckpointIntoClassifierReportsTheNewHead()
    {
        using var scope = NewDisposeScope();
        var fixture = EncoderFixture.Load("bert-tiny");
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 3);
        Console.WriteLine(report);
        Assert.IsInstanceOfType<BertForSequenceClassification>(model);
        CollectionAssert.AreEquivalent(new[] { "classifier.weight", "classifier.bias" }, report.Missing.ToArray());
        Assert.AreEqual(0, report.Unexpected.Count);
        Assert.AreEqual(39, report.Loaded.Count, "every base tensor, pooler included, loads under 'bert.'");
        CollectionAssert.Contains(report.Loaded.ToArray(), "bert.pooler.dense.weight");
        CollectionAssert.Contains(report.Loaded.ToArray(), "bert.embeddings.word_embeddings.weight");
        StringAssert.Contains(report.ToString(), "classifier.weight");

        // The loaded backbone is the checkpoint's: its pooled output is transformers' pooler_output.
        var backbone = model.named_children().Single(c => c.name == "bert").module as BertModel;
        Assert.IsNotNull(backbone);
        Parity.AssertClose(backbone.forward(fixture.Inputs()).PooledOutput!, fixture.Expected["pooler_output"], 1e-5, "backbone inside the classifier, pooler_output");
    }

    [TestMethod]
    [DataRow("bert-tiny", "classifier.weight", "classifier.bias")]
    [DataRow("roberta-tiny", "classifier.out_proj.weight", "classifier.out_proj.bias")]
    [DataRow("distilbert-tiny", "classifier.weight", "classifier.bias")]
    public void NewHeadStartsAsTransformersInitialisesIt(string folder, string weightKey, string biasKey)
    {
        // A larger head (512 labels x 32 = 16384 weights) so the sample std is within about 0.6% (1 s.e.) of the truth;
        // the 5% bound is ~9 s.e. yet far from TorchSharp's default Linear init (kaiming-uniform, std 1/sqrt(3*32) = 0.102).
        using var scope = NewDisposeScope();
        manual_seed(20240601);
        var fixture = EncoderFixture.Load(folder);
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(fixture.Folder, numLabels: 512);
        CollectionAssert.Contains(report.Missing.ToArray(), weightKey);
        double range = fixture.Config.GetDouble("initializer_range");
        var weight = model.state_dict()[weightKey].to_type(ScalarType.Float64);
        var bias = model.state_dict()[biasKey];
        double std = weight.std().item<double>(), mean = weight.mean().item<double>();
        Console.WriteLine($"{folder} {weightKey} {string.Join("x", weight.shape)}: std {std:F6} (initializer_range {range}), mean {mean:E3}; bias max |b| {bias.abs().max().item<float>()}");
        Assert.AreEqual(range, std, 0.05 * range, "head weight std");
        Assert.AreEqual(0, mean, 0.001, "head weight mean");
        Assert.AreEqual(0f, bias.abs().max().item<float>(), "head bias starts at zero");
    }

    [TestMethod]
    public void TaskCheckpointsIntoOtherModelsReportWhatDidNotFit()
    {
        using var scope = NewDisposeScope();
        var (_, intoBase) = ModelFactory.FromPretrainedBaseModel(TestPaths.Fixture("hf-reference", "bert-tiny-cls"));
        Console.WriteLine($"bert-tiny-cls -> BertModel: {intoBase}");
        Assert.AreEqual(0, intoBase.Missing.Count);
        CollectionAssert.AreEquivalent(new[] { "classifier.weight", "classifier.bias" }, intoBase.Unexpected.ToArray());
        CollectionAssert.Contains(intoBase.Loaded.ToArray(), "embeddings.word_embeddings.weight", "'bert.' prefix stripped");

        var (_, qaIntoClassifier) = ModelFactory.FromPretrainedSequenceClassification(TestPaths.Fixture("hf-reference", "bert-tiny-qa"), numLabels: 2);
        Console.WriteLine($"bert-tiny-qa -> BertForSequenceClassification: {qaIntoClassifier}");
        CollectionAssert.AreEquivalent(new[] { "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias" }, qaIntoClassifier.Missing.ToArray());
        CollectionAssert.AreEquivalent(new[] { "qa_outputs.weight", "qa_outputs.bias" }, qaIntoClassifier.Unexpected.ToArray());
    }

    [TestMethod]
    [DataRow("bert-tiny")]
    [DataRow("roberta-tiny")]
    [DataRow("distilbert-tiny")]
    public void EveryFamilyRejectsAClassifierWithoutLabels(string folder)
    {
        var config = HfConfig.Load(TestPaths.Fixture("hf-reference", folder));
        var error = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ModelFactory.CreateSequenceClassification(config, 0));
        Console.WriteLine($"{folder}: {error.Message}");
        Assert.AreEqual("numLabels", error.ParamName);
        StringAssert.Contains(error.Message, "at least one label");
        Assert.AreEqual(1, ModelFactory.CreateSequenceClassification(config, 1).NumLabels);
    }

    [TestMethod]
    public void WrongLabelCountNamesTheKey()
    {
        var error = Assert.ThrowsExactly<InvalidDataException>(() =>
            ModelFactory.FromPretrainedSequenceClassification(TestPaths.Fixture("hf-reference", "bert-tiny-cls"), numLabels: 2));
        Console.WriteLine(error.Message);
        StringAssert.Contains(error.Message, "'classifier.");
        StringAssert.Contains(error.Message, "[3]");
        StringAssert.Contains(error.Message, "bert-tiny-cls");
    }

    [TestMethod]
    public void UnsupportedModelTypeListsTheSupportedOnes()
    {
        var config = HfConfig.Parse("""{"model_type": "t5", "d_model": 32}""", "t5/config.json");
        foreach (var create in new Action[] { () => ModelFactory.CreateBaseModel(config), () => ModelFactory.CreateSequenceClassification(config, 2), () => ModelFactory.CreateQuestionAnswering(config) })
        {
            var error = Assert.ThrowsExactly<NotSupportedException>(create);
            Console.WriteLine(error.Message);
            foreach (var expected in new[] { "t5/config.json", "\"t5\"", "bert", "roberta", "distilbert" }) StringAssert.Contains(error.Message, expected);
        }
        var activation = Assert.ThrowsExactly<NotSupportedException>(() =>
            ModelFactory.CreateBaseModel(HfConfig.Parse("""{"model_type": "bert", "hidden_act": "mish"}""", "x/config.json")));
        StringAssert.Contains(activation.Message, "hidden_act");
        StringAssert.Contains(activation.Message, "mish");
    }

    [TestMethod]
    public void ModelTypeComesFromArchitecturesWhenAbsent()
    {
        Assert.AreEqual("distilbert", ModelFactory.ResolveModelType(HfConfig.Parse("""{"architectures": ["DistilBertForMaskedLM"]}""")));
        Assert.AreEqual("roberta", ModelFactory.ResolveModelType(HfConfig.Parse("""{"architectures": ["RobertaForSequenceClassification"]}""")));
        Assert.AreEqual("bert", ModelFactory.ResolveModelType(HfConfig.Parse("""{"architectures": ["BertForQuestionAnswering"]}""")));
        Assert.AreEqual("bert", ModelFactory.ResolveModelType(HfConfig.Parse("""{"model_type": "bert", "architectures": ["Whatever"]}""")));
        var model = ModelFactory.CreateBaseModel(HfConfig.Parse(
            """{"architectures": ["BertModel"], "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}"""));
        Assert.IsInstanceOfType<BertModel>(model);
        Assert.ThrowsExactly<InvalidDataException>(() => ModelFactory.ResolveModelType(HfConfig.Parse("""{"architectures": ["T5Model"]}""")));
    }

    [TestMethod]
    public void ConfigsReadTransformersKeysAndDefaults()
    {
        var bert = BertConfig.FromHf(EncoderFixture.Load("bert-tiny").Config);
        Assert.AreEqual((512, 32, 2, 4, 64, "gelu", 1e-12, 0), (bert.VocabSize, bert.HiddenSize, bert.NumHiddenLayers, bert.NumAttentionHeads, bert.IntermediateSize, bert.HiddenAct, bert.LayerNormEps, bert.PadTokenId));
        Assert.IsNull(bert.ClassifierDropout);
        var roberta = RobertaConfig.FromHf(EncoderFixture.Load("roberta-tiny").Config);
        Assert.AreEqual((1, 66, 64), (roberta.PadTokenId, roberta.MaxPositionEmbeddings, roberta.MaxSequenceLength));
        Assert.AreEqual(1, RobertaConfig.FromHf(HfConfig.Parse("""{"model_type":"roberta"}""")).PadTokenId, "RoBERTa's default pad id");
        var distil = DistilBertConfig.FromHf(EncoderFixture.Load("distilbert-tiny").Config);
        Assert.AreEqual((32, 2, 4, 64, "gelu", 0.2, 0.1), (distil.Dim, distil.NLayers, distil.NHeads, distil.HiddenDim, distil.Activation, distil.SeqClassifDropout, distil.QaDropout));
        Assert.ThrowsExactly<NotSupportedException>(() => BertConfig.FromHf(HfConfig.Parse("""{"position_embedding_type":"relative_key"}""")));
    }

    [TestMethod]
    [DataRow("bert", ScalarType.Float32)]
    [DataRow("roberta", ScalarType.BFloat16)]
    [DataRow("distilbert", ScalarType.BFloat16)]
    public void TrainModeAppliesDropoutAndGradientsReachTheAttention(string modelType, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var config = HfConfig.Parse($$"""
            {"model_type":"{{modelType}}","vocab_size":64,"hidden_size":16,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":32,
             "max_position_embeddings":40,"dim":16,"n_layers":1,"n_heads":2,"hidden_dim":32,"pad_token_id":1}
            """);
        var model = ModelFactory.CreateSequenceClassification(config, 2).to(dtype);
        var inputs = new EncoderInputs(randint(2, 64, [3, 10], dtype: ScalarType.Int64), ones(3, 10, ScalarType.Int64));

        model.eval();
        var first = model.forward(inputs);
        Assert.IsTrue(first.eq(model.forward(inputs)).all().item<bool>(), "eval mode is deterministic");
        model.train();
        var a = model.forward(inputs);
        Assert.IsFalse(a.eq(model.forward(inputs)).all().item<bool>(), "train mode applies dropout (default probabilities 0.1)");

        nn.functional.cross_entropy(a.to_type(ScalarType.Float32), tensor(new long[] { 0, 1, 0 })).backward();
        var attentionWeights = model.named_parameters().Where(p => p.name.Contains("attention") && p.name.EndsWith("weight", StringComparison.Ordinal)).ToList();
        Assert.IsTrue(attentionWeights.Count >= 4);
        foreach (var (name, parameter) in attentionWeights)
            Assert.IsTrue(parameter.grad is not null && parameter.grad.abs().sum().to_type(ScalarType.Float32).item<float>() > 0, $"no gradient reached {name}");
        Assert.AreEqual(dtype, attentionWeights[0].parameter.grad!.dtype);
        Console.WriteLine($"{modelType} {dtype}: dropout active in train mode; gradients on {attentionWeights.Count} attention weights");
    }

    [TestMethod]
    public void TooLongInputNamesTheLimit()
    {
        using var scope = NewDisposeScope();
        var (model, _) = ModelFactory.FromPretrainedBaseModel(TestPaths.Fixture("hf-reference", "bert-tiny"));
        var error = Assert.ThrowsExactly<ArgumentException>(() => model.forward(new EncoderInputs(zeros(1, 65, ScalarType.Int64), ones(1, 65, ScalarType.Int64))));
        StringAssert.Contains(error.Message, "max_position_embeddings = 64");
    }
}
