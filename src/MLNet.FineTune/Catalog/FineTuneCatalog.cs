using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.Tasks.QuestionAnswering;
using MLNet.FineTune.Tasks.TextClassification;

namespace MLNet.FineTune;

/// <summary>Adds <c>mlContext.FineTune()</c>.</summary>
public static class FineTuneMLContextExtensions
{
    /// <summary>The catalog of fine-tuning estimators (LoRA, DoRA, adapters, IA3, full fine-tuning) and evaluators.</summary>
    public static FineTuneCatalog FineTune(this MLContext mlContext) =>
        new(mlContext ?? throw new ArgumentNullException(nameof(mlContext)));
}

/// <summary>
/// Fine-tuning estimators for pretrained Hugging Face transformers, one method per parameter-efficient method, each
/// taking the task's options and the method's options, plus short overloads with plain parameters.
/// </summary>
public sealed class FineTuneCatalog
{
    private readonly MLContext _mlContext;

    internal FineTuneCatalog(MLContext mlContext) => _mlContext = mlContext;

    internal IHostEnvironment Environment => _mlContext;

    // ---- Text classification ---------------------------------------------------------------------------------

    /// <summary>Text classification with the method <paramref name="method"/> describes: any method's options
    /// (<see cref="LoraOptions"/>, <see cref="DoraOptions"/>, <see cref="QLoraOptions"/>, <see cref="AdapterOptions"/>, <see cref="IA3Options"/>,
    /// <see cref="FullFineTuneOptions"/>), e.g. one read from a file with <see cref="Peft.PeftConfigJson.Read"/>.</summary>
    /// <param name="options">The task: columns, base model, training loop.</param>
    /// <param name="method">The method and its settings.</param>
    /// <exception cref="ArgumentException">No method reads these options, or a setting is invalid (named).</exception>
    public TextClassificationEstimator TextClassification(TextClassificationOptions options, MethodOptions method) =>
        new(Environment, options, method);

    /// <summary>Text classification with LoRA (Hu et al., 2021): low-rank updates of the attention (and optionally
    /// feed-forward) weights; the encoder stays frozen.</summary>
    /// <param name="options">The task: columns, base model, training loop.</param>
    /// <param name="lora">LoRA's settings; null uses the defaults (r 8, alpha 16, dropout 0.1, the family's targets).</param>
    public TextClassificationEstimator Lora(TextClassificationOptions options, LoraOptions? lora = null) =>
        new(Environment, options, lora ?? new LoraOptions());

    /// <summary>Text classification with LoRA, from plain parameters.</summary>
    /// <param name="labelColumnName">The label column (bool: binary; string or key: multiclass).</param>
    /// <param name="textColumnName">The text column.</param>
    /// <param name="baseModel">A Hugging Face model folder; null uses the default MiniLM.</param>
    /// <param name="rank">LoRA rank r.</param>
    /// <param name="alpha">LoRA alpha (scaling alpha / r).</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Examples per step.</param>
    /// <param name="learningRate">Peak learning rate; null uses the method's default.</param>
    /// <param name="maxSequenceLength">Tokens per input.</param>
    /// <param name="validationSet">Optional validation data (early stopping, best weights).</param>
    public TextClassificationEstimator Lora(string labelColumnName = "Label", string textColumnName = "Text", string? baseModel = null,
        int rank = 8, double alpha = 16, int epochs = 3, int batchSize = 32, double? learningRate = null, int maxSequenceLength = 128,
        IDataView? validationSet = null) =>
        Lora(Plain(labelColumnName, textColumnName, baseModel, epochs, batchSize, learningRate, maxSequenceLength, validationSet),
            new LoraOptions { Rank = rank, Alpha = alpha });

    /// <summary>Text classification with DoRA (Liu et al., 2024): LoRA on the weights' direction plus a trained
    /// magnitude per output.</summary>
    public TextClassificationEstimator Dora(TextClassificationOptions options, DoraOptions? dora = null) =>
        new(Environment, options, dora ?? new DoraOptions());

    /// <summary>Text classification with DoRA, from plain parameters (see <see cref="Lora(string, string, string?, int, double, int, int, double?, int, IDataView?)"/>).</summary>
    public TextClassificationEstimator Dora(string labelColumnName = "Label", string textColumnName = "Text", string? baseModel = null,
        int rank = 8, double alpha = 16, int epochs = 3, int batchSize = 32, double? learningRate = null, int maxSequenceLength = 128,
        IDataView? validationSet = null) =>
        Dora(Plain(labelColumnName, textColumnName, baseModel, epochs, batchSize, learningRate, maxSequenceLength, validationSet),
            new DoraOptions { Rank = rank, Alpha = alpha });

