using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Tasks.FineTuning;

/// <summary>
/// <see cref="ModelDropout.Override"/> reaches every dropout of the encoder families' task models (hidden states,
/// attention probabilities, the heads), also where the config leaves a probability to the family's default.
/// </summary>
[TestClass]
public sealed class ModelDropoutTests
{
    /// <summary>A tiny config of the family with no dropout keys at all: every probability is the family's default
    /// (0.1; DistilBERT's sequence classifier 0.2).</summary>
    private static HfConfig Config(string modelType, string extra = "") => HfConfig.Parse($$"""
        {"model_type":"{{modelType}}","vocab_size":64,"hidden_size":16,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":32,
         "max_position_embeddings":40,"dim":16,"n_layers":1,"n_heads":2,"hidden_dim":32,"pad_token_id":1{{extra}}}
        """);

    private static IEnumerable<(string Head, nn.Module<EncoderInputs, Tensor> Forward)> TaskModels(HfConfig config)
    {
        yield return ("sequence classification", ModelFactory.CreateSequenceClassification(config, 3));
        var qa = ModelFactory.CreateQuestionAnswering(config);
        yield return ("question answering", new SpanLogits(qa));
    }

    /// <summary>Start and end logits side by side, so both heads compare as one tensor.</summary>
    private sealed class SpanLogits : nn.Module<EncoderInputs, Tensor>
    {
        private readonly QuestionAnsweringModel qa;

        public SpanLogits(QuestionAnsweringModel model) : base("span_logits")
        {
            qa = model;
            RegisterComponents(); // train() and modules() reach the QA model
        }

        public override Tensor forward(EncoderInputs inputs)
        {
            var (start, end) = qa.call(inputs); // (B, T) each
            return cat([start, end], 1);        // (B, 2T)
        }
    }

    [TestMethod]
    [DataRow("bert", "")]
    [DataRow("bert", ",\"classifier_dropout\":0.3")]
    [DataRow("roberta", "")]
    [DataRow("distilbert", "")]
    [DataRow("distilbert", ",\"dropout\":0.2,\"qa_dropout\":0.3,\"seq_classif_dropout\":0.4")]
    public void ZeroLeavesNoDropoutInTrainMode(string modelType, string extra)
    {
        using var scope = NewDisposeScope();
        var config = Config(modelType, extra);
        var inputs = new EncoderInputs(randint(2, 64, [3, 10], dtype: ScalarType.Int64), ones(3, 10, ScalarType.Int64)); // (B, T)
        foreach (var (checkpoint, expectDropout) in new[] { (config, true), (ModelDropout.Override(config, 0), false) })
        {
            foreach (var (head, model) in TaskModels(checkpoint))
            {
                manual_seed(5);
                model.eval();
                var eval = model.call(inputs);
                model.train();
                var first = model.call(inputs);
                var second = model.call(inputs);
                double versusEval = first.sub(eval).abs().max().item<float>(), versusItself = first.sub(second).abs().max().item<float>();
                Console.WriteLine($"{modelType}{extra} {head}, {(expectDropout ? "checkpoint's dropout" : "Dropout = 0")}: max |train - eval| {versusEval:E2}, |train - train| {versusItself:E2}");
                if (expectDropout)
                    Assert.IsGreaterThan(1e-4, versusItself, $"{modelType} {head}: the default dropout must act, or this test could not see an override");
                else
                    Assert.AreEqual(0.0, versusEval + versusItself, $"{modelType} {head}: Dropout = 0 left dropout in train mode");
            }
        }
    }

    [TestMethod]
    public void OverrideSetsEveryDropoutProbabilityAndKeepsAnUnsetClassifierDropoutUnset()
    {
        var bert = ModelDropout.Override(Config("bert", ",\"classifier_dropout\":null"), 0.25);
        Assert.AreEqual(0.25, bert.GetDouble("hidden_dropout_prob"));
        Assert.AreEqual(0.25, bert.GetDouble("attention_probs_dropout_prob"));
        Assert.IsFalse(bert.Has("classifier_dropout"), "an unset classifier_dropout means hidden_dropout_prob's, which is already overridden");
        var withClassifier = ModelDropout.Override(Config("roberta", ",\"classifier_dropout\":0.3"), 0.25);
        Assert.AreEqual(0.25, withClassifier.GetDouble("classifier_dropout"));
        var distil = ModelDropout.Override(Config("distilbert"), 0.25);
        foreach (var key in new[] { "dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout" })
            Assert.AreEqual(0.25, distil.GetDouble(key), key);

        // Every dropout module of the task models carries the override (attention dropout is a probability, checked above).
        foreach (var config in new[] { bert, withClassifier, distil })
            foreach (var (head, model) in TaskModels(config))
            {
                var probabilities = model.modules().OfType<MLNet.FineTune.Models.InvertedDropout>().Select(d => d.P).ToList();
                Console.WriteLine($"{config.ModelType} {head}: {probabilities.Count} dropout modules, p = {string.Join(", ", probabilities.Distinct())}");
                Assert.IsNotEmpty(probabilities);
                Assert.IsTrue(probabilities.All(p => p == 0.25), $"{config.ModelType} {head}: dropout modules at {string.Join(", ", probabilities.Distinct())}");
            }

        var unchanged = Config("bert");
        Assert.AreSame(unchanged, ModelDropout.Override(unchanged, null), "null keeps the checkpoint's config");
    }
}
