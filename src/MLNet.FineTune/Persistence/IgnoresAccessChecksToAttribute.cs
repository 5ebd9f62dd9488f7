namespace System.Runtime.CompilerServices;

/// <summary>
/// Tells the .NET runtime to skip access checks when this assembly uses the internals of the named assembly.
/// </summary>
/// <remarks>
/// The runtime recognises the attribute by its full name, so each assembly declares its own copy; this one also serves
/// the test project through InternalsVisibleTo. The <c>[assembly: IgnoresAccessChecksTo("...")]</c> lines are not
/// written by hand: build/Publicize.targets generates one for each assembly it publicizes (Microsoft.ML.Core,
/// Microsoft.ML.Data), so the list we compile against and the list the runtime lets us into cannot drift apart.
/// See docs/persistence.md.
/// </remarks>
[AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
internal sealed class IgnoresAccessChecksToAttribute : Attribute
{
    /// <summary>Creates the attribute for one assembly.</summary>
    /// <param name="assemblyName">The simple name of the assembly whose internals this assembly uses.</param>
    public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

    /// <summary>The simple name of the assembly whose internals this assembly uses.</summary>
    public string AssemblyName { get; }
}
