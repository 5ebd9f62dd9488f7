using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning.Scoring;

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>Generates from a text, prompt or conversation column, adding the generated text (String) and the number
/// of generated tokens (Int32).</summary>
internal sealed class CausalLMScorer : BatchScorer<(string Text, long Row), Generation>
{
    private readonly CausalLMModel _model;
    private readonly string _inputColumn;
    private readonly GenerationOptions _generation;
    private readonly IReadOnlyList<DataViewSchema.DetachedColumn> _outputs;

    public CausalLMScorer(CausalLMModel model, string inputColumn, string generatedTextColumn, string generatedTokenCountColumn, GenerationOptions generation)
    {
        _model = model;
        _inputColumn = inputColumn;
        _generation = generation;
        _outputs = [new(generatedTextColumn, TextDataViewType.Instance), new(generatedTokenCountColumn, NumberDataViewType.Int32)];
    }

    private string Role => _model.Format switch
    {
        CausalLMDataFormat.Text => "text",
        CausalLMDataFormat.PromptCompletion => "prompt",
        _ => "messages",
    };

    public override IReadOnlyList<string> InputColumnNames => [_inputColumn];
    public override IReadOnlyList<DataViewSchema.DetachedColumn> OutputColumns => _outputs;
    public override int BatchSize => _generation.BatchSize;

    public override void CheckInputSchema(DataViewSchema schema) => ColumnChecks.RequireText(schema, _inputColumn, Role);

    public override Func<(string Text, long Row)> CreateInputReader(DataViewRow row)
    {
        var read = ColumnChecks.TextReader(row, row.Schema[_inputColumn]);
        return () => (read(), row.Position);
    }

    public override IReadOnlyList<Generation> Score(IReadOnlyList<(string Text, long Row)> inputs) =>
        inputs.Count == 0 ? [] : _model.Generate(inputs.Select(i => i.Text).ToList(), _generation,
            i => $"Row {inputs[i].Row} of the {DataToScore} ({Role} column '{_inputColumn}')");

    public override Delegate CreateOutputGetter(int outputIndex, Func<Generation> current) => outputIndex switch
    {
        0 => (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = current().Text.AsMemory()),
        _ => (ValueGetter<int>)((ref int v) => v = current().TokenCount),
    };
}
