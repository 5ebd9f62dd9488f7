namespace MLNet.FineTune;

/// <summary>(IA)^3 (Liu et al., 2022): learned vectors rescale keys, values and the feed-forward input; PEFT's
/// <c>IA3Config</c>.</summary>
public sealed record IA3Options : MethodOptions
{
    /// <summary>feedforward_modules: the targets whose input (not output) is scaled; null uses the family's default.
    /// A module is feed-forward when its name ends with an entry (plain suffix, as PEFT checks).</summary>
    public IReadOnlyList<string>? FeedforwardModules { get; init; }

    /// <summary>A regular expression (full match) for feed-forward modules, instead of
    /// <see cref="FeedforwardModules"/>.</summary>
    public string? FeedforwardModulesPattern { get; init; }

    /// <summary>init_ia3_weights: start the vectors at ones. Default true.</summary>
    public bool InitIA3Weights { get; init; } = true;
}
