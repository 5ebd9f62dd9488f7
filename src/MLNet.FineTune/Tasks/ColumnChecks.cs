using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tasks;

/// <summary>Schema checks with errors in ML.NET's words, naming the column and what was expected.</summary>
internal static class ColumnChecks
{
    /// <summary>The column, or an error naming it and the columns that exist.</summary>
    public static DataViewSchema.Column Require(DataViewSchema schema, string name, string role)
    {
        if (string.IsNullOrEmpty(name)) throw new ArgumentException($"The {role} column name is empty.");
        return schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(schema),
            $"Could not find {role} column '{name}'. The data has columns: {string.Join(", ", schema.Where(c => !c.IsHidden).Select(c => $"'{c.Name}' ({c.Type})"))}.");
    }

    /// <summary>A text column, or an error naming it and its actual type.</summary>
    public static DataViewSchema.Column RequireText(DataViewSchema schema, string name, string role)
    {
        var column = Require(schema, name, role);
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(schema),
                $"Schema mismatch for {role} column '{name}': expected String (text), got {column.Type}. " +
                "Load it as string (e.g. a string field in the row class) or convert it first.");
        return column;
    }

    /// <summary>For an estimator's GetOutputSchema: a scalar text column in the input shape, or an error naming it and
    /// what it is instead.</summary>
    public static SchemaShape.Column RequireTextShape(IReadOnlyDictionary<string, SchemaShape.Column> columns, string name, string role)
    {
        if (!columns.TryGetValue(name, out var column))
            throw new ArgumentOutOfRangeException("inputSchema", $"Could not find {role} column '{name}'.");
        if (column.ItemType is not TextDataViewType || column.Kind != SchemaShape.Column.VectorKind.Scalar)
            throw new ArgumentOutOfRangeException("inputSchema",
                $"Schema mismatch for {role} column '{name}': expected String (text), got {(column.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : column.Kind + " of ")}{column.ItemType}.");
        return column;
    }

    /// <summary>Reads a text column's values with a getter, as strings.</summary>
    public static Func<string> TextReader(DataViewRow row, DataViewSchema.Column column)
    {
        var getter = row.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        return () => { getter(ref value); return value.ToString(); };
    }

    /// <summary>Reads a text column whose values must hold text: an empty or blank value is an error naming the row,
    /// the data (<paramref name="what"/>, e.g. "training data") and the column.</summary>
    public static Func<string> NonEmptyTextReader(DataViewRow row, DataViewSchema.Column column, string what)
    {
        var read = TextReader(row, column);
        return () =>
        {
            var value = read();
            if (string.IsNullOrWhiteSpace(value))
                throw new InvalidDataException($"Row {row.Position} of the {what} has empty text in column '{column.Name}'. " +
                    "Remove or fill empty rows (e.g. ml.Data.FilterByCustomPredicate).");
            return value;
        };
    }

    /// <summary>
    /// Throws when two of the options name the same column: a label read from the text column, a score written over
    /// the predicted label, or an output hiding an input the evaluator needs would all give wrong results silently.
    /// Columns that are null (an unset optional column) are skipped.
    /// </summary>
    /// <exception cref="ArgumentException">Names both options and the column; ParamName is the second option.</exception>
    public static void RequireDistinct(string optionsType, params (string Option, string? Column)[] columns)
    {
        for (int i = 0; i < columns.Length; i++)
            for (int j = i + 1; j < columns.Length; j++)
                if (columns[i].Column is { } name && string.Equals(name, columns[j].Column, StringComparison.Ordinal))
                    throw new ArgumentException($"{optionsType}.{columns[i].Option} and {optionsType}.{columns[j].Option} both name column '{name}': " +
                        "each must name its own column (one would be read as the other, or hide it in the output).", columns[j].Option);
    }
}
