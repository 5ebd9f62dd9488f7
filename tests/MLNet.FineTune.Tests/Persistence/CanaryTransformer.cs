using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.FineTune.Persistence;
using MLNet.FineTune.Tests.Persistence;

// Registered exactly as our library's transformers will be: one loader for ITransformer (mlContext.Model.Load),
// one for IRowMapper (ML.NET's data-view pipelines reload the mapper of a RowToRowMapperTransform).
[assembly: LoadableClass(typeof(CanaryTransformer), null, typeof(SignatureLoadModel),
    "MLNet.FineTune persistence canary", CanaryTransformer.LoaderSignature)]
[assembly: LoadableClass(typeof(IRowMapper), typeof(CanaryTransformer), null, typeof(SignatureLoadRowMapper),
    "MLNet.FineTune persistence canary", CanaryTransformer.LoaderSignature)]

namespace MLNet.FineTune.Tests.Persistence;

/// <summary>
/// The smallest transformer with state that goes through the whole persistence mechanism (publicized references,
/// IgnoresAccessChecksTo, LoadableClass, ModelZipStorage). Input: <c>Text</c> (string), <c>Features</c> (float vector
/// of the weights' length). Output: <c>Tagged</c> = Text + suffix, <c>Score</c> = Features · weights.
/// </summary>
internal sealed class CanaryTransformer : RowToRowTransformerBase
{
    public const string LoaderSignature = "MLFTPersistenceCanary";
    private const string SuffixPayload = "suffix.txt";
    private const string WeightsPayload = "weights.f32";

    public string Suffix { get; }
    public float[] Weights { get; }

    public CanaryTransformer(IHostEnvironment env, string suffix, float[] weights)
        : base(env.Register(nameof(CanaryTransformer)))
    {
        Suffix = suffix;
        Weights = weights;
    }

    private static VersionInfo GetVersionInfo() => ModelZipStorage.CreateVersionInfo(
        modelSignature: "MLFTCANA",
        loaderSignature: LoaderSignature,
        currentVersion: 0x00010001, readableByVersion: 0x00010001, readsBackToVersion: 0x00010001,
        loaderType: typeof(CanaryTransformer));

    protected override void SaveModel(ModelSaveContext ctx) => ModelZipStorage.Save(ctx, GetVersionInfo(), payloads =>
    {
        payloads.AddText(SuffixPayload, Suffix);
        payloads.AddArray<float>(WeightsPayload, Weights);
    });

    // Found by ML.NET through the LoadableClass attributes above.
    private static CanaryTransformer Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        var payloads = ModelZipStorage.Load(ctx, GetVersionInfo());
        return new CanaryTransformer(env, payloads.ReadText(SuffixPayload), payloads.ReadArray<float>(WeightsPayload));
    }

    private static IRowMapper Create(IHostEnvironment env, ModelLoadContext ctx, DataViewSchema inputSchema) =>
        Create(env, ctx).MakeRowMapper(inputSchema);

    protected override IRowMapper MakeRowMapper(DataViewSchema schema) => new Mapper(this, schema);

    private sealed class Mapper : MapperBase
    {
        private readonly CanaryTransformer _parent;
        private readonly int _textColumn;
        private readonly int _featuresColumn;

        public Mapper(CanaryTransformer parent, DataViewSchema schema) : base(parent.Host, schema, parent)
        {
            _parent = parent;
            _textColumn = schema.GetColumnOrNull("Text")?.Index
                ?? throw new ArgumentException("CanaryTransformer needs an input column 'Text'.");
            var features = schema.GetColumnOrNull("Features")
                ?? throw new ArgumentException("CanaryTransformer needs an input column 'Features'.");
            if (features.Type is not VectorDataViewType { ItemType: NumberDataViewType } vector || vector.ItemType.RawType != typeof(float) || vector.Size != parent.Weights.Length)
                throw new ArgumentException($"CanaryTransformer: column 'Features' must be a float vector of size {parent.Weights.Length}, got {features.Type}.");
            _featuresColumn = features.Index;
        }

        protected override DataViewSchema.DetachedColumn[] GetOutputColumnsCore() =>
        [
            new DataViewSchema.DetachedColumn("Tagged", TextDataViewType.Instance),
            new DataViewSchema.DetachedColumn("Score", NumberDataViewType.Single),
        ];

        protected override Delegate MakeGetter(DataViewRow input, int iinfo, Func<int, bool> activeOutput, out Action disposer)
        {
            disposer = null!;
            if (iinfo == 0)
            {
                var getText = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[_textColumn]);
                ReadOnlyMemory<char> text = default;
                ValueGetter<ReadOnlyMemory<char>> tagged = (ref ReadOnlyMemory<char> dst) =>
                {
                    getText(ref text);
                    dst = (text.ToString() + _parent.Suffix).AsMemory();
                };
                return tagged;
            }
            var getFeatures = input.GetGetter<VBuffer<float>>(input.Schema[_featuresColumn]);
            VBuffer<float> features = default;
            ValueGetter<float> score = (ref float dst) =>
            {
                getFeatures(ref features);
                dst = Dot(features.DenseValues(), _parent.Weights);
            };
            return score;
        }

        protected override Func<int, bool> GetDependenciesCore(Func<int, bool> activeOutput) =>
            column => (column == _textColumn && activeOutput(0)) || (column == _featuresColumn && activeOutput(1));

        protected override void SaveModel(ModelSaveContext ctx) => _parent.SaveModel(ctx);
    }

    /// <summary>Left-to-right float sum, so a test can reproduce the exact bits.</summary>
    public static float Dot(IEnumerable<float> features, float[] weights)
    {
        float sum = 0;
        int i = 0;
        foreach (var x in features)
            sum += x * weights[i++];
        return sum;
    }
}
