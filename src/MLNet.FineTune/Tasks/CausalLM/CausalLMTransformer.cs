using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Models;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Tasks.CausalLM;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.FineTuning.Scoring;
using MLNet.FineTune.Training;

[assembly: LoadableClass(typeof(CausalLMTransformer), null, typeof(SignatureLoadModel),
    "Fine-tuned causal language model", CausalLMTransformer.LoaderSignature)]

namespace MLNet.FineTune.Tasks.CausalLM;

/// <summary>
/// A fine-tuned causal language model: generates a continuation for each row's text, prompt or conversation.
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>column</term><description>type and meaning</description></listheader>
/// <item><term>input: the text, prompt or messages column</term><description>String (messages: a JSON conversation,
/// rendered with the chat template and its generation prompt).</description></item>
/// <item><term>GeneratedText</term><description>String: the continuation only, special tokens removed, cut after a
/// stop string.</description></item>
/// <item><term>GeneratedTokenCount</term><description>Int32: tokens generated (a final EOS or stop token included).</description></item>
/// </list>
/// <para>Generation follows <see cref="Generation"/> (from <see cref="CausalLMOptions.Generation"/>);
/// <see cref="WithGeneration"/> gives a transformer over the same model with other settings. Thread safety: as
/// the other fine-tuned transformers, generation on one model runs one call at a time.</para>
/// </remarks>
public sealed class CausalLMTransformer : FineTunedTransformer
{
    internal const string LoaderSignature = "MLFTCausalLM";
    private const string SettingsPayload = "causal_lm.json";

    private readonly CausalLMModel _model;
    private readonly Settings _settings;

    /// <summary>What the transformer needs besides the model, as saved in model.zip.</summary>
    internal sealed record Settings(CausalLMDataFormat Format, string? TextColumn, string? PromptColumn, string? CompletionColumn,
        string? MessagesColumn, string GeneratedTextColumn, string GeneratedTokenCountColumn, int MaxSequenceLength, bool AppendEos,
        GenerationOptions Generation, int ScoringBatchSize, BaseModelStorage Storage,
        ScoringPrecision ScoringPrecision = ScoringPrecision.AsTrained)
    {
        public static Settings From(CausalLMOptions o) => new(o.Format, o.TextColumnName, o.PromptColumnName, o.CompletionColumnName,
            o.MessagesColumnName, o.GeneratedTextColumnName, o.GeneratedTokenCountColumnName, o.MaxSequenceLength, o.AppendEos,
            o.Generation, o.ScoringBatchSize, o.BaseModelStorage, o.ScoringPrecision);

        /// <summary>The column generation reads.</summary>
        public string InputColumn => Format switch
        {
            CausalLMDataFormat.Text => TextColumn!,
            CausalLMDataFormat.PromptCompletion => PromptColumn!,
            _ => MessagesColumn!,
        };
    }

    internal CausalLMTransformer(CausalLMModel model, Settings settings, TrainingHistory? history)
        : base(model.Adapted, settings.Storage, history, settings.ScoringPrecision)
    {
        settings.Generation.Validate();
        _model = model;
        _settings = settings;
    }

    /// <summary>How this transformer generates.</summary>
    public GenerationOptions Generation => _settings.Generation;

    /// <summary>A transformer over the same model that generates with other settings (the model is shared, not copied).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range.</exception>
    public CausalLMTransformer WithGeneration(GenerationOptions generation)
    {
        ArgumentNullException.ThrowIfNull(generation);
        return new CausalLMTransformer(_model, _settings with { Generation = generation }, TrainingHistory);
    }

    /// <summary>Generates a continuation for each input (texts, prompts or JSON conversations, as the model was trained on).</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> inputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        return inputs.Count == 0 ? [] : _model.Generate(inputs, Generation, i => $"Input {i}").Select(g => g.Text).ToArray();
    }

    /// <summary>How many tokens the model's tokenizer makes of <paramref name="text"/> (with the special tokens it adds,
    /// e.g. BOS, when <paramref name="addSpecialTokens"/>): for token budgets and throughput.</summary>
    public int CountTokens(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        return _model.Tokenizer.Encode(text, addSpecialTokens).Ids.Count;
    }

    internal CausalLMModel Model => _model;
    internal Settings SavedSettings => _settings;

    internal override IBatchScorer CreateScorer() => new CausalLMScorer(_model, _settings.InputColumn,
        _settings.GeneratedTextColumn, _settings.GeneratedTokenCountColumn, _settings.Generation);

    internal override void SaveSettings(ModelPayloadWriter payloads) => payloads.AddJson(SettingsPayload, _settings, ModelZipStorage.JsonOptions);

    // Version 0x00010001: settings JSON, optional training history, the adapted model's payloads (FineTunedTransformer).
    internal override VersionInfo SavedVersion => GetVersionInfo();

    private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
        modelSignature: "MLFTCALM", loaderSignature: LoaderSignature,
        currentVersion: 0x00010001, readableByVersion: 0x00010001, readsBackToVersion: 0x00010001,
        loaderType: typeof(CausalLMTransformer));

    // Found by ML.NET through the LoadableClass attribute above.
    private static CausalLMTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var (settings, history, adapted) = LoadSaved<Settings, CausalLanguageModel>(env, ctx, GetVersionInfo(), SettingsPayload,
            _ => ModelFactory.CreateCausalLM);
        return new CausalLMTransformer(new CausalLMModel(adapted, settings.Format, settings.MaxSequenceLength, settings.AppendEos), settings, history);
    }
}
