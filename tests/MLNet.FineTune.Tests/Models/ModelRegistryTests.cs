using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Models;

/// <summary>One registry for encoders and causal LMs: the wrong kind of folder for a task is named in the user's terms,
/// and every config record reads config.json with the same named errors.</summary>
[TestClass]
public sealed class ModelRegistryTests
{
    private const string TinyLlama = """
        {"model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2}
        """;

    [TestMethod]
    public void ACausalFolderGivenToAnEncoderTaskSaysItIsACausalModel()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() =>
            ModelFactory.CreateSequenceClassification(HfConfig.Parse(TinyLlama, "llama/config.json"), 2));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "model_type 'llama' is a causal language model");
        StringAssert.Contains(e.Message, "sequence classification needs an encoder: bert, distilbert, roberta");
    }

    [TestMethod]
    public void AnEncoderFolderGivenToTheCausalTaskSaysItIsAnEncoder()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() =>
            ModelFactory.CreateCausalLM(HfConfig.Parse("""{"model_type": "bert"}""", "bert/config.json")));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "model_type 'bert' is an encoder");
        StringAssert.Contains(e.Message, "needs a causal language model: gpt2, llama, mistral, qwen2");
    }

    [TestMethod]
    public void EveryFamilyHasTheBuildersOfItsKindAndAUniqueModelType()
    {
        Assert.AreEqual(ModelRegistry.Families.Count, ModelRegistry.Families.Select(f => f.ModelType).Distinct().Count());
        foreach (var f in ModelRegistry.Families)
        {
            bool encoder = f.Kind == ModelKind.Encoder;
            Assert.AreEqual(encoder, f.Backbone is not null && f.SequenceClassifier is not null && f.QuestionAnswerer is not null, f.ModelType);
            Assert.AreEqual(!encoder, f.CausalLM is not null, f.ModelType);
        }
    }

    [TestMethod]
    public void ArchitecturesIdentifyCausalFamiliesToo()
    {
        Assert.AreEqual("gpt2", ModelRegistry.ResolveModelType(HfConfig.Parse("""{"architectures": ["GPT2LMHeadModel"]}""")));
        Assert.AreEqual("qwen2", ModelRegistry.ResolveModelType(HfConfig.Parse("""{"architectures": ["Qwen2ForCausalLM"]}""")));
        // Without model_type a Mistral config still builds the Llama layout as mistral.
        var mistral = HfConfig.Parse(TinyLlama.Replace("\"model_type\": \"llama\"", "\"architectures\": [\"MistralForCausalLM\"]"));
        using var model = ModelFactory.CreateCausalLM(mistral);
        Assert.AreEqual("mistral", model.ModelType);
        Assert.AreEqual("model", model.BaseModelPrefix);
    }

    [TestMethod]
    public void BoundConfigsNameTheFileAndKeyOfAWrongTypeOrAMissingRequiredKey()
    {
        var wrongType = Assert.ThrowsExactly<InvalidDataException>(() =>
            BertConfig.FromHf(HfConfig.Parse("""{"model_type": "bert", "hidden_size": "wide"}""", "b/config.json")));
        Console.WriteLine(wrongType.Message);
        Assert.AreEqual("b/config.json: 'hidden_size' has value \"wide\", not a Int32.", wrongType.Message);
        var missing = Assert.ThrowsExactly<InvalidDataException>(() =>
            LlamaConfig.FromHf(HfConfig.Parse(TinyLlama.Replace("\"vocab_size\": 32,", ""), "l/config.json")));
        Assert.AreEqual("l/config.json has no 'vocab_size'.", missing.Message);
        var fractional = Assert.ThrowsExactly<InvalidDataException>(() =>
            Gpt2Config.FromHf(HfConfig.Parse("""{"model_type": "gpt2", "n_layer": 2.5}""", "g/config.json")));
        StringAssert.Contains(fractional.Message, "'n_layer' has value 2.5, not a Int32");
    }

    [TestMethod]
    public void NullAndAbsentKeysTakeTransformersDefaults()
    {
        var gpt2 = Gpt2Config.FromHf(HfConfig.Parse("""{"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_inner": null, "n_ctx": 128}"""));
        Assert.AreEqual(256, gpt2.NInner, "n_inner null -> 4 * n_embd");
        Assert.AreEqual(128, gpt2.NPositions, "n_ctx when n_positions is absent");
        Assert.AreEqual("gelu_new", gpt2.ActivationFunction);
        var llama = LlamaConfig.FromHf(HfConfig.Parse(TinyLlama.Replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 2, \"sliding_window\": null")));
        Assert.AreEqual(2, llama.NumKeyValueHeads, "num_key_value_heads defaults to num_attention_heads");
        Assert.AreEqual(8, llama.HeadDim, "head_dim defaults to hidden_size / heads");
        Assert.IsTrue(llama.SlidingWindows.All(w => w is null));
        var distil = DistilBertConfig.FromHf(HfConfig.Parse("""{"model_type": "distilbert", "pad_token_id": null}"""));
        Assert.AreEqual(0, distil.PadTokenId);
        Assert.AreEqual(0.2, distil.SeqClassifDropout);
    }
}
