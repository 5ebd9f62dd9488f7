using Microsoft.ML;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>Which columns hold a causal-LM data set, by format.</summary>
internal sealed record CausalLMColumns(CausalLMDataFormat Format, string? Text, string? Prompt, string? Completion, string? Messages)
{
    public static CausalLMColumns From(CausalLMOptions o) => new(o.Format, o.TextColumnName, o.PromptColumnName, o.CompletionColumnName, o.MessagesColumnName);

    public static CausalLMColumns From(CausalLMTransformer.Settings s) => new(s.Format, s.TextColumn, s.PromptColumn, s.CompletionColumn, s.MessagesColumn);

    /// <summary>The columns read, with their roles.</summary>
    public IReadOnlyList<(string Name, string Role)> Required => Format switch
    {
        CausalLMDataFormat.Text => [(Text!, "text")],
        CausalLMDataFormat.PromptCompletion => [(Prompt!, "prompt"), (Completion!, "completion")],
        _ => [(Messages!, "messages")],
    };

    /// <summary>Checks that the schema has every column as text, naming the data in the error.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or not text.</exception>
    public void Check(DataViewSchema schema, string what)
    {
        try
        {
            foreach (var (name, role) in Required) ColumnChecks.RequireText(schema, name, role);
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new ArgumentOutOfRangeException(nameof(schema), $"In the {what}: {e.Message.Split(" (Parameter")[0]}");
        }
    }

    /// <summary>Reads and featurizes every row, in order (example i is row i); errors name the row, data and columns.</summary>
    public List<CausalLMExample> Read(IDataView data, CausalLMFeaturizer featurizer, string what)
    {
        Check(data.Schema, what);
        var schema = data.Schema;
        var rows = new List<CausalLMExample>();
        using var cursor = data.GetRowCursor(Required.Select(c => schema[c.Name]));
        var readers = Required.Select(c => ColumnChecks.TextReader(cursor, schema[c.Name])).ToArray();
        string Where() => $"Row {cursor.Position} of the {what} ({(Required.Count == 1 ? "column" : "columns")} {string.Join(", ", Required.Select(c => $"'{c.Name}'"))})";
        while (cursor.MoveNext())
        {
            rows.Add(Format switch
            {
                CausalLMDataFormat.Text => featurizer.FromText(readers[0](), Where()),
                CausalLMDataFormat.PromptCompletion => featurizer.FromPromptCompletion(readers[0](), readers[1](), Where()),
                _ => featurizer.FromMessages(readers[0](), Where()),
            });
        }
        return rows;
    }
}
