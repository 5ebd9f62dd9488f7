using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft;

/// <summary>A block with BERT-like field names (query, value, dense as Module&lt;Tensor, Tensor&gt;, LayerNorm).</summary>
internal sealed class TinyBlock : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> query;
    private nn.Module<Tensor, Tensor> value;
    private nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;

    public TinyBlock(int hidden, int inner) : base(nameof(TinyBlock))
    {
        query = nn.Linear(hidden, hidden);
        value = nn.Linear(hidden, hidden);
        dense = nn.Linear(hidden, hidden);
        LayerNorm = nn.LayerNorm(hidden);
        _ = inner;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)   // (B, T, C)
    {
        var mixed = nn.functional.gelu(query.call(x)) * nn.functional.sigmoid(value.call(x));
        return LayerNorm.call(x + dense.call(mixed));
    }
}

/// <summary>The stack: <c>layer.N</c>.</summary>
internal sealed class TinyStack : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<TinyBlock> layer;

    public TinyStack(int hidden, int layers) : base(nameof(TinyStack))
    {
        layer = new ModuleList<TinyBlock>(Enumerable.Range(0, layers).Select(_ => new TinyBlock(hidden, 2 * hidden)).ToArray());
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        foreach (var block in layer) x = block.call(x);
        return x;
    }
}

/// <summary>A small classifier with the shape of a BERT task model: <c>encoder.layer.N.{query,value,dense}</c> and a
/// <c>classifier</c> head (IPretrainedModel with model_type "bert", head ["classifier"]).</summary>
internal sealed class TinyClassifier : nn.Module<Tensor, Tensor>, IPretrainedModel
{
    private readonly TinyStack encoder;
    private nn.Module<Tensor, Tensor> classifier;

    public TinyClassifier(int hidden = 16, int layers = 2, int labels = 3) : base(nameof(TinyClassifier))
    {
        TorchRuntime.EnsureLoaded();
        encoder = new TinyStack(hidden, layers);
        classifier = nn.Linear(hidden, labels);
        RegisterComponents();
    }

    public HfConfig Config { get; } = HfConfig.Parse("""{"model_type": "bert"}""");
    public string ModelType => "bert";
    public string BaseModelPrefix => "encoder";
    public IReadOnlyList<string> HeadModuleNames => ["classifier"];

    public override Tensor forward(Tensor x) => classifier.call(encoder.call(x).mean([1]));   // (B, T, C) -> (B, labels)

    /// <summary>A model with weights drawn from <paramref name="seed"/>.</summary>
    public static TinyClassifier Create(int seed, int hidden = 16, int layers = 2)
    {
        manual_seed(seed);
        var model = new TinyClassifier(hidden, layers);
        model.eval();
        return model;
    }
}

/// <summary>A module whose linear field is typed Linear (against the model conventions): injection must refuse it.</summary>
internal sealed class ConcreteFieldModel : nn.Module<Tensor, Tensor>
{
    private Linear query;

    public ConcreteFieldModel() : base(nameof(ConcreteFieldModel))
    {
        query = nn.Linear(4, 4);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => query.call(x);
}

internal static class TestTensors
{
    /// <summary>max |a - b|.</summary>
    public static double MaxAbsDiff(Tensor a, Tensor b) => (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();

    /// <summary>Bytes of every parameter, by name (for bit-identity checks).</summary>
    public static Dictionary<string, byte[]> Snapshot(nn.Module model) =>
        model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().cpu().bytes.ToArray());

    /// <summary>Random input (B, T, C).</summary>
    public static Tensor Input(int seed, long batch = 3, long length = 5, long hidden = 16)
    {
        manual_seed(seed);
        return randn(batch, length, hidden);
    }
}
