using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>The trainable-parameter report on a BERT-base-shaped classifier (random weights), against the count
/// formula and PEFT's published figure for bert-base-uncased with LoRA r=8 on query and value (0.27%).</summary>
[TestClass]
public sealed class TrainableFractionTests
{
    [TestMethod]
    public void BertBaseWithLoraR8OnQueryValueTrains0Point27Percent()
    {
        const long vocab = 30522, hidden = 768, layers = 12, inner = 3072, positions = 512, types = 2, labels = 2, r = 8;
        var config = HfConfig.Parse($$"""
            {"model_type": "bert", "vocab_size": {{vocab}}, "hidden_size": {{hidden}}, "num_hidden_layers": {{layers}},
             "num_attention_heads": 12, "intermediate_size": {{inner}}, "max_position_embeddings": {{positions}},
             "type_vocab_size": {{types}}, "hidden_act": "gelu"}
            """);
        using var model = ModelFactory.CreateSequenceClassification(config, (int)labels);

        // BERT-base's parameters, term by term: embeddings (+ LayerNorm), per layer q/k/v/o, FFN in/out, 2 LayerNorms,
        // the pooler, the classifier.
        long embeddings = (vocab + positions + types) * hidden + 2 * hidden;
        long perLayer = 4 * (hidden * hidden + hidden) + (hidden * inner + inner) + (inner * hidden + hidden) + 2 * 2 * hidden;
        long pooler = hidden * hidden + hidden, head = hidden * labels + labels;
        long baseTotal = embeddings + layers * perLayer + pooler + head;
        Assert.AreEqual(109_483_778L, baseTotal, "bert-base-uncased + a 2-class head");
        Assert.AreEqual(baseTotal, model.parameters().Sum(p => p.numel()));

        var peft = PeftModel.Inject(model, new LoraOptions { Rank = (int)r, Alpha = 16, Dropout = 0.1 });   // default targets: query, value
        var count = peft.CountParameters();
        long lora = layers * 2 * (r * hidden + hidden * r);
        Console.WriteLine(count);
        Console.WriteLine($"formula: LoRA {layers} layers x 2 modules x (r*in + out*r) = {lora:N0}, + classifier {head:N0} = {lora + head:N0} of {baseTotal + lora:N0}");
        Assert.AreEqual(24, peft.Layers.Count);
        Assert.AreEqual(lora + head, count.Trainable);
        Assert.AreEqual(baseTotal + lora, count.Total);
        Assert.AreEqual(296_450L, count.Trainable);
        Assert.AreEqual("0.27", count.Percent.ToString("F2", System.Globalization.CultureInfo.InvariantCulture), "PEFT reports 0.27% for bert-base-uncased");
    }
}
