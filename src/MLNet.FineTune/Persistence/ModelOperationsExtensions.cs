using System.Reflection;
using System.Runtime.ExceptionServices;
using Microsoft.ML;
using MLNet.FineTune.Runtime;

// User-facing, like the catalog: `using MLNet.FineTune;` brings it in.
namespace MLNet.FineTune;

/// <summary>Adds <c>mlContext.Model.SaveAtomically(...)</c> and <c>mlContext.Model.LoadWithClearErrors(...)</c>.</summary>
public static class ModelOperationsExtensions
{
    /// <summary>
    /// Saves a model as <see cref="ModelOperationsCatalog.Save(ITransformer, DataViewSchema, string)"/> does, but into a
    /// temporary file beside <paramref name="filePath"/> that is moved over it only once the save has succeeded: a save
    /// that fails (an error in a component's save, a full disk) leaves an existing file as it was. ML.NET's own
    /// <c>Save(model, schema, path)</c> creates (truncates) the file before it writes anything.
    /// </summary>
    /// <param name="catalog"><c>mlContext.Model</c>.</param>
    /// <param name="model">The model to save.</param>
    /// <param name="inputSchema">The schema of the model's input (may be null, as for ML.NET's Save).</param>
    /// <param name="filePath">The model.zip to write or replace.</param>
    public static void SaveAtomically(this ModelOperationsCatalog catalog, ITransformer model, DataViewSchema? inputSchema, string filePath)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        // ML.NET's Save(stream) leaves the stream open, so AtomicFile can flush it to disk before the move.
        AtomicFile.Write(filePath, stream => catalog.Save(model, inputSchema, stream));
    }

    /// <summary>
    /// Loads a model as <see cref="ModelOperationsCatalog.Load(string, out DataViewSchema)"/> does, but when a
    /// component's loader fails, throws that loader's own exception (e.g. an <see cref="InvalidDataException"/> naming
    /// the corrupt payload, a <see cref="DirectoryNotFoundException"/> naming the missing base folder) instead of the
    /// <see cref="TargetInvocationException"/> ("Exception has been thrown by the target of an invocation") that ML.NET
    /// wraps it in, because it calls loaders through reflection.
    /// </summary>
    /// <param name="catalog"><c>mlContext.Model</c>.</param>
    /// <param name="filePath">The model.zip to load.</param>
    /// <param name="inputSchema">The input schema saved with the model (may be null).</param>
    public static ITransformer LoadWithClearErrors(this ModelOperationsCatalog catalog, string filePath, out DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        try
        {
            return catalog.Load(filePath, out inputSchema);
        }
        catch (TargetInvocationException e) when (Unwrap(e) is { } inner)
        {
            ExceptionDispatchInfo.Capture(inner).Throw();
            throw; // unreachable: Throw does not return
        }
    }

    /// <summary>The innermost exception under reflection's wrappers, or null when there is none.</summary>
    private static Exception? Unwrap(TargetInvocationException e)
    {
        Exception? inner = e.InnerException;
        while (inner is TargetInvocationException { InnerException: { } next }) inner = next;
        return inner;
    }
}
