using MLNet.FineTune.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

/// <summary>A small classifier with the parameter kinds the trainer must tell apart: linear weights, biases, a
/// LayerNorm and dropout. Field names follow Hugging Face's spelling.</summary>
internal sealed class TinyClassifier : nn.Module<Tensor, Tensor>
{
    private nn.Module<Tensor, Tensor> dense;
    private readonly LayerNorm LayerNorm;
    private readonly Dropout dropout;
    private nn.Module<Tensor, Tensor> classifier;

    public TinyClassifier(int inputs, int hidden, int classes, double dropoutP) : base(nameof(TinyClassifier))
    {
        dense = nn.Linear(inputs, hidden);
        LayerNorm = nn.LayerNorm(hidden);
        dropout = nn.Dropout(dropoutP);
        classifier = nn.Linear(hidden, classes);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) // (B, inputs) -> (B, classes)
    {
        using var scope = NewDisposeScope();
        var h = dropout.forward(LayerNorm.forward(nn.functional.gelu(dense.forward(x)))); // (B, hidden)
        return classifier.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>A synthetic classification task: inputs from a fixed seed, labels from a fixed random projection.</summary>
internal sealed class TinyTask : IDisposable
{
    public const int Inputs = 6, Hidden = 16, Classes = 3;

    public TinyTask(int examples, double dropout = 0.0, int modelSeed = 1, int dataSeed = 123, bool shiftLabels = false)
    {
        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        using (var g = new Generator((ulong)dataSeed, CPU))
        {
            X = randn([examples, Inputs], generator: g);                       // (N, 6)
            var projection = randn([Inputs, Classes], generator: g);           // (6, 3)
            Y = X.matmul(projection).argmax(1);                                // (N,)
            if (shiftLabels) Y = Y.add(1).remainder(Classes);                  // a validation set the training drives away from
            projection.Dispose();
        }
        manual_seed(modelSeed);
        Model = new TinyClassifier(Inputs, Hidden, Classes, dropout);
        Count = examples;
    }

    public TinyClassifier Model { get; }
    public Tensor X { get; }
    public Tensor Y { get; }
    public int Count { get; }

    /// <summary>Mean cross-entropy of the given examples (what a task's collate + forward + loss does).</summary>
    public Tensor Loss(IReadOnlyList<int> indices)
    {
        using var idx = tensor(indices.Select(i => (long)i).ToArray());
        return nn.functional.cross_entropy(Model.forward(X.index_select(0, idx)), Y.index_select(0, idx));
    }

    /// <summary>Mean cross-entropy of this model on another task's data (a validation metric, lower is better).</summary>
    public double LossOn(TinyTask data)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        bool training = Model.training;
        Model.eval();
        var value = nn.functional.cross_entropy(Model.forward(data.X), data.Y).item<float>();
        Model.train(training);
        return value;
    }

    public IReadOnlyList<TrainableParameter> Parameters() => ParameterGroups.FromModule(Model);

    /// <summary>Copies of every trainable parameter by name.</summary>
    public Dictionary<string, Tensor> Snapshot() =>
        Model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone().DetachFromDisposeScope());

    public TrainingSetup Setup(TrainingOptions options, Func<EvaluationResult>? evaluate = null, Func<IReadOnlyList<int>, Tensor>? loss = null,
        IReadOnlyDictionary<string, string>? fingerprint = null, IReadOnlyList<TrainableParameter>? parameters = null, Action<string>? log = null) => new()
    {
        Log = log,
        Model = Model, Parameters = parameters ?? Parameters(), ExampleCount = Count, ComputeLoss = loss ?? Loss, Evaluate = evaluate, Options = options,
        RunFingerprint = fingerprint,
    };

    public static double MaxDifference(IReadOnlyDictionary<string, Tensor> a, IReadOnlyDictionary<string, Tensor> b) =>
        a.Keys.Max(k => (a[k] - b[k]).abs().max().item<float>());

    public void Dispose()
    {
        Model.Dispose(); X.Dispose(); Y.Dispose();
    }
}

/// <summary>Reports synchronously on the training thread (System.Progress posts to the thread pool).</summary>
internal sealed class SyncProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
