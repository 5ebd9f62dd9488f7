namespace MLNet.FineTune.Peft;

/// <summary>The registry of fine-tuning methods, one line per method: injection, the adapter file, the training engine
/// and model.zip ask it instead of switching on option types.</summary>
internal static class PeftMethods
{
    private static readonly object Gate = new();
    private static PeftMethod[] _methods =
    [
        new LoraMethod(),
        new IA3Method(),
        new BottleneckMethod(),
        new FullFineTuneMethod(),
    ];

    /// <summary>Every registered method.</summary>
    public static IReadOnlyList<PeftMethod> All => _methods;

    /// <summary>Adds a method (a plug-in outside the library, e.g. a test's). Its peft_type and options type must be
    /// new.</summary>
    /// <exception cref="ArgumentException">A method with that peft_type or options type is registered
    /// already.</exception>
    public static void Register(PeftMethod method)
    {
        ArgumentNullException.ThrowIfNull(method);
        lock (Gate)
        {
            if (_methods.Any(m => m.PeftType == method.PeftType || m.OptionsType == method.OptionsType))
                throw new ArgumentException($"A method with peft_type '{method.PeftType}' or options {method.OptionsType.Name} is registered already.", nameof(method));
            _methods = [.. _methods, method];
        }
    }

    /// <summary>The method of an options record: the registered method whose options type is the most derived base
    /// of the record's type (DoraOptions belongs to LoRA).</summary>
    /// <exception cref="ArgumentException">No method reads this options type.</exception>
    public static PeftMethod For(MethodOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        for (var type = options.GetType(); type is not null && type != typeof(MethodOptions); type = type.BaseType)
            foreach (var method in _methods)
                if (method.OptionsType == type) return method;
        throw new ArgumentException($"No fine-tuning method reads {options.GetType().Name}; register one with PeftMethods.Register.", nameof(options));
    }

    /// <summary>The method with this peft_type, or null.</summary>
    public static PeftMethod? ForPeftType(string peftType) => _methods.FirstOrDefault(m => m.PeftType == peftType);
}
