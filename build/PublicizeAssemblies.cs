// The inline MSBuild task behind Publicize.targets (compiled by RoslynCodeTaskFactory; not part of any project).
// Writes, for each input assembly, a compile-only copy in which
//   - internal types (top-level or nested) are public,
//   - internal, private protected and protected internal members are public, or protected when overridable
//     (C# then overrides them as `protected override`, which the runtime accepts),
//   - private members and compiler-generated types are left alone (no signature of a non-private member needs them,
//     and exposing them would only add name clashes in derived classes).
// The assembly identity (name, version, public key) is unchanged, so code compiled against the copy binds to the
// real assembly at run time. Keep it compatible with .NET Framework MSBuild (Visual Studio): no newer BCL APIs.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using Mono.Cecil;

public sealed class MLNetPublicizeAssemblies : Task
{
    [Required] public ITaskItem[] Assemblies { get; set; }
    [Required] public string OutputDirectory { get; set; }
    public ITaskItem[] SearchDirectories { get; set; }

    public override bool Execute()
    {
        Directory.CreateDirectory(OutputDirectory);
        using (var resolver = new DefaultAssemblyResolver())
        {
            foreach (var dir in (SearchDirectories ?? new ITaskItem[0]).Select(d => d.ItemSpec).Distinct(StringComparer.OrdinalIgnoreCase))
                if (Directory.Exists(dir)) resolver.AddSearchDirectory(dir);

            foreach (var item in Assemblies)
            {
                string source = item.GetMetadata("FullPath");
                string target = Path.Combine(OutputDirectory, Path.GetFileName(source));
                string temp = target + "." + Guid.NewGuid().ToString("N") + ".tmp";   // unique: an IDE design-time build may run alongside
                try
                {
                    int types, members;
                    // InMemory: the source file (in the NuGet cache) is not kept open by a reused MSBuild node.
                    var readerParameters = new ReaderParameters { AssemblyResolver = resolver, InMemory = true, ReadSymbols = false };
                    using (var assembly = AssemblyDefinition.ReadAssembly(source, readerParameters))
                    {
                        Publicize(assembly.MainModule, out types, out members);
                        assembly.Write(temp);
                    }
                    // Temp name then move: a failed write never leaves a half-written reference behind.
                    if (File.Exists(target)) File.Delete(target);
                    File.Move(temp, target);
                    Log.LogMessage(MessageImportance.Normal, "Publicized {0}: {1} types and {2} members opened -> {3}", Path.GetFileName(source), types, members, target);
                }
                catch (Exception ex)
                {
                    if (File.Exists(temp)) File.Delete(temp);
                    Log.LogError("Publicize.targets: could not publicize '{0}': {1}", source, ex.Message);
                    return false;
                }
            }
        }
        return !Log.HasLoggedErrors;
    }

    private static void Publicize(ModuleDefinition module, out int types, out int members)
    {
        types = 0;
        members = 0;
        foreach (var type in module.GetTypes())
        {
            if (IsCompilerGenerated(type)) continue;
            if (OpenType(type)) types++;

            foreach (var method in type.Methods)
            {
                if (method.Name.StartsWith("<") || method.IsCompilerControlled || method.IsPrivate || method.IsPublic || method.IsFamily) continue;
                // Assembly, FamANDAssem (private protected) or FamORAssem (protected internal).
                if (method.IsVirtual && !method.IsFinal) method.IsFamily = true;
                else method.IsPublic = true;
                members++;
            }
            foreach (var field in type.Fields)
            {
                if (field.Name.StartsWith("<") || field.IsCompilerControlled || field.IsPrivate || field.IsPublic || field.IsFamily) continue;
                field.IsPublic = true;
                members++;
            }
        }
    }

    private static bool OpenType(TypeDefinition type)
    {
        if (!type.IsNested)
        {
            if (type.IsPublic) return false;
            type.IsPublic = true;
            return true;
        }
        if (type.IsNestedPublic || type.IsNestedPrivate || type.IsNestedFamily) return false;
        type.IsNestedPublic = true;   // was internal, private protected or protected internal
        return true;
    }

    // Embedded attributes (NullableAttribute, IsReadOnlyAttribute ...), closures, <PrivateImplementationDetails>:
    // opening them would clash with the copies every other assembly carries.
    private static bool IsCompilerGenerated(TypeDefinition type)
    {
        if (type.Name.StartsWith("<")) return true;
        for (var t = type; t != null; t = t.DeclaringType)
            if (t.CustomAttributes.Any(a => a.AttributeType.FullName == "System.Runtime.CompilerServices.CompilerGeneratedAttribute"
                                         || a.AttributeType.FullName == "Microsoft.CodeAnalysis.EmbeddedAttribute"))
                return true;
        return false;
    }
}
