using MLNet.FineTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>Injection by module name as PEFT does it (BaseTuner.inject_adapter): resolve the targets, wrap each
/// matched linear layer, then freeze all but the adapter, the modules to save and the configured biases.</summary>
internal static class AdapterInjector
{
    private const string AllLinear = "all-linear";

    /// <summary>The adapter layers an injection creates, not yet placed in the model, and the config as resolved
    /// against it.</summary>
    public sealed record Plan(MethodOptions Resolved, Dictionary<string, AdaptedLinear> Layers, IReadOnlyList<string> Saved);

    /// <summary>Plans and applies an injection.</summary>
    public static Plan Inject(nn.Module model, MethodOptions config, PeftOptions options)
    {
        var plan = Prepare(model, config, options);
        Apply(model, plan, options);
        return plan;
    }

    /// <summary>Resolves the targets and builds their adapter layers without placing them: the model's modules and
    /// trainable flags are unchanged (PiSSA's initialisation, though, already writes the residual into the base weights
    /// it wraps).</summary>
    public static Plan Prepare(nn.Module model, MethodOptions config, PeftOptions options)
    {
        var method = PeftMethods.For(config);
        method.Validate(config);
        var pretrained = model as IPretrainedModel;
        var modelType = options.ModelType ?? pretrained?.ModelType;
        var heads = options.HeadModuleNames ?? pretrained?.HeadModuleNames ?? [];
        var taskType = config.TaskType ?? model switch
        {
            SequenceClassificationModel => PeftTaskType.SequenceClassification,
            QuestionAnsweringModel => PeftTaskType.QuestionAnswering,
            _ => null,
        };

        // modules_to_save as PEFT writes it: the user's list (the task head added when absent), then the task type's
        // own names appended, duplicates included, as PEFT's task models extend it. A list that already ends with
        // them (a config read back from a file) is left as it is, so a reloaded adapter saves the same list again.
        var writtenSaved = (config.ModulesToSave ?? []).ToList();
        writtenSaved.AddRange(heads.Where(h => !writtenSaved.Contains(h)));
        var taskNames = PeftTaskType.DefaultModulesToSave(taskType);
        if (taskNames.Count > 0 && !(writtenSaved.Count >= taskNames.Count && writtenSaved.TakeLast(taskNames.Count).SequenceEqual(taskNames)))
            writtenSaved.AddRange(taskNames);
        var savedEntries = writtenSaved.Distinct().ToList();

        var modules = model.named_modules().ToList();
        var savedPaths = modules.Select(m => m.name).Where(n => ModuleMatcher.IsModuleToSave(n, savedEntries)).ToList();

        if (!method.InjectsAdapters)
            return new Plan(config with { TaskType = taskType, ModulesToSave = writtenSaved.Count > 0 ? writtenSaved : null }, new(), []);

        var (targets, pattern, resolved) = ResolveTargets(method, config, modelType, modules, heads);
        var matched = new List<(string Path, BaseLinear Base)>();
        int excluded = 0;
        foreach (var (name, module) in modules)
        {
            switch (ModuleMatcher.Check(targets, pattern, resolved, savedEntries, name))
            {
                case ModuleMatch.Excluded:
                    // Count only exclusions that took away a target (for the error when nothing is left).
                    if (ModuleMatcher.Check(targets, pattern, resolved with { ExcludeModules = null, ExcludeModulesPattern = null }, [], name) == ModuleMatch.Matched)
                        excluded++;
                    break;
                case ModuleMatch.Matched:
                    var baseLinear = BaseLinear.TryCreate(module)
                        ?? throw new ArgumentException($"Target module '{name}' is a {module.GetType().Name}, not a linear layer: {resolved.PeftType} adapts nn.Linear and Conv1D layers only. Target its linear layers instead ({Candidates(modules)}).");
                    matched.Add((name, baseLinear));
                    break;
            }
        }
        if (matched.Count == 0) throw NothingMatched(resolved, targets, pattern, excluded, modules);

        var layers = new Dictionary<string, AdaptedLinear>(StringComparer.Ordinal);
        foreach (var (path, baseLinear) in matched)
        {
            var adapterDType = options.AdapterDType ?? (IsHalf(baseLinear.WeightDType) ? ScalarType.Float32 : baseLinear.WeightDType);
            layers[path] = method.CreateLayer(resolved, path, baseLinear, adapterDType);
        }
        bool fanInFanOut = matched.Any(m => m.Base.FanInFanOut);
        var final = resolved with
        {
            TaskType = taskType,
            ModulesToSave = writtenSaved.Count > 0 ? writtenSaved : null,
            FanInFanOut = fanInFanOut,
        };
        return new Plan(final, layers, savedPaths);
    }

