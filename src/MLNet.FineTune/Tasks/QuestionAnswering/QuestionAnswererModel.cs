using MLNet.FineTune.Models;
using MLNet.FineTune.FineTuning;
using MLNet.FineTune.Runtime;
using MLNet.FineTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tasks.QuestionAnswering;

/// <summary>
/// The question-answering core shared by the estimator (training, validation F1) and the transformer (scoring):
/// cuts questions into windows (<see cref="QaFeaturizer"/>), runs the adapted span model on the windows in batches,
/// and turns each question's start and end logits into an answer (<see cref="QaPostProcessor"/>).
/// </summary>
internal sealed class QuestionAnswererModel
{
    private readonly object _gate = new();

    public QuestionAnswererModel(AdaptedModel adapted, QaFeaturizer featurizer, QaPostProcessor postProcessor)
    {
        Adapted = adapted;
        Featurizer = featurizer;
        PostProcessor = postProcessor;
    }

    public AdaptedModel Adapted { get; }
    public QaFeaturizer Featurizer { get; }
    public QaPostProcessor PostProcessor { get; }

    private QuestionAnsweringModel SpanModel => (QuestionAnsweringModel)Adapted.Model;

    /// <summary>The same model and windows with another post-processor (e.g. another no-answer threshold).</summary>
    public QuestionAnswererModel WithPostProcessor(QaPostProcessor postProcessor) => new(Adapted, Featurizer, postProcessor);

    /// <summary>
    /// Batches are padded to a multiple of this (as run_qa.py's collator does for mixed precision): fewer distinct
    /// shapes, so the CPU kernels' per-shape setup (oneDNN primitives for bf16) is paid less often.
    /// </summary>
    private const int PadToMultipleOf = 8;

    /// <summary>Start and end logits, each (B, T) float32, of windows padded to the longest (the caller owns the
    /// dispose scope). Padding positions get logits too, as in Hugging Face; their labels never point there.</summary>
    public (Tensor Start, Tensor End) Logits(IReadOnlyList<QaFeature> windows)
    {
        var batch = Collate.Encoder(
            windows.Select(w => (IReadOnlyList<long>)Array.ConvertAll(w.InputIds, id => (long)id)).ToList(),
            Adapted.Tokenizer.PadTokenId ?? 0, PaddingSide.Right,
            windows.Select(w => (IReadOnlyList<long>)Array.ConvertAll(w.TokenTypeIds, id => (long)id)).ToList(),
            padToMultipleOf: PadToMultipleOf, device: Adapted.Device);
        var (start, end) = SpanModel.call(batch);                                 // (B, T) each, in the model's dtype
        return (start.to_type(ScalarType.Float32), end.to_type(ScalarType.Float32));
    }

    /// <summary>
    /// The training loss of run_qa.py's BertForQuestionAnswering: (CE(start logits, start label) + CE(end logits,
    /// end label)) / 2, each cross-entropy averaged over the batch's windows.
    /// </summary>
    public Tensor Loss(IReadOnlyList<QaFeature> windows)
    {
        var (start, end) = Logits(windows);                                       // (B, T)
        using var startLabels = tensor(windows.Select(w => (long)w.StartPosition).ToArray(), device: Adapted.Device); // (B)
        using var endLabels = tensor(windows.Select(w => (long)w.EndPosition).ToArray(), device: Adapted.Device);     // (B)
        return (nn.functional.cross_entropy(start, startLabels) + nn.functional.cross_entropy(end, endLabels)) / 2;
    }

    /// <summary>The answer to each question, scoring up to <paramref name="batchSize"/> windows per forward pass, two
    /// passes at a time on the CPU (<see cref="ScoringWorkers"/>).</summary>
    public QaPrediction[] Predict(IReadOnlyList<QaExample> questions, int batchSize)
    {
        // One call at a time (PredictionEngines on several threads share the model); ScoringWorkers decides the
        // threads within a call.
        lock (_gate) return PredictUnlocked(questions, batchSize);
    }

    private QaPrediction[] PredictUnlocked(IReadOnlyList<QaExample> questions, int batchSize)
    {
        if (questions.Count == 0) return [];
        var windows = new List<QaFeature>();
        for (int q = 0; q < questions.Count; q++) windows.AddRange(Featurizer.Featurize(questions[q], q));

        // Windows of similar length share a forward pass (less padding); logits go back to their window's slot.
        var order = Enumerable.Range(0, windows.Count).OrderByDescending(i => windows[i].Length).ThenBy(i => i).ToArray();
        var startLogits = new float[windows.Count][];
        var endLogits = new float[windows.Count][];
        int[][] batches = order.Chunk(batchSize).ToArray();
        ScoringWorkers.ForEach(batches.Length, Adapted.Device, b =>
        {
            using var scope = NewDisposeScope();
            var chunk = batches[b];
            var (start, end) = Logits(chunk.Select(i => windows[i]).ToList());
            int width = (int)start.shape[1];
            var starts = start.cpu().data<float>().ToArray();                      // (B * T)
            var ends = end.cpu().data<float>().ToArray();
            for (int w = 0; w < chunk.Length; w++)
            {
                startLogits[chunk[w]] = starts.AsSpan(w * width, width).ToArray();
                endLogits[chunk[w]] = ends.AsSpan(w * width, width).ToArray();
            }
        });

        // Windows of one question are consecutive (FeaturizeAll's order).
        var predictions = new QaPrediction[questions.Count];
        int first = 0;
        for (int q = 0; q < questions.Count; q++)
        {
            int count = 0;
            while (first + count < windows.Count && windows[first + count].ExampleIndex == q) count++;
            predictions[q] = PostProcessor.Predict(questions[q].Context ?? "", windows.GetRange(first, count),
                startLogits[first..(first + count)], endLogits[first..(first + count)]);
            first += count;
        }
        return predictions;
    }
}
