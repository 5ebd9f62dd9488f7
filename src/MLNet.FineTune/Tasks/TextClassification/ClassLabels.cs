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
    public static ClassLabels FromTrainingData(IDataView data, string labelColumnName)
    {
        var column = ColumnChecks.Require(data.Schema, labelColumnName, "label");
        switch (column.Type)
        {
            case BooleanDataViewType:
                return new ClassLabels(LabelKind.Boolean, ["False", "True"]);
            case KeyDataViewType key:
            {
                int count = checked((int)key.Count);
                var names = Enumerable.Range(1, count).Select(i => i.ToString()).ToArray();
                if (column.Annotations.Schema.GetColumnOrNull("KeyValues") is { } kv && kv.Type is VectorDataViewType { ItemType: TextDataViewType })
                {
                    VBuffer<ReadOnlyMemory<char>> values = default;
                    column.GetKeyValues(ref values);
                    names = values.DenseValues().Select(v => v.ToString()).ToArray();
                }
                return new ClassLabels(LabelKind.Key, names);
            }
            case TextDataViewType:
            {
                var distinct = new SortedSet<string>(StringComparer.Ordinal);
                using var cursor = data.GetRowCursor([column]);
                var read = ColumnChecks.TextReader(cursor, column);
                while (cursor.MoveNext())
                {
                    var value = read();
                    if (string.IsNullOrEmpty(value))
                        throw new InvalidDataException($"Row {cursor.Position} has an empty label in column '{labelColumnName}'.");
                    distinct.Add(value);
                }
                return new ClassLabels(LabelKind.Text, distinct.ToArray());
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(data),
                    $"Schema mismatch for label column '{labelColumnName}': expected Boolean (binary), String or key (multiclass), got {column.Type}. " +
                    "Load 0/1 labels as bool, or map numeric labels to keys with MapValueToKey.");
        }
    }

    /// <summary>Reads the current row's class index; unknown or missing labels are errors naming the value.</summary>
    public Func<int> CreateReader(DataViewRow row, DataViewSchema.Column column)
    {
        string where = $"label column '{column.Name}'";
        switch (Kind)
        {
            case LabelKind.Boolean:
            {
                if (column.Type is not BooleanDataViewType) throw TypeMismatch(column, "Boolean");
                var getter = row.GetGetter<bool>(column);
                bool value = false;
                return () => { getter(ref value); return value ? 1 : 0; };
            }
            case LabelKind.Key:
            {
                if (column.Type is not KeyDataViewType key || (int)key.Count != Count) throw TypeMismatch(column, $"Key<{Count}>");
                var getter = row.GetGetter<uint>(column);
                uint value = 0;
                return () =>
                {
                    getter(ref value);
                    if (value == 0) throw new InvalidDataException($"Row {row.Position} has a missing key in {where}.");
                    return (int)value - 1;
                };
            }
            default:
            {
                if (column.Type is not TextDataViewType) throw TypeMismatch(column, "String");
                var index = Names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
                var read = ColumnChecks.TextReader(row, column);
                return () =>
                {
                    var value = read();
                    return index.TryGetValue(value, out var i) ? i
                        : throw new InvalidDataException($"Row {row.Position} has label '{value}' in {where}, which the model was not trained on. Known labels: {string.Join(", ", Names.Take(20))}.");
                };
            }
        }
    }

    private static ArgumentOutOfRangeException TypeMismatch(DataViewSchema.Column column, string expected) =>
        new(column.Name, $"Schema mismatch for label column '{column.Name}': the model was trained on {expected} labels, got {column.Type}.");
}
