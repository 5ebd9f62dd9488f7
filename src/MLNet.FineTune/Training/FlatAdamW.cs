using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Training;

/// <summary>
/// AdamW with decoupled weight decay (Loshchilov &amp; Hutter, 2019) that updates all parameters of a group with a
/// handful of tensor operations instead of a loop over parameters.
/// </summary>
/// <remarks>
/// Parameters are bucketed by (dtype, device, learning-rate multiplier, weight decay on/off). Each bucket owns one
/// contiguous buffer for the weights, one for the gradients and one each for the two moment estimates. On
/// construction every parameter is re-pointed (<c>set_</c>) at its slice of the weight buffer and its <c>.grad</c> at its
/// slice of the gradient buffer; autograd then accumulates into those slices in place, so a step costs about seven
/// kernel launches per bucket whatever the number of parameters, and allocates nothing. Numerically this is PyTorch's AdamW
/// (<c>amsgrad=False</c>, <c>maximize=False</c>): per element,
/// <c>p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)</c>.
/// The optimizer owns gradients: do not call <c>Module.zero_grad()</c> (it would detach them from the buffers); call
/// <see cref="ZeroGrad"/>. Moving or casting the model afterwards (<c>Module.to</c>) replaces its parameter objects
/// and ends the binding.
/// </remarks>
internal sealed class FlatAdamW : IDisposable
{
    private sealed record Member(TrainableParameter Source, long Offset, long Count, long[] Shape);

    private sealed class Bucket
    {
        public required ScalarType DType { get; init; }
        public required Device Device { get; init; }
        public required double LearningRateMultiplier { get; init; }
        public required bool ApplyWeightDecay { get; init; }
        public List<Member> Members { get; } = [];
        public Tensor Weights = null!, Grads = null!, ExpAvg = null!, ExpAvgSq = null!, Scratch = null!; // each (numel,)
        public string Layout => string.Join(",", Members.Select(m => $"{m.Source.Name}[{string.Join("x", m.Shape)}]"));
    }

    private readonly List<Bucket> _buckets = [];
    private bool _gradientsVerified;
    private bool _disposed;

