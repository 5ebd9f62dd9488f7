using Microsoft.ML.Data;

namespace TextGeneration;

/// <summary>
/// The text-generation model, in Model Builder's layout: this file holds the input and output rows; the training,
/// consumption and evaluation code sit in the partial files beside it.
/// </summary>
public static partial class TextModel
{
    /// <summary>One row: a text to learn every token of, or a prompt and its completion (the loss covers the completion
    /// only). A data set uses one of the two shapes; generation reads <see cref="Text"/> or <see cref="Prompt"/>.</summary>
    public sealed class ModelInput
    {
        [ColumnName("Text")]
        public string Text { get; set; } = "";

        [ColumnName("Prompt")]
        public string Prompt { get; set; } = "";

        [ColumnName("Completion")]
        public string Completion { get; set; } = "";
    }

    /// <summary>What the model adds to a row.</summary>
    public sealed class ModelOutput
    {
        /// <summary>The continuation of the text or prompt (special tokens removed).</summary>
        [ColumnName("GeneratedText")]
        public string GeneratedText { get; set; } = "";

        /// <summary>Tokens generated, a final end-of-sequence token included.</summary>
        [ColumnName("GeneratedTokenCount")]
        public int GeneratedTokenCount { get; set; }
    }

    /// <summary>Which columns a data set fills.</summary>
    public enum DataShape { Text, PromptCompletion }

    /// <summary>Where the default run saves the model: next to the executable (bin/), out of the source tree.</summary>
    public static string MLNetModelPath => Path.Combine(AppContext.BaseDirectory, "TextModel.zip");
}