    /// <summary>Places a prepared plan: swaps the adapter layers in, keeps the head's linear layers in float32 over a
    /// 16-bit base, and freezes all but the adapter, the modules to save and the configured biases.</summary>
    public static void Apply(nn.Module model, Plan plan, PeftOptions options)
    {
        if (!PeftMethods.For(plan.Resolved).InjectsAdapters)
        {
            foreach (var (_, p) in model.named_parameters()) p.requires_grad = !plan.Resolved.InferenceMode;
            return;
        }
        foreach (var (path, layer) in plan.Layers) ModuleSurgery.Replace(model, path, layer);

        // The head trains in full: over a 16-bit base its linear layers are kept in the adapter dtype (float32).
        var headDType = options.AdapterDType ?? ScalarType.Float32;
        foreach (var path in plan.Saved)
        {
            var saved = ModuleSurgery.Get(model, path);
            var linears = saved.named_modules().Prepend(("", saved)).ToList();
            foreach (var (name, module) in linears)
                if (BaseLinear.TryCreate(module) is { } head && IsHalf(head.Weight.dtype) && headDType != head.Weight.dtype)
                    ModuleSurgery.Replace(model, name == "" ? path : path + "." + name, new TrainedLinear(head, headDType));
        }

        SetTrainable(model, plan.Resolved, plan.Layers, plan.Saved);
    }

    private static bool IsHalf(ScalarType dtype) => dtype is ScalarType.Float16 or ScalarType.BFloat16;

    // Fills in the family's defaults and expands "all-linear"; returns what matching uses and the config to record.
    private static (IReadOnlyList<string>? Targets, string? Pattern, MethodOptions Resolved) ResolveTargets(PeftMethod method,
        MethodOptions config, string? modelType, List<(string name, nn.Module module)> modules, IReadOnlyList<string> heads)
    {
        if (config.TargetModulesPattern is { } p && p.Equals(AllLinear, StringComparison.OrdinalIgnoreCase))
        {
            // Every linear layer but the output layer (lm_head) and the task head, by full name, as PEFT resolves it.
            var names = modules.Where(m => BaseLinear.TryCreate(m.module) is not null)
                .Select(m => m.name)
                .Where(n => n.Split('.')[^1] != "lm_head" && !heads.Any(h => n == h || n.StartsWith(h + ".", StringComparison.Ordinal)))
                .ToList();
            config = config with { TargetModules = names, TargetModulesPattern = null };
        }
        else if (config.TargetModules is null && config.TargetModulesPattern is null)
        {
            config = method.WithDefaultTargets(config, modelType) ?? throw NoDefaults(method, modelType);
        }
        config = method.Resolve(config, modelType);
        return (config.TargetModules, config.TargetModulesPattern, config);
    }

    private static void SetTrainable(nn.Module model, MethodOptions config, Dictionary<string, AdaptedLinear> layers, IReadOnlyList<string> savedPaths)
    {
        foreach (var (_, p) in model.named_parameters()) p.requires_grad = false;
        if (config.InferenceMode) return;
        foreach (var layer in layers.Values)
            foreach (var (_, p) in layer.AdapterParameters()) p.requires_grad = true;
        foreach (var path in savedPaths)
            foreach (var (_, p) in ModuleSurgery.Get(model, path).named_parameters()) p.requires_grad = true;
        foreach (var extra in PeftMethods.For(config).ExtraTrainable(model, config, layers)) extra.requires_grad = true;
    }

    private static ArgumentException NoDefaults(PeftMethod method, string? modelType) =>
        new($"No default target_modules for {method.PeftType} on model type '{modelType ?? "(unknown)"}' (defaults exist for {string.Join(", ", method.KnownModelTypes)}): set target_modules in the config.");

    private static ArgumentException NothingMatched(MethodOptions config, IReadOnlyList<string>? targets, string? pattern, int excluded,
        List<(string name, nn.Module module)> modules)
    {
        var what = pattern is not null ? $"pattern '{pattern}'" : $"[{string.Join(", ", targets ?? [])}]";
        var reason = excluded > 0
            ? $"No modules were targeted: target modules {what} matched nothing that is not excluded (exclude_modules, or a module to save)."
            : $"Target modules {what} not found in the base model.";
        if (config.LayersToTransform is { } l) reason += $" Note: layers_to_transform is [{string.Join(", ", l)}]" + (config.LayersPattern is { } lp ? $" with layers_pattern [{string.Join(", ", lp)}]." : ".");
        return new ArgumentException($"{reason} {Candidates(modules)}");
    }

    // The model's linear layers by their last name, with one full name as an example.
    private static string Candidates(List<(string name, nn.Module module)> modules)
    {
        var linear = modules.Where(m => BaseLinear.TryCreate(m.module) is not null).Select(m => m.name).ToList();
        if (linear.Count == 0) return "The model has no linear layers.";
        // Most frequent first: the per-layer projections before one-off heads.
        var names = linear.GroupBy(n => n.Split('.')[^1]).OrderByDescending(g => g.Count()).ToList();
        return $"Linear layers of this model: {string.Join(", ", names.Select(g => g.Key))} (e.g. '{names[0].First()}').";
    }
}
