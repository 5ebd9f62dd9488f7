using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// GPT-2 with randomised Conv1D biases and LayerNorm weights/biases (the transformers fixture has zeros and ones there)
/// against GPT-2's equations written out in float64, one head at a time.
/// </summary>
[TestClass]
public sealed class Gpt2ExplicitMathTests
{
    [TestMethod]
    public void RandomBiasesAndLayerNormsFollowTheEquations()
    {
        using var model = (Gpt2LMHeadModel)ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", "gpt2-tiny"));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        manual_seed(4);
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith(".bias")) p.copy_(randn_like(p) * 0.5);
            else if (name.Contains(".ln_")) p.copy_(1 + randn_like(p) * 0.3);
        }
        long[] ids = [5, 17, 99, 230, 41, 8, 77];
        var ours = model.call(tensor(ids, [1, ids.Length]))[0].to_type(ScalarType.Float64);   // (T, V)

        var s = model.Settings;
        var w = model.state_dict().ToDictionary(p => p.Key, p => p.Value.to_type(ScalarType.Float64));
        int T = ids.Length, H = s.NHead, D = s.NEmbd / s.NHead;
        Tensor LayerNorm(Tensor x, string key)
        {
            var centered = x - x.mean([-1L], keepdim: true);
            var variance = centered.pow(2).mean([-1L], keepdim: true);   // biased, as LayerNorm
            return centered / (variance + s.LayerNormEpsilon).sqrt() * w[key + ".weight"] + w[key + ".bias"];
        }
        Tensor Conv1D(Tensor x, string key) => x.matmul(w[key + ".weight"]) + w[key + ".bias"];   // weight [in, out]
        Tensor GeluTanh(Tensor x) => 0.5 * x * (1 + (Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x.pow(3))).tanh());

        var h = w["transformer.wte.weight"].index_select(0, tensor(ids)) + w["transformer.wpe.weight"].narrow(0, 0, T);
        for (int l = 0; l < s.NLayer; l++)
        {
            string p = $"transformer.h.{l}.";
            var qkv = Conv1D(LayerNorm(h, p + "ln_1"), p + "attn.c_attn");                         // (T, 3C)
            var heads = new List<Tensor>();
            for (int head = 0; head < H; head++)
            {
                var q = qkv.narrow(1, head * D, D);
                var k = qkv.narrow(1, s.NEmbd + head * D, D);
                var v = qkv.narrow(1, 2 * s.NEmbd + head * D, D);
                var scores = q.matmul(k.t()) / Math.Sqrt(D);
                scores = scores.masked_fill(ones(T, T, dtype: ScalarType.Bool).triu(1), double.NegativeInfinity);
                heads.Add((scores.exp() / scores.exp().sum([-1L], keepdim: true)).matmul(v));
            }
            h = h + Conv1D(cat(heads, 1), p + "attn.c_proj");
            h = h + Conv1D(GeluTanh(Conv1D(LayerNorm(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj");
        }
        var reference = LayerNorm(h, "transformer.ln_f").matmul(w["transformer.wte.weight"].t());
        double error = (ours - reference).abs().max().item<double>();
        // The fixture's first row starts with these 7 tokens, computed by transformers with zero biases and unit norms.
        var untouched = CausalFixture.Load("gpt2-tiny").Logits[0].narrow(0, 0, T).to_type(ScalarType.Float64);
        double effect = (ours - untouched).abs().max().item<double>();
        Console.WriteLine($"gpt2-tiny with random biases and LayerNorm parameters: max |ours(fp32) - equations(fp64)| = {error:E3}; logit scale {reference.abs().max().item<double>():F3}");
        Console.WriteLine($"the randomised parameters moved the logits by up to {effect:E3} from the fixture's");
        Assert.IsTrue(effect > 1e-2, "randomising biases and norms must change the output, or this test proves nothing");
        Assert.IsTrue(error <= 1e-5, $"{error:E3}");
    }
}
