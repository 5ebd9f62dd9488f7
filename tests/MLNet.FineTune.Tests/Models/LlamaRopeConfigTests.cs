using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Models;

/// <summary>RoPE settings read from transformers 4 (rope_theta, rope_scaling) and 5 (rope_parameters) configs.</summary>
[TestClass]
public sealed class LlamaRopeConfigTests
{
    // head_dim 128 and Llama 3.1's settings, so that all three llama3 regimes (kept, blended, divided) occur.
    private const string Shape = """
        "model_type": "llama", "vocab_size": 16, "hidden_size": 256, "intermediate_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1
        """;
    private const string Llama3Scaling = """
        "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192
        """;

    private static float[] InverseFrequencies(string body) =>
        ((LlamaForCausalLM)ModelFactory.CreateCausalLM(HfConfig.Parse("{" + Shape + "," + body + "}"))).RopeInverseFrequencies;

    [TestMethod]
    [DataRow("default",
        """ "rope_theta": 500000.0 """,
        """ "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"} """)]
    [DataRow("linear (4: 'type')",
        """ "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0} """,
        """ "rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 4.0} """)]
    [DataRow("linear (4: 'rope_type')",
        """ "rope_theta": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0} """,
        """ "rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 4.0} """)]
    [DataRow("llama3",
        """ "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", """ + Llama3Scaling + "}",
        """ "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", """ + Llama3Scaling + "}")]
    public void Transformers4And5SpellingsGiveTheSameFrequencies(string kind, string v4, string v5)
    {
        var fromV4 = InverseFrequencies(v4);
        var fromV5 = InverseFrequencies(v5);
        Assert.AreEqual(64, fromV4.Length);
        int differing = fromV4.Zip(fromV5).Count(p => p.First != p.Second);
        Console.WriteLine($"{kind}: {fromV4.Length} inverse frequencies, {differing} differ between the spellings; first {fromV4[0]:G9}, last {fromV4[^1]:G9}");
        CollectionAssert.AreEqual(fromV5, fromV4);
    }

    [TestMethod]
    public void DefaultAndLinearFollowTheirFormulas()
    {
        var plain = InverseFrequencies(""" "rope_theta": 10000.0 """);   // no rope keys at all: theta 10000
        var linear = InverseFrequencies(""" "rope_parameters": {"rope_theta": 10000.0, "rope_type": "linear", "factor": 4.0} """);
        double worst = 0;
        for (int i = 0; i < 64; i++)
        {
            double expected = 1.0 / Math.Pow(10000.0, 2.0 * i / 128);
            worst = Math.Max(worst, Math.Max(Math.Abs(plain[i] - expected), Math.Abs(linear[i] - expected / 4)) / expected);
        }
        Console.WriteLine($"default/linear: max relative error vs 1/theta^(2i/D) (and /factor) = {worst:E2}");
        Assert.IsTrue(worst < 1e-6);
    }

    [TestMethod]
    public void Llama3ScalingMatchesThePublishedFormula()
    {
        // Llama 3.1 (Meta's reference apply_scaling): with L = original context, wavelength w = 2 pi / f:
        //   w < L / high_freq_factor -> f;  w > L / low_freq_factor -> f / factor;
        //   otherwise s = (L / w - low) / (high - low) and f' = (1 - s) f / factor + s f.
        const double theta = 500000, factor = 8, low = 1, high = 4, context = 8192;
        var ours = InverseFrequencies(""" "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", """ + Llama3Scaling + "}");
        int kept = 0, divided = 0, blended = 0;
        double worst = 0;
        for (int i = 0; i < 64; i++)
        {
            double f = 1.0 / Math.Pow(theta, 2.0 * i / 128), wavelength = 2 * Math.PI / f, expected;
            if (wavelength < context / high) { expected = f; kept++; }
            else if (wavelength > context / low) { expected = f / factor; divided++; }
            else
            {
                double s = (context / wavelength - low) / (high - low);
                expected = (1 - s) * f / factor + s * f;
                blended++;
            }
            worst = Math.Max(worst, Math.Abs(ours[i] - expected) / expected);
        }
        Console.WriteLine($"llama3: {kept} kept, {blended} blended, {divided} divided by {factor}; max relative error vs the formula in double = {worst:E2}");
        Assert.IsTrue(kept > 0 && blended > 0 && divided > 0, "all three regimes should occur for head_dim 128, theta 5e5");
        Assert.IsTrue(worst < 1e-5, $"{worst:E2}");
    }

    [TestMethod]
    public void UnsupportedRopeTypeNamesItAndTheSupportedOnes()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() =>
            InverseFrequencies(""" "rope_theta": 10000.0, "rope_scaling": {"type": "yarn", "factor": 4.0} """));
        Console.WriteLine(e.Message);
        StringAssert.Contains(e.Message, "'yarn'");
        StringAssert.Contains(e.Message, "default, linear, llama3");
    }
}
