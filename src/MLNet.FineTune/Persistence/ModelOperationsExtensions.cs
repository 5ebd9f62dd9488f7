using Microsoft.ML;
using MLNet.FineTune.Runtime;

// User-facing, like the catalog: `using MLNet.FineTune;` brings it in.
namespace MLNet.FineTune;

/// <summary>Adds <c>mlContext.Model.SaveAtomically(...)</c>.</summary>
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
}