    /// <summary>Text classification with QLoRA (Dettmers et al., 2023): LoRA over a base whose linear layers are held in
    /// 4 bits (NF4 with double quantization by default), about a quarter of their 16-bit memory; the adapter is an
    /// ordinary LoRA adapter.</summary>
    /// <param name="options">The task: columns, base model, training loop.</param>
    /// <param name="qlora">QLoRA's settings (LoRA's plus <see cref="QLoraOptions.Quantization"/>); null uses the defaults.</param>
    public TextClassificationEstimator QLora(TextClassificationOptions options, QLoraOptions? qlora = null) =>
        new(Environment, options, qlora ?? new QLoraOptions());

    /// <summary>Text classification with bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020).</summary>
    public TextClassificationEstimator Adapters(TextClassificationOptions options, AdapterOptions? adapters = null) =>
        new(Environment, options, adapters ?? new AdapterOptions());

    /// <summary>Text classification with bottleneck adapters, from plain parameters.</summary>
    /// <param name="labelColumnName">The label column.</param>
    /// <param name="textColumnName">The text column.</param>
    /// <param name="baseModel">A Hugging Face model folder; null uses the default MiniLM.</param>
    /// <param name="reductionFactor">hidden / bottleneck width.</param>
    /// <param name="epochs">Passes over the data.</param>
    /// <param name="batchSize">Examples per step.</param>
    /// <param name="learningRate">Peak learning rate; null uses the method's default.</param>
    /// <param name="maxSequenceLength">Tokens per input.</param>
    /// <param name="validationSet">Optional validation data.</param>
    public TextClassificationEstimator Adapters(string labelColumnName = "Label", string textColumnName = "Text", string? baseModel = null,
        int reductionFactor = 16, int epochs = 3, int batchSize = 32, double? learningRate = null, int maxSequenceLength = 128,
        IDataView? validationSet = null) =>
        Adapters(Plain(labelColumnName, textColumnName, baseModel, epochs, batchSize, learningRate, maxSequenceLength, validationSet),
            new AdapterOptions { ReductionFactor = reductionFactor });

    /// <summary>Text classification with IA3 (Liu et al., 2022): learned rescaling of keys, values and feed-forward inputs.</summary>
    public TextClassificationEstimator IA3(TextClassificationOptions options, IA3Options? ia3 = null) =>
        new(Environment, options, ia3 ?? new IA3Options());

    /// <summary>Text classification with IA3, from plain parameters.</summary>
    public TextClassificationEstimator IA3(string labelColumnName = "Label", string textColumnName = "Text", string? baseModel = null,
        int epochs = 3, int batchSize = 32, double? learningRate = null, int maxSequenceLength = 128, IDataView? validationSet = null) =>
        IA3(Plain(labelColumnName, textColumnName, baseModel, epochs, batchSize, learningRate, maxSequenceLength, validationSet), new IA3Options());

    /// <summary>Text classification by full fine-tuning (every weight trains): the baseline.</summary>
    public TextClassificationEstimator FullFineTune(TextClassificationOptions options, FullFineTuneOptions? full = null) =>
        new(Environment, options, full ?? new FullFineTuneOptions());

    /// <summary>Text classification by full fine-tuning, from plain parameters.</summary>
    public TextClassificationEstimator FullFineTune(string labelColumnName = "Label", string textColumnName = "Text", string? baseModel = null,
        int epochs = 3, int batchSize = 32, double? learningRate = null, int maxSequenceLength = 128, IDataView? validationSet = null) =>
        FullFineTune(Plain(labelColumnName, textColumnName, baseModel, epochs, batchSize, learningRate, maxSequenceLength, validationSet), new FullFineTuneOptions());

    private static TextClassificationOptions Plain(string label, string text, string? baseModel, int epochs, int batchSize,
        double? learningRate, int maxSequenceLength, IDataView? validationSet) => new()
    {
        LabelColumnName = label, TextColumnName = text, BaseModel = baseModel, Epochs = epochs, BatchSize = batchSize,
        LearningRate = learningRate, MaxSequenceLength = maxSequenceLength, ValidationSet = validationSet,
    };

    // ---- Question answering ----------------------------------------------------------------------------------

