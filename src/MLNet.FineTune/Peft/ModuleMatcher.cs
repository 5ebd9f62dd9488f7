using System.Text.RegularExpressions;

namespace MLNet.FineTune.Peft;

/// <summary>The outcome of matching one module name against a config.</summary>
internal enum ModuleMatch
{
    /// <summary>Not selected.</summary>
    NotMatched,
    /// <summary>Selected for adaptation.</summary>
    Matched,
    /// <summary>Excluded (exclude_modules, or a module to save).</summary>
    Excluded,
}

/// <summary>
/// PEFT's rules for which modules an adapter targets (tuners_utils.check_target_module_exists), on full module
/// names such as <c>bert.encoder.layer.0.attention.self.query</c>.
/// </summary>
internal static class ModuleMatcher
{
    /// <summary>Decides whether the module named <paramref name="key"/> is targeted.</summary>
    /// <param name="targets">Target names (exact, or suffix after a dot); ignored when <paramref name="targetPattern"/> is set.</param>
    /// <param name="targetPattern">A regular expression that must match the whole name.</param>
    /// <param name="config">Exclusions and layer filters.</param>
    /// <param name="modulesToSave">Modules trained in full: never adapted, nor anything inside them.</param>
    /// <param name="key">The module's full name.</param>
    public static ModuleMatch Check(IReadOnlyList<string>? targets, string? targetPattern, MethodOptions config,
        IReadOnlyList<string> modulesToSave, string key)
    {
        if (config.ExcludeModulesPattern is { Length: > 0 } excludePattern)
        {
            if (FullMatch(excludePattern, key)) return ModuleMatch.Excluded;
        }
        else if (config.ExcludeModules is { Count: > 0 } exclude && (exclude.Contains(key) || exclude.Any(e => key.EndsWith("." + e, StringComparison.Ordinal))))
            return ModuleMatch.Excluded;

        // A module to save (or anything inside it) is never adapted: the two would conflict.
        if (modulesToSave.Any(m => Regex.IsMatch(key, $@"^(.*\.)?{Regex.Escape(m)}(\..*)?\z")))
            return ModuleMatch.Excluded;

        if (targetPattern is not null)
            return FullMatch(targetPattern, key) ? ModuleMatch.Matched : ModuleMatch.NotMatched;
        if (targets is null) return ModuleMatch.NotMatched;
        if (targets.Contains(key)) return ModuleMatch.Matched;   // an exact name bypasses the layer filter, as in PEFT
        if (!targets.Any(t => key.EndsWith("." + t, StringComparison.Ordinal))) return ModuleMatch.NotMatched;

        if (config.LayersToTransform is not { Count: > 0 } layers) return ModuleMatch.Matched;
        int? index = LayerIndex(key, config.LayersPattern);
        return index is { } i && layers.Contains(i) ? ModuleMatch.Matched : ModuleMatch.NotMatched;
    }

    /// <summary>The layer number in a module name: the number after one of <paramref name="layersPattern"/>, or
    /// the first numbered segment (lazily, so a nested index such as an expert's is not taken).</summary>
    public static int? LayerIndex(string key, IReadOnlyList<string>? layersPattern)
    {
        Match m = Match.Empty;
        if (layersPattern is not { Count: > 0 })
            m = Regex.Match(key, @"^.*?\.[^.]*\.(\d+)\.");
        else
            foreach (var pattern in layersPattern)
            {
                m = Regex.Match(key, $@"^.*?\.{pattern}\.(\d+)\.");
                if (m.Success) break;
            }
        return m.Success ? int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null;
    }

    /// <summary>True when one of the modules-to-save <paramref name="entries"/> selects the module <paramref name="key"/>
    /// (PEFT: the name ends with the entry).</summary>
    public static bool IsModuleToSave(string key, IEnumerable<string> entries) =>
        entries.Any(e => key.EndsWith(e, StringComparison.Ordinal));

    /// <summary>Python's re.fullmatch.</summary>
    public static bool FullMatch(string pattern, string key)
    {
        try { return Regex.IsMatch(key, $"^(?:{pattern})\\z"); }
        catch (ArgumentException e) { throw new ArgumentException($"Invalid module-name pattern '{pattern}': {e.Message}", e); }
    }
}
