namespace MLNet.FineTune.Tests.Peft.ScaleOnly;

/// <summary>A toy method, not in the library: one learned scalar per output row of each targeted linear layer,
/// y = s * base(x). It shows what adding a method takes: this folder and one <c>PeftMethods.Register</c> line.</summary>
public sealed record ScaleOnlyOptions : MethodOptions
{
    /// <summary>initial_scale: where every s starts (1: the model starts equal to the base).</summary>
    public double InitialScale { get; init; } = 1.0;
}