    /// <summary>Extractive question answering with the method <paramref name="method"/> describes (any method's
    /// options, as for <see cref="TextClassification"/>).</summary>
    /// <param name="options">The task: columns, windows, answer limits, base model, training loop.</param>
    /// <param name="method">The method and its settings.</param>
    /// <exception cref="ArgumentException">No method reads these options, or a setting is invalid (named).</exception>
    public QuestionAnsweringEstimator QuestionAnswering(QuestionAnsweringOptions options, MethodOptions method) =>
        new(Environment, options, method);

    /// <summary>Extractive question answering (SQuAD v1.1/v2.0) with LoRA: low-rank updates of the encoder's linear
    /// layers plus a new span head (qa_outputs), trained on every window of every question as run_qa.py does.</summary>
    /// <param name="options">The task: columns, windows (MaxSequenceLength, DocStride), answer limits, base model, training loop.</param>
    /// <param name="lora">LoRA's settings; null uses the defaults (r 8, alpha 16, dropout 0.1, the family's targets).</param>
    public QuestionAnsweringEstimator Lora(QuestionAnsweringOptions options, LoraOptions? lora = null) =>
        new(Environment, options, lora ?? new LoraOptions());

    /// <summary>Extractive question answering with QLoRA: LoRA over a 4-bit (NF4) base.</summary>
    public QuestionAnsweringEstimator QLora(QuestionAnsweringOptions options, QLoraOptions? qlora = null) =>
        new(Environment, options, qlora ?? new QLoraOptions());

    /// <summary>Extractive question answering with DoRA (Liu et al., 2024).</summary>
    public QuestionAnsweringEstimator Dora(QuestionAnsweringOptions options, DoraOptions? dora = null) =>
        new(Environment, options, dora ?? new DoraOptions());

    /// <summary>Extractive question answering with bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020).</summary>
    public QuestionAnsweringEstimator Adapters(QuestionAnsweringOptions options, AdapterOptions? adapters = null) =>
        new(Environment, options, adapters ?? new AdapterOptions());

    /// <summary>Extractive question answering with IA3 (Liu et al., 2022).</summary>
    public QuestionAnsweringEstimator IA3(QuestionAnsweringOptions options, IA3Options? ia3 = null) =>
        new(Environment, options, ia3 ?? new IA3Options());

    /// <summary>Extractive question answering by full fine-tuning (every weight trains): the baseline.</summary>
    public QuestionAnsweringEstimator FullFineTune(QuestionAnsweringOptions options, FullFineTuneOptions? full = null) =>
        new(Environment, options, full ?? new FullFineTuneOptions());

    /// <summary>
    /// Scores question-answering output as the official SQuAD scripts do (evaluate-v1.1.py / evaluate-v2.0.py):
    /// exact match and F1 (%), for v2.0 also the HasAns/NoAns splits and, when the data has no-answer scores, the best
    /// exact/F1 over no-answer thresholds and those thresholds.
    /// </summary>
    /// <param name="data">Scored data: a question-answering transformer's output over rows that carry the gold
    /// answers (e.g. <c>model.Transform(mlContext.Data.LoadFromSquadJson(path))</c>).</param>
    /// <param name="idColumnName">The question id column (text).</param>
    /// <param name="allAnswersColumnName">Every gold answer (vector of text; a text column gives one answer, "" none).</param>
    /// <param name="isImpossibleColumnName">SQuAD v2.0's is_impossible (Boolean), optional: absent or null is fine.</param>
    /// <param name="predictedAnswerColumnName">The predicted answer (text, "" = no answer).</param>
    /// <param name="noAnswerScoreColumnName">The no-answer score (Single), optional: when present and the rules are
    /// v2.0, it feeds the best-threshold search (<see cref="QuestionAnsweringMetrics.BestF1Threshold"/>, on the scale of
    /// <see cref="QuestionAnsweringOptions.NullScoreDifferenceThreshold"/>). EM and F1 score the answer column as it is.</param>
    /// <param name="version">Which script's rules; Auto: v2.0 when any question is impossible or has no gold answer.</param>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or has the wrong type (the message names it).</exception>
    public QuestionAnsweringMetrics EvaluateQuestionAnswering(IDataView data, string idColumnName = "Id", string allAnswersColumnName = "AllAnswers",
        string? isImpossibleColumnName = "IsImpossible", string predictedAnswerColumnName = "Answer", string? noAnswerScoreColumnName = "NoAnswerScore",
        SquadVersion version = SquadVersion.Auto) =>
        QuestionAnsweringEvaluation.Evaluate(data, idColumnName, allAnswersColumnName, isImpossibleColumnName, predictedAnswerColumnName,
            noAnswerScoreColumnName, version);

