using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Hub;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.FineTuning;

/// <summary>
/// What every fine-tuning estimator shares: the task and method options (and the checks of
/// <see cref="FineTuneOptions"/>), the choice of base model, device, precision and seed for a run, the adapted model
/// built with the options' <see cref="FineTuneOptions.InitialAdapter"/> and <see cref="FineTuneOptions.Dropout"/>, and
/// training with progress reported to the MLContext and to <see cref="FineTuneOptions.Progress"/>. Each task reads
/// its rows, supplies its model, loss and validation metric, and builds its transformer.
/// </summary>
/// <typeparam name="TOptions">The task's options.</typeparam>
/// <typeparam name="TTransformer">The fitted transformer.</typeparam>
public abstract class FineTuningEstimator<TOptions, TTransformer> : IEstimator<TTransformer>
    where TOptions : FineTuneOptions
    where TTransformer : FineTunedTransformer
{
    private readonly IHostEnvironment _env;
    private readonly IHost _host;

    /// <summary>Names the log channel and the progress channel of a Fit (e.g. "Fine-tuning a text classifier").</summary>
    private readonly string _activity;

    internal FineTuningEstimator(IHostEnvironment env, string name, string activity, TOptions options, MethodOptions method)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _host = env.Register(name);
        _activity = activity;
        Options = options ?? throw new ArgumentNullException(nameof(options));
        Method = method ?? throw new ArgumentNullException(nameof(method));
        CheckOptions(options);
        CheckMethod(method);
    }

    /// <summary>The task options this estimator trains with.</summary>
    public TOptions Options { get; }

    /// <summary>The method options (LoRA, DoRA, adapters, IA3 or full fine-tuning).</summary>
    public MethodOptions Method { get; }

    /// <summary>The history of the last <see cref="Fit"/> (also on the returned transformer).</summary>
    public TrainingHistory? LastTrainingHistory { get; private set; }

    /// <summary>Fine-tunes the base model on <paramref name="input"/> and returns the fitted transformer.</summary>
    public abstract TTransformer Fit(IDataView input);

    /// <inheritdoc/>
    public abstract SchemaShape GetOutputSchema(SchemaShape inputSchema);

    /// <summary>Files a task keeps beside a saved adapter (e.g. a classifier's labels), fetched with an
    /// <see cref="FineTuneOptions.InitialAdapter"/> given as a hub id.</summary>
    private protected virtual IReadOnlyList<string> InitialAdapterTaskFiles => [];

    /// <summary>Starts the log channel of one Fit (MLContext.Log shows its messages).</summary>
    private protected IChannel StartChannel() => _host.Start(_activity);

    /// <summary>
    /// Decides where and how this Fit trains: the base folder (the default MiniLM when none is given), the device
    /// (the MLContext's GPU choice), the frozen base's dtype (<see cref="FineTuneOptions.Precision"/>) and the seed
    /// (the options', else the MLContext's), and seeds TorchSharp so a new head and a new adapter start reproducibly.
    /// </summary>
    private protected FineTuningRun StartRun(IChannel channel)
    {
        var downloads = new HubDownloadLog(channel.Info);
        var baseFolder = Options.BaseModel is { } baseModel
            ? HuggingFaceHub.Resolve(baseModel, HuggingFaceHub.RepoKind.Model, [], Options.Hub, downloads, channel.Info, Options.CancellationToken)
            : DefaultModels.MiniLM();
        var initialAdapter = Options.InitialAdapter is { } adapter
            ? HuggingFaceHub.Resolve(adapter, HuggingFaceHub.RepoKind.Adapter, InitialAdapterTaskFiles, Options.Hub, downloads, channel.Info, Options.CancellationToken)
            : null;
        var internals = _env as IHostEnvironmentInternal;
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? false);
        var baseDType = PrecisionChoice.BaseDType(Options.Precision, device);
        int seed = Options.Seed ?? internals?.Seed ?? 42;
        manual_seed(seed);
        return new FineTuningRun(baseFolder, initialAdapter, device, baseDType, seed, channel.Info);
    }

    /// <summary>
    /// The task model built from the base folder's config (with <see cref="FineTuneOptions.Dropout"/> applied) and
    /// weights, with the method injected, or the saved <see cref="FineTuneOptions.InitialAdapter"/> loaded to train on.
    /// </summary>
    /// <param name="run">This Fit's run.</param>
    /// <param name="createTaskModel">Builds the task model (e.g. a sequence classifier with n labels) from a config.</param>
    /// <param name="peftTaskType">PEFT's task type (<see cref="PeftTaskType"/>), written into a saved adapter.</param>
    /// <exception cref="ArgumentException">The initial adapter is of another method than this estimator's.</exception>
    private protected AdaptedModel CreateModel<TModel>(FineTuningRun run, Func<HfConfig, TModel> createTaskModel, string peftTaskType)
        where TModel : nn.Module, IPretrainedModel
    {
        var method = MethodConfigs.ToPeftConfig(Method, peftTaskType, run.BaseFolder);
        if (run.InitialAdapter is { } adapter) InitialAdapterMethod.Check(adapter, method);
        return AdaptedModel.CreateForTraining(run.BaseFolder, config => createTaskModel(ModelDropout.Override(config, Options.Dropout)),
            method, run.BaseDType, run.Device, run.Log, run.InitialAdapter);
    }

    /// <summary>
    /// Trains <paramref name="adapted"/> with the shared loop, reporting progress to the MLContext's progress channel and
    /// to <see cref="FineTuneOptions.Progress"/>; records the history as <see cref="LastTrainingHistory"/>.
    /// </summary>
    /// <param name="run">This Fit's run.</param>
    /// <param name="adapted">The model from <see cref="CreateModel{TModel}"/>.</param>
    /// <param name="exampleLengths">Tokens of each training example (its index is what <paramref name="computeLoss"/> receives).</param>
    /// <param name="computeLoss">The mean loss of a batch of example indices, a scalar that requires grad.</param>
    /// <param name="evaluate">The validation metric, or null without a validation set.</param>
    /// <param name="taskSettings">The task's settings that shape its examples and outputs (labels, lengths), as JSON:
    /// checkpoints record them, so a resume with other settings is refused.</param>
    /// <param name="describeExamples">Names a batch's examples in the user's terms (e.g. "training rows 3, 17"), for the
    /// error when a step's loss is not finite.</param>
    private protected TrainingResult Train(FineTuningRun run, AdaptedModel adapted, IReadOnlyList<int> exampleLengths,
        Func<IReadOnlyList<int>, Tensor> computeLoss, Func<EvaluationResult>? evaluate, string taskSettings, Func<IReadOnlyList<int>, string> describeExamples)
    {
        using var progress = new TrainingProgressChannel(_host, _activity, Options.Progress);
        TrainingResult result;
        try
        {
            result = adapted.Train(Options, Method, run.Seed, exampleLengths.Count, exampleLengths, computeLoss, evaluate, taskSettings, run.Log, progress);
        }
        catch (NonFiniteLossException e)
        {
            throw e.WithExamplesDescribed(describeExamples(e.ExampleIndices));
        }
        LastTrainingHistory = result.History;
        run.Log($"Training ended: {result.StopReason} after {result.StepsCompleted} of {result.TotalSteps} steps" +
            (result.BestEvaluation is { } best ? $"; best {best.MetricName} {best.Value:G5} at step {result.BestStep}" : ""));
        return result;
    }

    /// <summary>"training rows 3, 17, 20" (with <paramref name="label"/>: "training rows 3 (question 'a1'), ..."): data
    /// rows as the errors about reading them number them.</summary>
    private protected static string DescribeTrainingRows(IEnumerable<int> rows, Func<int, string>? label = null) =>
        "training rows " + NonFiniteLossException.ListOf(rows.Distinct().Order().Select(r => label is null ? r.ToString() : $"{r} ({label(r)})"));

    /// <summary>An option that counts something and must be at least 1, or an error naming it.</summary>
    private protected static void RequirePositive(int value, string name)
    {
        if (value < 1) throw new ArgumentOutOfRangeException(name, value, $"{name} must be at least 1.");
    }

    /// <summary>Options that only act together: each alone would be ignored without a word.</summary>
    private static void CheckEvaluationAndCheckpoints(FineTuneOptions o)
    {
        if (o.EvaluateEverySteps is { } every) RequirePositive(every, nameof(o.EvaluateEverySteps));
        if (o.EarlyStoppingPatience is { } patience) RequirePositive(patience, nameof(o.EarlyStoppingPatience));
        if (o.CheckpointEverySteps is { } checkpointEvery) RequirePositive(checkpointEvery, nameof(o.CheckpointEverySteps));
        if (o.ValidationSet is null && o.EvaluateEverySteps is not null)
            throw new ArgumentException("EvaluateEverySteps is set but ValidationSet is not: there is nothing to evaluate. Set ValidationSet, or leave EvaluateEverySteps null.", nameof(o.EvaluateEverySteps));
        if (o.ValidationSet is null && o.EarlyStoppingPatience is not null)
            throw new ArgumentException("EarlyStoppingPatience is set but ValidationSet is not: early stopping watches the validation metric. Set ValidationSet, or leave EarlyStoppingPatience null.", nameof(o.EarlyStoppingPatience));
        if (o.CheckpointDirectory is { } folder && string.IsNullOrWhiteSpace(folder))
            throw new ArgumentException("CheckpointDirectory is blank: name a folder, or leave it null.", nameof(o.CheckpointDirectory));
        if (o.CheckpointEverySteps is not null && o.CheckpointDirectory is null)
            throw new ArgumentException("CheckpointEverySteps is set but CheckpointDirectory is not: set the folder the checkpoints go to.", nameof(o.CheckpointDirectory));
        if (o.CheckpointDirectory is not null && o.CheckpointEverySteps is null)
            throw new ArgumentException("CheckpointDirectory is set but CheckpointEverySteps is not: no checkpoint would be written. Set how often (in optimizer steps), or leave CheckpointDirectory null.", nameof(o.CheckpointEverySteps));
    }

    /// <summary>
    /// The plot is written after training, when a bad path would cost the trained model: its extension and folder are
    /// checked first. (The folder may be missing; it is created when the plot is written.)
    /// </summary>
    private static void CheckPlotPath(string path)
    {
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw new ArgumentException($"TrainingPlotPath '{path}' is not a valid path: {e.Message}", nameof(FineTuneOptions.TrainingPlotPath), e);
        }
        if (!string.Equals(Path.GetExtension(full), ".png", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"TrainingPlotPath '{path}' must name a .png file (the plot is written as PNG).", nameof(FineTuneOptions.TrainingPlotPath));
        if (Directory.Exists(full))
            throw new ArgumentException($"TrainingPlotPath '{path}' is a folder; name a .png file in it.", nameof(FineTuneOptions.TrainingPlotPath));
        // The nearest existing ancestor must be a folder: a file there would make the plot's folder impossible to create.
        for (var dir = Path.GetDirectoryName(full); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) break;
            if (File.Exists(dir))
                throw new ArgumentException($"TrainingPlotPath '{path}' cannot be written: {dir} is a file, not a folder.", nameof(FineTuneOptions.TrainingPlotPath));
        }
    }

    /// <summary>Full fine-tuning trains every weight: options that choose modules to adapt would be ignored.</summary>
    private static void CheckMethod(MethodOptions method)
    {
        if (method is not FullFineTuneOptions) return;
        foreach (var (name, isSet) in new[] { (nameof(method.TargetModules), method.TargetModules is not null),
            (nameof(method.TargetModulesRegex), method.TargetModulesRegex is not null), (nameof(method.ExcludeModules), method.ExcludeModules is not null) })
            if (isSet)
                throw new ArgumentException($"FullFineTuneOptions.{name} is set, but full fine-tuning trains every weight: {name} chooses modules to adapt and would be ignored. Leave it null, or choose a parameter-efficient method (LoraOptions, ...).", name);
    }

    /// <summary>The checks every task's options share; tasks check their own settings after these.</summary>
    private static void CheckOptions(FineTuneOptions o)
    {
        RequirePositive(o.Epochs, nameof(o.Epochs));
        RequirePositive(o.BatchSize, nameof(o.BatchSize));
        RequirePositive(o.GradientAccumulationSteps, nameof(o.GradientAccumulationSteps));
        RequirePositive(o.ScoringBatchSize, nameof(o.ScoringBatchSize));
        if (o.LearningRate is { } lr && !(lr > 0 && double.IsFinite(lr)))
            throw new ArgumentOutOfRangeException(nameof(o.LearningRate), o.LearningRate, "LearningRate must be a positive number, or null for the method's default.");
        if (!(o.WarmupRatio is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(o.WarmupRatio), o.WarmupRatio, "WarmupRatio must be in [0, 1].");
        if (!(o.WeightDecay >= 0 && double.IsFinite(o.WeightDecay)))
            throw new ArgumentOutOfRangeException(nameof(o.WeightDecay), o.WeightDecay, "WeightDecay must be 0 (none) or a positive number.");
        if (!(o.MaxGradientNorm >= 0))
            throw new ArgumentOutOfRangeException(nameof(o.MaxGradientNorm), o.MaxGradientNorm, "MaxGradientNorm must be 0 (no clipping) or a positive norm.");
        if (!(o.EarlyStoppingThreshold >= 0 && double.IsFinite(o.EarlyStoppingThreshold)))
            throw new ArgumentOutOfRangeException(nameof(o.EarlyStoppingThreshold), o.EarlyStoppingThreshold, "EarlyStoppingThreshold must be 0 or a positive number.");
        CheckEvaluationAndCheckpoints(o);
        if (o.TrainingPlotPath is { } plot) CheckPlotPath(plot);
        if (o.Dropout is { } dropout && !(dropout >= 0 && dropout < 1))
            throw new ArgumentOutOfRangeException(nameof(o.Dropout), o.Dropout, "Dropout must be in [0, 1), or null to keep the base model's.");
        // An id ("org/name") is resolved when Fit starts; a folder is checked now.
        if (o.InitialAdapter is { } adapter && !HuggingFaceHub.IsModelId(adapter) && !File.Exists(Path.Combine(adapter, PeftConfigJson.FileName)))
            throw new FileNotFoundException($"InitialAdapter folder {adapter} has no adapter_config.json (expected a folder written by SaveAdapter or by PEFT's save_pretrained, or a Hugging Face id 'org/name').");
        if (o.BaseModel is { } folder && !Directory.Exists(folder) && !HuggingFaceHub.IsModelId(folder))
            throw new DirectoryNotFoundException($"BaseModel folder not found: {folder}. Give a Hugging Face model folder (config.json, model.safetensors, tokenizer files), a Hugging Face id ('org/name' or 'org/name@revision'), or null for the default MiniLM.");
    }
}

/// <summary>One Fit's choices: the base folder and initial adapter folder (ids resolved to cache snapshots), device,
/// dtype of the frozen base and seed; and its log.</summary>
internal sealed record FineTuningRun(string BaseFolder, string? InitialAdapter, Device Device, ScalarType BaseDType, int Seed, Action<string> Log);
