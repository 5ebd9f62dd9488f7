using MLNet.FineTune.Models;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Models;

/// <summary>
/// The transformers fixtures were saved straight after initialisation, so their biases are 0 and norm weights 1: parity
/// on them cannot see a bias or norm weight applied wrongly. Here those are randomised and the model is checked against
/// the Qwen2 equations written out in float64, one head at a time (explicit softmax, RoPE as pair rotations,
/// key/value head = query head / group).
/// </summary>
[TestClass]
public sealed class Qwen2ExplicitMathTests
{
    [TestMethod]
    public void RandomBiasesAndNormWeightsFollowTheEquations()
    {
        using var model = (LlamaForCausalLM)ModelFactory.FromPretrainedCausalLM(TestPaths.Fixture("hf-reference", "qwen2-tiny"));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        manual_seed(3);
        foreach (var (name, p) in model.named_parameters())
        {
            if (name.EndsWith(".bias")) p.copy_(randn_like(p) * 0.5);
            else if (name.Contains("norm")) p.copy_(1 + randn_like(p) * 0.3);
        }
        long[] ids = [5, 17, 99, 230, 41, 8, 77];
        var ours = model.call(tensor(ids, [1, ids.Length]))[0].to_type(ScalarType.Float64);   // (T, V)

        var s = model.Settings;
        var w = model.state_dict().ToDictionary(p => p.Key, p => p.Value.to_type(ScalarType.Float64));
        int T = ids.Length, H = s.NumAttentionHeads, Hkv = s.NumKeyValueHeads, D = s.HeadDim;
        Tensor Rms(Tensor x, string key) => x / (x.pow(2).mean([-1L], keepdim: true) + s.RmsNormEps).sqrt() * w[key];
        Tensor Linear(Tensor x, string key) => x.matmul(w[key + ".weight"].t()) + (w.TryGetValue(key + ".bias", out var b) ? b : 0.0);
        Tensor Rotate(Tensor x)   // x (T, D): dims i and i + D/2 form a pair rotated by position * theta^(-2i/D)
        {
            var y = x.clone();
            for (int t = 0; t < T; t++)
                for (int i = 0; i < D / 2; i++)
                {
                    double angle = t / Math.Pow(s.Rope.Theta, 2.0 * i / D), c = Math.Cos(angle), sn = Math.Sin(angle);
                    double a = x[t, i].item<double>(), bb = x[t, i + D / 2].item<double>();
                    y[t, i] = a * c - bb * sn;
                    y[t, i + D / 2] = bb * c + a * sn;
                }
            return y;
        }

        var h = w["model.embed_tokens.weight"].index_select(0, tensor(ids));                       // (T, C)
        for (int l = 0; l < s.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var a = Rms(h, p + "input_layernorm.weight");
            var q = Linear(a, p + "self_attn.q_proj").view(T, H, D);
            var k = Linear(a, p + "self_attn.k_proj").view(T, Hkv, D);
            var v = Linear(a, p + "self_attn.v_proj").view(T, Hkv, D);
            var heads = new List<Tensor>();
            for (int head = 0; head < H; head++)
            {
                int kvHead = head / (H / Hkv);
                var qh = Rotate(q.select(1, head));
                var kh = Rotate(k.select(1, kvHead));
                var scores = qh.matmul(kh.t()) / Math.Sqrt(D);                                     // (T, T)
                scores = scores.masked_fill(ones(T, T, dtype: ScalarType.Bool).triu(1), double.NegativeInfinity);
                var probabilities = scores.exp() / scores.exp().sum([-1L], keepdim: true);
                heads.Add(probabilities.matmul(v.select(1, kvHead)));                                // (T, D)
            }
            h = h + Linear(cat(heads, 1), p + "self_attn.o_proj");
            var m = Rms(h, p + "post_attention_layernorm.weight");
            var gate = Linear(m, p + "mlp.gate_proj");
            h = h + Linear(gate * gate.sigmoid() * Linear(m, p + "mlp.up_proj"), p + "mlp.down_proj");
        }
        var reference = Rms(h, "model.norm.weight").matmul(w["model.embed_tokens.weight"].t());  // tied head
        double error = (ours - reference).abs().max().item<double>();
        // The fixture's first row starts with these 7 tokens, computed by transformers with zero biases and unit norms.
        var untouched = CausalFixture.Load("qwen2-tiny").Logits[0].narrow(0, 0, T).to_type(ScalarType.Float64);
        double effect = (ours - untouched).abs().max().item<double>();
        Console.WriteLine($"qwen2-tiny with random q/k/v biases and norm weights: max |ours(fp32) - equations(fp64)| = {error:E3}; logit scale {reference.abs().max().item<double>():F3}");
        Console.WriteLine($"the randomised parameters moved the logits by up to {effect:E3} from the fixture's");
        Assert.IsTrue(effect > 1e-2, "randomising biases and norms must change the output, or this test proves nothing");
        Assert.IsTrue(error <= 1e-5, $"{error:E3}");
    }
}
