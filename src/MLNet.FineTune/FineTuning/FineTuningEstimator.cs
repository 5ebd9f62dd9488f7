using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.FineTuning;

/// <summary>
/// What every fine-tuning estimator shares: the task and method options (checked by
/// <see cref="TrainingOptions.Validate"/> and the method's <see cref="PeftMethod"/>), the choice of base model, device, precision and seed for a run, the adapted model
/// built with the options' <see cref="FineTuneOptions.InitialAdapter"/> and <see cref="FineTuneOptions.Dropout"/>, and
/// training with progress reported to the MLContext and to <see cref="TrainingOptions.Progress"/>. Each task reads
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
        options.Validate();
        PeftMethods.For(method).Validate(method);
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

    /// <summary>Starts the log channel of one Fit (MLContext.Log shows its messages).</summary>
    private protected IChannel StartChannel() => _host.Start(_activity);

    /// <summary>
    /// Decides once where and how this Fit trains: the base folder (the default MiniLM when none is given), the device
    /// (the MLContext's GPU choice), the frozen base's dtype (<see cref="FineTuneOptions.Precision"/>), the seed
    /// (the options', else the MLContext's) and the peak learning rate (the options', else the method's default), and
    /// seeds TorchSharp so a new head and a new adapter start reproducibly.
    /// </summary>
    private protected FineTuningRun StartRun(IChannel channel)
    {
        var baseFolder = Options.BaseModel ?? DefaultModels.MiniLM();
        var internals = _env as IHostEnvironmentInternal;
        var device = ComputeDevice.Select(internals?.GpuDeviceId, internals?.FallbackToCpu ?? false);
        var baseDType = PrecisionChoice.BaseDType(Options.Precision, device);
        var resolved = ResolvedTraining.From(Options, PeftMethods.For(Method).DefaultLearningRate, internals?.Seed ?? ResolvedTraining.DefaultSeed);
        manual_seed(resolved.Seed);
        return new FineTuningRun(baseFolder, device, baseDType, resolved, channel.Info);
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
        var method = Method with { TaskType = peftTaskType, BaseModelNameOrPath = run.BaseFolder };
        if (Options.InitialAdapter is { } adapter) InitialAdapterMethod.Check(adapter, method);
        return AdaptedModel.CreateForTraining(run.BaseFolder, config => createTaskModel(ModelDropout.Override(config, Options.Dropout)),
            method, run.BaseDType, run.Device, run.Log, Options.InitialAdapter);
    }

    /// <summary>
    /// Trains <paramref name="adapted"/> with the shared loop, reporting progress to the MLContext's progress channel and
    /// to <see cref="TrainingOptions.Progress"/>; records the history as <see cref="LastTrainingHistory"/>.
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
            result = adapted.Train(Options, Method, run.Resolved, exampleLengths, computeLoss, evaluate, taskSettings, run.Log, progress);
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
}

/// <summary>One Fit's choices, made once when it starts: the base folder, device, dtype of the frozen base, the
/// learning rate and seed; and its log.</summary>
internal sealed record FineTuningRun(string BaseFolder, Device Device, ScalarType BaseDType, ResolvedTraining Resolved, Action<string> Log)
{
    /// <summary>The seed of this Fit.</summary>
    public int Seed => Resolved.Seed;
}
