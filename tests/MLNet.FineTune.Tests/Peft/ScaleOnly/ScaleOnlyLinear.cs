using MLNet.FineTune.Peft;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Peft.ScaleOnly;

/// <summary>y = s * base(x), with <c>scale_only_s</c> (out) trained and the base frozen.</summary>
internal sealed class ScaleOnlyLinear : AdaptedLinear
{
#pragma warning disable IDE1006
    private readonly Parameter scale_only_s;   // (out)
#pragma warning restore IDE1006

    public ScaleOnlyLinear(BaseLinear baseLayer, double initialScale, ScalarType adapterDType) : base(nameof(ScaleOnlyLinear), baseLayer)
    {
        scale_only_s = new Parameter(full(OutFeatures, initialScale, adapterDType, weight.device), requires_grad: true);
        RegisterComponents();
    }

    public Parameter Scale => scale_only_s;

    public override IEnumerable<(string Name, Parameter Parameter)> AdapterParameters()
    {
        yield return ("scale_only_s", scale_only_s);
    }

    public override bool CanMerge => false;

    protected override Tensor AdaptedForward(Tensor x) => BaseForward(x) * CastTo(scale_only_s, x.dtype);   // (..., out)

    protected override void MergeCore() => throw new NotSupportedException("The scale-only toy method does not merge.");

    protected override void UnmergeCore() => throw new NotSupportedException("The scale-only toy method does not merge.");
}
