using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.FineTune.Tasks.TextClassification;

/// <summary>How the label column was typed, which decides the output columns.</summary>
public enum LabelKind
{
    /// <summary>bool: binary classification (Score, Probability, PredictedLabel as bool).</summary>
    Boolean,

    /// <summary>string: multiclass, classes are the distinct strings.</summary>
    Text,

    /// <summary>key (e.g. from MapValueToKey): multiclass, classes are the keys.</summary>
    Key,
}

/// <summary>The classes a classifier predicts and how label values map to class indices.</summary>
internal sealed class ClassLabels
{
    public LabelKind Kind { get; }

    /// <summary>Class names in index order ("False"/"True" for bool labels).</summary>
    public IReadOnlyList<string> Names { get; }

    public int Count => Names.Count;
    public bool IsBinary => Kind == LabelKind.Boolean;

    public ClassLabels(LabelKind kind, IReadOnlyList<string> names)
    {
        if (names.Count < 2) throw new InvalidOperationException($"Classification needs at least 2 classes; the label column has {names.Count} ({string.Join(", ", names)}).");
        Kind = kind;
        Names = names;
    }

    /// <summary>Determines the classes from the training data's label column.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The column is missing or not Boolean, String or key.</exception>
    /// <exception cref="InvalidDataException">A label is empty, or the column holds fewer than two classes.</exception>
    public static ClassLabels FromTrainingData(IDataView data, string labelColumnName)
    {
        var column = ColumnChecks.Require(data.Schema, labelColumnName, "label");
        var (kind, names) = ReadClasses(data, column);
        if (names.Count < 2) throw OneClass(labelColumnName, names.FirstOrDefault());
        return new ClassLabels(kind, names);
    }

    private static (LabelKind Kind, IReadOnlyList<string> Names) ReadClasses(IDataView data, DataViewSchema.Column column)
    {
        switch (column.Type)
        {
            case BooleanDataViewType:
                return (LabelKind.Boolean, ["False", "True"]);
            case KeyDataViewType key:
            {
                int count = checked((int)key.Count);
                return (LabelKind.Key, KeyValueNames(column) ?? KeyNumbers(count));
            }
            case TextDataViewType:
            {
                // Numbered in order of first appearance, as MapValueToKey numbers them (its default KeyOrdinality):
                // a MapValueToKey fitted on the training data then gives the same keys as PredictedLabel's.
                var seen = new HashSet<string>(StringComparer.Ordinal);
                var distinct = new List<string>();
                using var cursor = data.GetRowCursor([column]);
                var read = ColumnChecks.TextReader(cursor, column);
                while (cursor.MoveNext())
                {
                    var value = read();
                    if (string.IsNullOrEmpty(value))
                        throw new InvalidDataException($"Row {cursor.Position} of the training data has an empty label in column '{column.Name}'. Remove or fill empty rows.");
                    if (seen.Add(value)) distinct.Add(value);
                }
                return (LabelKind.Text, distinct.ToArray());
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(data),
                    $"Schema mismatch for label column '{column.Name}': expected Boolean (binary), String or key (multiclass), got {column.Type}. " +
                    "Load 0/1 labels as bool, or map numeric labels to keys with MapValueToKey.");
        }
    }

    /// <summary>Throws unless the training rows' labels (class indices) hold at least two classes: a classifier that
    /// sees one class learns nothing (a bool column that is always true, keys of one value).</summary>
    public void RequireTwoClassesSeen(IEnumerable<int> trainingLabels, string labelColumnName)
    {
        var seen = trainingLabels.Distinct().Take(2).ToList();
        if (seen.Count < 2) throw OneClass(labelColumnName, seen.Count == 1 ? Names[seen[0]] : null);
    }

    /// <summary>"1".."count": the names of keys that carry no key values.</summary>
    private static string[] KeyNumbers(int count) => Enumerable.Range(1, count).Select(i => i.ToString()).ToArray();

