using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Training;
using static TorchSharp.torch;

namespace MLNet.FineTune.Tests.Training;

/// <summary>The loop on a real model: bert-tiny (committed fixture) with LoRA on query/value, PEFT's LoRA+ groups,
/// variable-length rows collated with dynamic padding and length bucketing, accuracy as the validation metric.</summary>
[TestClass]
public sealed class BertTinyTrainingTests
{
    /// <summary>Rows of random tokens with one marker token (10 + class) at a random position.</summary>
    private sealed record MarkerData(List<long[]> Rows, long[] Labels)
    {
        public static MarkerData Create(int count, int seed)
        {
            var random = new Random(seed);
            var rows = new List<long[]>();
            var labels = new long[count];
            for (int i = 0; i < count; i++)
            {
                int length = random.Next(4, 24);
                var row = new long[length + 2];
                row[0] = 101 % 512; row[^1] = 102 % 512;                   // [CLS] ... [SEP] stand-ins
                for (int t = 1; t <= length; t++) row[t] = random.Next(20, 512);
                labels[i] = random.Next(3);
                row[random.Next(1, length + 1)] = 10 + labels[i];
                rows.Add(row);
            }
            return new MarkerData(rows, labels);
        }

        public EncoderInputs Batch(IReadOnlyList<int> indices) =>
            Collate.Encoder(indices.Select(i => (IReadOnlyList<long>)Rows[i]).ToList(), padTokenId: 0);
    }

    [TestMethod]
    [DataRow(ScalarType.Float32)]
    [DataRow(ScalarType.BFloat16)]
    public void LoraPlusOnBertTinyLearnsAndTouchesOnlyTrainableWeights(ScalarType baseDType)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var folder = TestPaths.Fixture("hf-reference", "bert-tiny-cls");
        manual_seed(0);
        var (model, report) = ModelFactory.FromPretrainedSequenceClassification(folder, numLabels: 3, dtype: baseDType);
        Assert.AreEqual(0, report.Missing.Count, report.ToString());
        var peft = PeftModel.Inject(model, new LoraOptions { Dropout = 0, TargetModules = ["query", "value"], Rank = 4, Alpha = 8 });
        var parameters = ParameterGroups.FromGroups(model, peft.ParameterGroups(loraPlusRatio: 16));

        // PEFT's groups and the training layer's no-decay rule must agree on a real model.
        foreach (var p in parameters)
            Assert.AreEqual(!ParameterGroups.IsNoDecay(p.Name), p.ApplyWeightDecay, $"weight decay of {p.Name}");
        Assert.IsTrue(parameters.Where(p => p.Name.Contains("lora_B")).All(p => p.LearningRateMultiplier == 16));
        Assert.IsTrue(parameters.Where(p => p.Name.Contains("lora_A")).All(p => p.LearningRateMultiplier == 1));
        Console.WriteLine($"{peft.CountParameters()}; {parameters.Count} trainable tensors: " +
            string.Join(", ", parameters.Select(p => $"{p.Name} ({p.Parameter.dtype}, x{p.LearningRateMultiplier}{(p.ApplyWeightDecay ? "" : ", no decay")})")));

        var trainable = parameters.Select(p => p.Parameter.Handle).ToHashSet();
        var frozenBefore = model.named_parameters().Where(p => !trainable.Contains(p.parameter.Handle))
            .ToDictionary(p => p.name, p => p.parameter.detach().clone());

        var train = MarkerData.Create(96, seed: 1);
        var valid = MarkerData.Create(48, seed: 2);
        double Accuracy()
        {
            var logits = model.forward(valid.Batch(Enumerable.Range(0, valid.Rows.Count).ToList())); // (N, 3)
            using var labels = tensor(valid.Labels);
            return logits.argmax(1).eq(labels).to_type(ScalarType.Float32).mean().item<float>();
        }
        var log = new List<string>();
        Console.WriteLine($"model, adapter and data ready in {clock.ElapsedMilliseconds} ms");
        clock.Restart();
        var result = FineTuneTrainer.Train(new TrainingSetup
        {
            Model = model, Parameters = parameters, ExampleCount = train.Rows.Count,
            ExampleLengths = train.Rows.Select(r => r.Length).ToList(),
            ComputeLoss = indices =>
            {
                var logits = model.forward(train.Batch(indices));                  // (B, 3)
                using var labels = tensor(indices.Select(i => train.Labels[i]).ToArray());
                return nn.functional.cross_entropy(logits, labels);
            },
            Evaluate = () => new EvaluationResult("accuracy", Accuracy(), HigherIsBetter: true),
            Options = new TrainingOptions
            {
                Epochs = 6, BatchSize = 16, LearningRate = 2e-2, WarmupRatio = 0.1, LengthBucketing = true, LengthBucketingMegaBatches = 3,
                Seed = 3, LoggingSteps = 12,
            },
            Log = log.Add,
        });
        Console.WriteLine($"trained in {clock.ElapsedMilliseconds} ms (optimizer steps: {result.History.Steps.Sum(s => 16 / s.ExamplesPerSecond) * 1000:F0} ms)");
        foreach (var line in log) Console.WriteLine(line);
        var losses = result.History.Steps.Select(s => s.Loss).ToArray();
        double early = losses.Take(6).Average(), late = losses.TakeLast(6).Average();
        Console.WriteLine($"{baseDType} base: loss {early:F4} (first epoch) -> {late:F4} (last epoch); best accuracy {result.BestEvaluation!.Value:F3} at step {result.BestStep}");
        Assert.AreEqual(36, result.StepsCompleted);
        Assert.IsTrue(late < early - 0.1, $"the adapters must learn the marker task (loss {early:F4} -> {late:F4})");
        Assert.IsTrue(result.BestEvaluation.Value > 1.0 / 3 + 0.1, "better than chance on held-out rows");

        foreach (var (name, before) in frozenBefore)
        {
            var now = model.named_parameters().Single(p => p.name == name).parameter;
            Assert.IsTrue(now.Equals(before), $"frozen {name} changed");
        }
    }
}