    // ---- Causal language modelling -----------------------------------------------------------------------------

    /// <summary>Causal language modelling with the method <paramref name="method"/> describes (any method's options, as
    /// for <see cref="TextClassification"/>).</summary>
    /// <param name="options">The task: columns, base model (required), sequence length, generation, training loop.</param>
    /// <param name="method">The method and its settings.</param>
    /// <exception cref="ArgumentException">No method reads these options, or a setting is invalid (named).</exception>
    public CausalLMEstimator CausalLM(CausalLMOptions options, MethodOptions method) =>
        new(Environment, options, method);

    /// <summary>Causal language modelling (text, prompt/completion or conversations) with LoRA: low-rank updates of
    /// the decoder's linear layers (the family's default targets: q_proj, v_proj for Llama/Mistral/Qwen2, c_attn for
    /// GPT-2); the transformer generates text.</summary>
    /// <param name="options">The task: columns, base model (required), sequence length, generation, training loop.</param>
    /// <param name="lora">LoRA's settings; null uses the defaults (r 8, alpha 16, dropout 0.1, the family's targets).</param>
    public CausalLMEstimator Lora(CausalLMOptions options, LoraOptions? lora = null) =>
        new(Environment, options, lora ?? new LoraOptions());

    /// <summary>Causal language modelling with QLoRA (Dettmers et al., 2023): LoRA over a base whose decoder linear
    /// layers are held in 4 bits (NF4 with double quantization by default; embeddings, norms and lm_head stay 16-bit).</summary>
    /// <param name="options">The task: columns, base model (required), sequence length, generation, training loop.</param>
    /// <param name="qlora">QLoRA's settings (LoRA's plus <see cref="QLoraOptions.Quantization"/>); null uses the defaults.</param>
    public CausalLMEstimator QLora(CausalLMOptions options, QLoraOptions? qlora = null) =>
        new(Environment, options, qlora ?? new QLoraOptions());

    /// <summary>Causal language modelling with DoRA (Liu et al., 2024).</summary>
    public CausalLMEstimator Dora(CausalLMOptions options, DoraOptions? dora = null) =>
        new(Environment, options, dora ?? new DoraOptions());

    /// <summary>Causal language modelling with bottleneck adapters (Houlsby et al., 2019; Pfeiffer et al., 2020).</summary>
    public CausalLMEstimator Adapters(CausalLMOptions options, AdapterOptions? adapters = null) =>
        new(Environment, options, adapters ?? new AdapterOptions());

    /// <summary>Causal language modelling with IA3 (Liu et al., 2022).</summary>
    public CausalLMEstimator IA3(CausalLMOptions options, IA3Options? ia3 = null) =>
        new(Environment, options, ia3 ?? new IA3Options());

    /// <summary>Causal language modelling by full fine-tuning (every weight trains): the baseline.</summary>
    public CausalLMEstimator FullFineTune(CausalLMOptions options, FullFineTuneOptions? full = null) =>
        new(Environment, options, full ?? new FullFineTuneOptions());

    /// <summary>The base model of <paramref name="options"/> as it is, untrained, as a <see cref="CausalLMTransformer"/>:
    /// generate with it or evaluate it (e.g. the perplexity before fine-tuning) with the options' columns and generation.</summary>
    public CausalLMTransformer PretrainedCausalLM(CausalLMOptions options) =>
        new CausalLMEstimator(Environment, options, new FullFineTuneOptions()).Pretrained();

    /// <summary>
    /// Mean token loss, perplexity and token accuracy of a causal LM on a data set with the columns it was trained on,
    /// over the same target tokens as training (completion tokens of prompt/completion rows, every token of text and
    /// conversations), averaged over tokens, not rows.
    /// </summary>
    /// <param name="data">Rows with the model's text, prompt and completion, or messages columns.</param>
    /// <param name="model">A fitted (or <see cref="PretrainedCausalLM"/>) transformer.</param>
    /// <param name="batchSize">Rows per forward; null uses the options' ScoringBatchSize.</param>
    /// <exception cref="ArgumentOutOfRangeException">A column is missing or not text (the message names it).</exception>
    public CausalLMMetrics EvaluateCausalLM(IDataView data, CausalLMTransformer model, int? batchSize = null) =>
        CausalLMEvaluation.Evaluate(data, model, batchSize);
}