    /// <summary>The key column's text KeyValues annotation (what MapValueToKey records), or null.</summary>
    private static string[]? KeyValueNames(DataViewSchema.Column column)
    {
        if (column.Annotations.Schema.GetColumnOrNull("KeyValues") is not { Type: VectorDataViewType { ItemType: TextDataViewType } }) return null;
        VBuffer<ReadOnlyMemory<char>> values = default;
        column.GetKeyValues(ref values);
        return values.DenseValues().Select(v => v.ToString()).ToArray();
    }

    private static InvalidDataException OneClass(string labelColumnName, string? label) =>
        new($"Every row of the training data has the same label in column '{labelColumnName}'{(label is null ? "" : $" ({label})")}: " +
            "classification needs examples of at least 2 classes.");

    /// <summary>Reads the current row's class index; unknown or missing labels are errors naming the row, the data
    /// (<paramref name="what"/>, e.g. "validation data"), the column and the value.</summary>
    public Func<int> CreateReader(DataViewRow row, DataViewSchema.Column column, string what)
    {
        string where = $"label column '{column.Name}'";
        switch (Kind)
        {
            case LabelKind.Boolean:
            {
                if (column.Type is not BooleanDataViewType) throw TypeMismatch(column, "Boolean", what);
                var getter = row.GetGetter<bool>(column);
                bool value = false;
                return () => { getter(ref value); return value ? 1 : 0; };
            }
            case LabelKind.Key when column.Type is TextDataViewType && !Names.SequenceEqual(KeyNumbers(Count)):
                // A validation set of raw labels beside a pipeline that maps them to keys (MapValueToKey, then this
                // estimator): the ValidationSet does not pass through the pipeline's earlier steps, so map its text
                // labels with the training keys' values, as that MapValueToKey would.
                return TextIndexReader(row, column, what, where);
            case LabelKind.Key:
            {
                if (column.Type is not KeyDataViewType key || (int)key.Count != Count) throw TypeMismatch(column, $"Key<{Count}>", what);
                // Same count, other mapping (e.g. MapValueToKey fitted on this data alone): the indices would mean other classes.
                bool namedByKeyValues = !Names.SequenceEqual(KeyNumbers(Count));
                if (namedByKeyValues && KeyValueNames(column) is { } keyValues && !keyValues.SequenceEqual(Names))
                {
                    int first = Enumerable.Range(0, Count).First(i => keyValues[i] != Names[i]);
                    throw new InvalidDataException($"The {what} maps {where} to keys differently from the training data: key {first + 1} is " +
                        $"'{keyValues[first]}' there and '{Names[first]}' in training. Fit one MapValueToKey on the training data and apply that transformer to both.");
                }
                var getter = row.GetGetter<uint>(column);
                uint value = 0;
                return () =>
                {
                    getter(ref value);
                    if (value == 0)
                        throw new InvalidDataException($"Row {row.Position} of the {what} has a missing key in {where} (a value the key mapping did not know). Remove the row or map its label.");
                    return (int)value - 1;
                };
            }
            default:
                if (column.Type is not TextDataViewType) throw TypeMismatch(column, "String", what);
                return TextIndexReader(row, column, what, where);
        }
    }

    /// <summary>Reads a text label as its class index; a label the training data lacks is an error naming it.</summary>
    private Func<int> TextIndexReader(DataViewRow row, DataViewSchema.Column column, string what, string where)
    {
        var index = Names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
        var read = ColumnChecks.TextReader(row, column);
        return () =>
        {
            var value = read();
            return index.TryGetValue(value, out var i) ? i
                : throw new InvalidDataException($"Row {row.Position} of the {what} has label '{value}' in {where}, which the training data does not have. Known labels: {string.Join(", ", Names.Order(StringComparer.Ordinal).Take(20))}.");
        };
    }

    private static ArgumentOutOfRangeException TypeMismatch(DataViewSchema.Column column, string expected, string what) =>
        new(column.Name, $"Schema mismatch for label column '{column.Name}' in the {what}: the training data has {expected} labels, got {column.Type}.");
}
