using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Peft;

/// <summary>Replaces a submodule of a TorchSharp model in place, so that both the C# field the parent's forward
/// calls and the module registry (state_dict, named_modules) see the replacement.</summary>
internal static class ModuleSurgery
{
    /// <summary>The module at a dotted path (e.g. <c>bert.encoder.layer.0.attention.self.query</c>).</summary>
    /// <exception cref="ArgumentException">No module at that path (names the missing segment).</exception>
    public static nn.Module Get(nn.Module root, string path)
    {
        var current = root;
        foreach (var segment in path.Split('.'))
        {
            var next = current.named_children().FirstOrDefault(c => c.name == segment).module;
            current = next ?? throw new ArgumentException($"The model has no module '{path}': '{segment}' is not a child of {current.GetType().Name}.", nameof(path));
        }
        return current;
    }

    /// <summary>
    /// Puts <paramref name="replacement"/> where the module at <paramref name="path"/> is: sets the parent's field
    /// named after it (model conventions: the field has the Hugging Face attribute's name and is typed
    /// <c>Module&lt;Tensor, Tensor&gt;</c>, not readonly) and re-registers the child under the same name, keeping the
    /// order of the parent's children (so state_dict order does not change).
    /// </summary>
    /// <exception cref="InvalidOperationException">The parent has no suitable field (names the parent's type, the
    /// field and what is wrong with it).</exception>
    public static void Replace(nn.Module root, string path, nn.Module replacement)
    {
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? root : Get(root, path[..dot]);
        var childName = dot < 0 ? path : path[(dot + 1)..];

        var field = FindField(parent.GetType(), childName)
            ?? throw new InvalidOperationException(
                $"Cannot replace '{path}': {parent.GetType().FullName} has no field named '{childName}'. Model families must hold every linear layer in a field named as the Hugging Face attribute.");
        if (field.IsInitOnly)
            throw new InvalidOperationException($"Cannot replace '{path}': field {parent.GetType().Name}.{field.Name} is readonly. Declare it non-readonly, typed Module<Tensor, Tensor>.");
        if (!field.FieldType.IsInstanceOfType(replacement))
            throw new InvalidOperationException(
                $"Cannot replace '{path}': field {parent.GetType().Name}.{field.Name} is typed {field.FieldType.Name}, which cannot hold a {replacement.GetType().Name}. Declare it as Module<Tensor, Tensor>.");

        replacement.train(parent.training);
        field.SetValue(parent, replacement);

        // TorchSharp refuses to register a name twice: remove the children from this one on, re-add them in order.
        var children = parent.named_children().ToList();
        int index = children.FindIndex(c => c.name == childName);
        for (int i = index; i < children.Count; i++) parent.register_module(children[i].name, null!);
        for (int i = index; i < children.Count; i++)
            parent.register_module(children[i].name, i == index ? replacement : children[i].module);
    }

    private static FieldInfo? FindField(Type? type, string componentName)
    {
        for (; type is not null; type = type.BaseType)
            foreach (var f in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
                if (f.ComponentName() == componentName && typeof(nn.Module).IsAssignableFrom(f.FieldType)) return f;
        return null;
    }
}