    /// <summary>Binds the parameters to flat buffers (their current values are kept).</summary>
    /// <param name="parameters">The parameters to optimize, each requiring grad, each listed once.</param>
    /// <param name="weightDecay">Decoupled weight decay for parameters with <see cref="TrainableParameter.ApplyWeightDecay"/>.</param>
    /// <param name="beta1">First-moment coefficient.</param>
    /// <param name="beta2">Second-moment coefficient.</param>
    /// <param name="epsilon">Added to the denominator.</param>
    public FlatAdamW(IEnumerable<TrainableParameter> parameters, double weightDecay = 0.01, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (weightDecay < 0) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "Weight decay must be 0 or more.");
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, "beta1 must be in [0, 1).");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, "beta2 must be in [0, 1).");
        if (epsilon < 0) throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, "epsilon must be 0 or more.");
        WeightDecay = weightDecay; Beta1 = beta1; Beta2 = beta2; Epsilon = epsilon;

        var list = parameters.ToList();
        if (list.Count == 0) throw new ArgumentException("There are no trainable parameters to optimize.", nameof(parameters));
        var names = new HashSet<string>(StringComparer.Ordinal);
        var handles = new HashSet<IntPtr>();
        foreach (var p in list)
        {
            if (!names.Add(p.Name)) throw new ArgumentException($"Trainable parameter '{p.Name}' is listed twice.", nameof(parameters));
            if (!handles.Add(p.Parameter.Handle)) throw new ArgumentException($"Trainable parameter '{p.Name}' is the same tensor as another listed parameter.", nameof(parameters));
            if (!p.Parameter.requires_grad) throw new ArgumentException($"Trainable parameter '{p.Name}' does not require grad.", nameof(parameters));
            if (!p.Parameter.is_floating_point()) throw new ArgumentException($"Trainable parameter '{p.Name}' has non-floating dtype {p.Parameter.dtype}.", nameof(parameters));
            if (!(p.LearningRateMultiplier >= 0) || double.IsInfinity(p.LearningRateMultiplier))
                throw new ArgumentException($"Trainable parameter '{p.Name}' has an invalid learning-rate multiplier {p.LearningRateMultiplier}.", nameof(parameters));
        }
        Parameters = list;

        MLNet.FineTune.Runtime.TorchRuntime.EnsureLoaded();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var p in list)
        {
            var dtype = p.Parameter.dtype;
            var device = p.Parameter.device;
            var bucket = _buckets.FirstOrDefault(b => b.DType == dtype && b.Device.type == device.type && b.Device.index == device.index
                && b.LearningRateMultiplier == p.LearningRateMultiplier && b.ApplyWeightDecay == p.ApplyWeightDecay);
            if (bucket is null)
            {
                bucket = new Bucket { DType = dtype, Device = device, LearningRateMultiplier = p.LearningRateMultiplier, ApplyWeightDecay = p.ApplyWeightDecay };
                _buckets.Add(bucket);
            }
            long offset = bucket.Members.Count == 0 ? 0 : bucket.Members[^1].Offset + bucket.Members[^1].Count;
            bucket.Members.Add(new Member(p, offset, p.Parameter.numel(), p.Parameter.shape));
        }
        foreach (var b in _buckets)
        {
            long total = b.Members[^1].Offset + b.Members[^1].Count;
            b.Weights = empty(total, b.DType, b.Device).DetachFromDisposeScope();
            b.Grads = zeros(total, b.DType, b.Device).DetachFromDisposeScope();
            b.ExpAvg = zeros(total, b.DType, b.Device).DetachFromDisposeScope();
            b.ExpAvgSq = zeros(total, b.DType, b.Device).DetachFromDisposeScope();
            // The denominator is computed here in place: allocating a buffer of this size every step costs more
            // than the arithmetic (large allocations are fresh pages from the OS each time).
            b.Scratch = empty(total, b.DType, b.Device).DetachFromDisposeScope();
            foreach (var m in b.Members)
            {
                var weightView = b.Weights.narrow(0, m.Offset, m.Count).view(m.Shape);
                weightView.copy_(m.Source.Parameter);
                m.Source.Parameter.set_(weightView);            // the parameter now lives in the flat buffer
                m.Source.Parameter.grad = b.Grads.narrow(0, m.Offset, m.Count).view(m.Shape); // autograd adds into it
            }
        }
    }

    /// <summary>The parameters, in the order given.</summary>
    public IReadOnlyList<TrainableParameter> Parameters { get; }

    /// <summary>Number of flat buckets (distinct dtype, device, multiplier, decay combinations).</summary>
    public int BucketCount => _buckets.Count;

    /// <summary>Optimizer steps taken (the bias-correction step <c>t</c>).</summary>
    public long StepCount { get; private set; }

    /// <summary>Decoupled weight decay.</summary>
    public double WeightDecay { get; }
    /// <summary>First-moment coefficient.</summary>
    public double Beta1 { get; }
    /// <summary>Second-moment coefficient.</summary>
    public double Beta2 { get; }
    /// <summary>Denominator epsilon.</summary>
    public double Epsilon { get; }

    /// <summary>Sets every gradient to zero (in place: the gradients stay bound to the flat buffers).</summary>
    public void ZeroGrad()
    {
        ThrowIfDisposed();
        using var noGrad = no_grad();
        foreach (var b in _buckets) b.Grads.zero_();
    }

    /// <summary>The global L2 norm of all gradients; when <paramref name="maxNorm"/> is positive and the norm exceeds it,
    /// scales every gradient by <c>maxNorm / (norm + 1e-6)</c> as <c>torch.nn.utils.clip_grad_norm_</c> does.</summary>
    /// <returns>The norm before clipping (NaN or infinity when a gradient is not finite; nothing is scaled then).</returns>
    public double ClipGradNorm(double maxNorm)
    {
        ThrowIfDisposed();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        // One norm per bucket, combined on the device when all buckets share one: a single host sync per step.
        var norms = _buckets.Select(b => linalg.vector_norm(b.Grads).to_type(ScalarType.Float32)).ToList();
        if (_buckets.Any(b => b.Device.type != _buckets[0].Device.type || b.Device.index != _buckets[0].Device.index))
            norms = norms.Select(n => n.cpu()).ToList();
        var total = norms.Count == 1 ? norms[0] : linalg.vector_norm(stack(norms));
        double norm = total.cpu().item<float>();
        if (maxNorm > 0 && double.IsFinite(norm))
        {
            double coefficient = maxNorm / (norm + 1e-6);
            if (coefficient < 1.0)
                foreach (var b in _buckets) b.Grads.mul_(coefficient);
        }
        return norm;
    }

    /// <summary>One AdamW update of every parameter with the current gradients.</summary>
    /// <param name="learningRate">The scheduled rate; each bucket uses it times its multiplier.</param>
    public void Step(double learningRate)
    {
        ThrowIfDisposed();
        if (!_gradientsVerified) { VerifyGradientsBound(); _gradientsVerified = true; }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        StepCount++;
        double biasCorrection1 = 1 - Math.Pow(Beta1, StepCount);
        double biasCorrection2Sqrt = Math.Sqrt(1 - Math.Pow(Beta2, StepCount));
        foreach (var b in _buckets)
        {
            double lr = learningRate * b.LearningRateMultiplier;
            if (b.ApplyWeightDecay && WeightDecay != 0) b.Weights.mul_(1 - lr * WeightDecay);
            b.ExpAvg.mul_(Beta1).add_(b.Grads, alpha: 1 - Beta1);
            b.ExpAvgSq.mul_(Beta2).addcmul_(b.Grads, b.Grads, value: 1 - Beta2);
            var denominator = b.Scratch.copy_(b.ExpAvgSq).sqrt_().div_(biasCorrection2Sqrt).add_(Epsilon);
            b.Weights.addcdiv_(b.ExpAvg, denominator, value: -lr / biasCorrection1);
        }
    }

    /// <summary>Copies of the flat weight buffers (one per bucket), detached from any dispose scope; the caller
    /// disposes them. Cheap: one copy per bucket.</summary>
    public IReadOnlyList<Tensor> CloneWeights()
    {
        ThrowIfDisposed();
        using var noGrad = no_grad();
        return _buckets.Select(b => b.Weights.clone().DetachFromDisposeScope()).ToList();
    }

    /// <summary>Puts back weights taken by <see cref="CloneWeights"/>.</summary>
    public void RestoreWeights(IReadOnlyList<Tensor> snapshot)
    {
        ThrowIfDisposed();
        if (snapshot.Count != _buckets.Count) throw new ArgumentException($"The snapshot has {snapshot.Count} buffers; the optimizer has {_buckets.Count}.", nameof(snapshot));
        using var noGrad = no_grad();
        for (int i = 0; i < _buckets.Count; i++) _buckets[i].Weights.copy_(snapshot[i]);
    }

    /// <summary>The parameters by name, viewed in <paramref name="snapshot"/> (from <see cref="CloneWeights"/>), or the
    /// live parameters when it is null. The views share memory; dispose them when done.</summary>
    public Dictionary<string, Tensor> NamedWeights(IReadOnlyList<Tensor>? snapshot = null)
    {
        ThrowIfDisposed();
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int i = 0; i < _buckets.Count; i++)
            foreach (var m in _buckets[i].Members)
                result[m.Source.Name] = snapshot is null ? m.Source.Parameter.alias() : snapshot[i].narrow(0, m.Offset, m.Count).view(m.Shape);
        return result;
    }

    /// <summary>Copies weights by name into the parameters; every parameter must be present with its shape. All are
    /// checked before any is copied, so weights that do not fit leave the parameters as they were.</summary>
    /// <param name="weights">Name to tensor (any dtype and device; converted).</param>
    /// <param name="source">What the weights come from, for error messages.</param>
    public void LoadWeights(IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        CheckWeights(weights, source);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var b in _buckets)
            foreach (var m in b.Members)
                m.Source.Parameter.copy_(weights[m.Source.Name]);
    }

    /// <summary>Throws unless <paramref name="weights"/> holds every parameter by name with its shape (what
    /// <see cref="LoadWeights"/> needs); changes nothing.</summary>
    /// <exception cref="InvalidDataException">Names the first parameter that is missing or has another shape.</exception>
    internal void CheckWeights(IReadOnlyDictionary<string, Tensor> weights, string source)
    {
        ThrowIfDisposed();
        foreach (var b in _buckets)
            foreach (var m in b.Members)
            {
                if (!weights.TryGetValue(m.Source.Name, out var value))
                    throw new InvalidDataException($"{source} has no tensor '{m.Source.Name}'.");
                if (!value.shape.SequenceEqual(m.Shape))
                    throw new InvalidDataException($"{source}: tensor '{m.Source.Name}' has shape [{string.Join(", ", value.shape)}]; the model's parameter has [{string.Join(", ", m.Shape)}].");
            }
    }

    /// <summary>The optimizer state as named tensors (moments per bucket, the step count) and a layout string per
    /// bucket so that loading into a different parameter set fails loudly.</summary>
    public (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) StateDict()
    {
        ThrowIfDisposed();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["step"] = StepCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["buckets"] = _buckets.Count.ToString(System.Globalization.CultureInfo.InvariantCulture),
        };
        for (int i = 0; i < _buckets.Count; i++)
        {
            tensors[$"bucket{i}.exp_avg"] = _buckets[i].ExpAvg;
            tensors[$"bucket{i}.exp_avg_sq"] = _buckets[i].ExpAvgSq;
            metadata[$"bucket{i}.layout"] = _buckets[i].Layout;
            metadata[$"bucket{i}.lr_multiplier"] = _buckets[i].LearningRateMultiplier.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
            metadata[$"bucket{i}.weight_decay"] = _buckets[i].ApplyWeightDecay ? "true" : "false";
        }
        return (tensors, metadata);
    }

    /// <summary>Restores state written by <see cref="StateDict"/>. All of it is checked before any is copied, so state
    /// for other parameters leaves the optimizer as it was.</summary>
    /// <param name="tensors">The moment tensors.</param>
    /// <param name="metadata">The metadata (step count and layouts).</param>
    /// <param name="source">What the state comes from, for error messages.</param>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata, string source)
    {
        long step = CheckStateDict(tensors, metadata, source);
        using var noGrad = no_grad();
        for (int i = 0; i < _buckets.Count; i++)
        {
            _buckets[i].ExpAvg.copy_(tensors[$"bucket{i}.exp_avg"]);
            _buckets[i].ExpAvgSq.copy_(tensors[$"bucket{i}.exp_avg_sq"]);
        }
        StepCount = step;
    }

    /// <summary>Throws unless the state fits this optimizer's buckets (count, parameter layout, moment sizes); changes
    /// nothing. Returns the step count it records.</summary>
    /// <exception cref="InvalidDataException">Names the first thing that does not fit.</exception>
    internal long CheckStateDict(IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata, string source)
    {
        ThrowIfDisposed();
        string Meta(string key) => metadata.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"{source} lacks optimizer metadata '{key}'.");
        int count = int.Parse(Meta("buckets"), System.Globalization.CultureInfo.InvariantCulture);
        if (count != _buckets.Count)
            throw new InvalidDataException($"{source} holds optimizer state for {count} parameter buckets; the current parameters form {_buckets.Count}.");
        for (int i = 0; i < count; i++)
        {
            var layout = Meta($"bucket{i}.layout");
            if (layout != _buckets[i].Layout)
                throw new InvalidDataException($"{source}: optimizer bucket {i} was written for parameters {layout}; the current bucket holds {_buckets[i].Layout}.");
            foreach (var (key, target) in new[] { ($"bucket{i}.exp_avg", _buckets[i].ExpAvg), ($"bucket{i}.exp_avg_sq", _buckets[i].ExpAvgSq) })
            {
                if (!tensors.TryGetValue(key, out var value)) throw new InvalidDataException($"{source} has no tensor '{key}'.");
                if (!value.shape.SequenceEqual(target.shape)) throw new InvalidDataException($"{source}: '{key}' has {value.numel()} elements; expected {target.numel()}.");
            }
        }
        return long.Parse(Meta("step"), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Fails when some parameter's gradient no longer lives in the flat buffer (checked once, at the first
    /// step: a replaced gradient would silently stop that parameter from training).</summary>
    private void VerifyGradientsBound()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var b in _buckets)
            foreach (var m in b.Members)
            {
                var grad = m.Source.Parameter.grad;
                // If the gradient was replaced, the slice in the buffer stayed zero while the new tensor holds values.
                if (grad is null || !grad.Equals(b.Grads.narrow(0, m.Offset, m.Count).view(m.Shape)))
                    throw new InvalidOperationException(
                        $"The gradient of '{m.Source.Name}' no longer lives in the optimizer's flat buffer: something cleared or replaced it " +
                        "(Module.zero_grad(), setting .grad, or moving the model after the optimizer was built). Let the trainer own gradients.");
            }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Releases the gradient and moment buffers and unbinds the gradients; the parameters keep their values.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var b in _buckets)
        {
            foreach (var m in b.Members)
                if (!m.Source.Parameter.IsInvalid) m.Source.Parameter.grad = null;
            b.Grads.Dispose(); b.ExpAvg.Dispose(); b.ExpAvgSq.Dispose(); b.Scratch.Dispose(); b.Weights.Dispose(); // weights stay alive through the parameters
        }
    }
}
