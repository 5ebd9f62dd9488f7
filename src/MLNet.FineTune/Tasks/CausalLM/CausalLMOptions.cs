using MLNet.FineTune.Models;
using MLNet.FineTune.Tasks.CausalLM;

namespace MLNet.FineTune;

/// <summary>
/// Options of causal language modelling (GPT-2, Llama, Mistral, Qwen2 families): fine-tune on text, on
/// prompt/completion pairs or on conversations, then generate.
/// </summary>
/// <remarks>
/// <para>Set exactly one way of reading the training rows:</para>
/// <list type="table">
/// <listheader><term>Columns</term><description>Training and generation</description></listheader>
/// <item><term><see cref="TextColumnName"/></term><description>text: the loss covers every token (BOS/EOS as the
/// tokenizer config says, EOS appended); generation continues the text.</description></item>
/// <item><term><see cref="PromptColumnName"/> + <see cref="CompletionColumnName"/></term><description>text: the loss
/// covers completion tokens only (prompt labels are -100, as transformers/TRL); generation continues the prompt.</description></item>
/// <item><term><see cref="MessagesColumnName"/></term><description>text holding a JSON conversation
/// (<c>[{"role": "user", "content": "..."}, ...]</c>) rendered with the model's chat template (tokenizer_config.json's
/// <c>chat_template</c>); generation renders it with the assistant's generation prompt.</description></item>
/// </list>
/// <para>Output columns added by the fitted transformer: <see cref="GeneratedTextColumnName"/> (text: the continuation
/// only, special tokens removed) and <see cref="GeneratedTokenCountColumnName"/> (Int32: tokens generated).</para>
/// <para><see cref="FineTuneOptions.BaseModel"/> is required: a Hugging Face folder of a causal model (config.json,
/// weights, tokenizer files).</para>
/// </remarks>
public sealed record CausalLMOptions : FineTuneOptions
{
    /// <summary>Creates the options with causal-LM defaults: 256 tokens per example, batch size 8.</summary>
    public CausalLMOptions()
    {
        MaxSequenceLength = 256;
        BatchSize = 8;
        ScoringBatchSize = 8;
    }

    /// <summary>A text column: the model learns every token of it. Null unless the rows are plain text.</summary>
    public string? TextColumnName { get; set; }

    /// <summary>The prompt column of prompt/completion rows (with <see cref="CompletionColumnName"/>).</summary>
    public string? PromptColumnName { get; set; }

    /// <summary>The completion column: the only tokens the loss covers.</summary>
    public string? CompletionColumnName { get; set; }

    /// <summary>A column of JSON conversations, rendered with the base model's chat template.</summary>
    public string? MessagesColumnName { get; set; }

    /// <summary>The output column of generated text. Default "GeneratedText".</summary>
    public string GeneratedTextColumnName { get; set; } = "GeneratedText";

    /// <summary>The output column of generated token counts (Int32). Default "GeneratedTokenCount".</summary>
    public string GeneratedTokenCountColumnName { get; set; } = "GeneratedTokenCount";

    /// <summary>How the fitted transformer generates (greedy by default; see <see cref="GenerationOptions"/>); a
    /// transformer can override it with <c>WithGeneration</c>.</summary>
    public GenerationOptions Generation { get; set; } = new();

    /// <summary>Pack short rows into examples of up to <see cref="FineTuneOptions.MaxSequenceLength"/> tokens (whole
    /// rows, in order; no loss crosses a row boundary, attention does). Fewer, fuller batches. Default false.</summary>
    public bool Packing { get; set; }

    /// <summary>Append the tokenizer's EOS to texts and completions, so the model learns to stop. Default true.</summary>
    public bool AppendEos { get; set; } = true;

    /// <summary>The data format these options select, or an error naming what is missing or conflicting.</summary>
    /// <exception cref="ArgumentException">No format, more than one, or a prompt without a completion column.</exception>
    internal CausalLMDataFormat Format
    {
        get
        {
            bool text = TextColumnName is not null, pair = PromptColumnName is not null || CompletionColumnName is not null, messages = MessagesColumnName is not null;
            int chosen = (text ? 1 : 0) + (pair ? 1 : 0) + (messages ? 1 : 0);
            if (chosen != 1)
                throw new ArgumentException(chosen == 0
                    ? "CausalLMOptions needs one way to read the rows: TextColumnName, or PromptColumnName with CompletionColumnName, or MessagesColumnName."
                    : $"CausalLMOptions sets more than one way to read the rows ({string.Join(", ", new[] { text ? "TextColumnName" : null, pair ? "PromptColumnName/CompletionColumnName" : null, messages ? "MessagesColumnName" : null }.Where(n => n is not null))}): choose one.");
            if (pair && (PromptColumnName is null || CompletionColumnName is null))
                throw new ArgumentException($"CausalLMOptions.{(PromptColumnName is null ? nameof(PromptColumnName) : nameof(CompletionColumnName))} is not set: prompt/completion rows need both columns.");
            return text ? CausalLMDataFormat.Text : pair ? CausalLMDataFormat.PromptCompletion : CausalLMDataFormat.Messages;
        }
    }

    /// <summary>The column generation reads: the text, the prompt, or the conversation.</summary>
    internal string InputColumnName => Format switch
    {
        CausalLMDataFormat.Text => TextColumnName!,
        CausalLMDataFormat.PromptCompletion => PromptColumnName!,
        _ => MessagesColumnName!,
    };
}
