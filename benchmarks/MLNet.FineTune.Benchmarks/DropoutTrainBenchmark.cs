using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using MLNet.FineTune.Checkpoints;
using MLNet.FineTune.Models;
using MLNet.FineTune.Peft;
using MLNet.FineTune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNet.FineTune.Benchmarks;

/// <summary>
/// <c>dropout-train</c>: what dropout costs in a training step of the question-answering recipe's shape: MiniLM
/// (<see cref="DefaultModels.MiniLM()"/>) as BertForQuestionAnswering, frozen bfloat16 base, float32 LoRA r 16 on every
/// linear layer of every block, one batch of 16 x 176 real tokens, forward + span loss + backward. Four models differ
/// only in their dropout probabilities; their steps are interleaved so that they share the machine's load.
/// Uses the library's public API only, so the same file (with <see cref="MachineInfo.DescribeRun"/>) measures an older
/// build of the library too.
/// </summary>
internal sealed class DropoutTrainBenchmark : IBenchmark
{
    private const int Batch = 16, Tokens = 176;

    private static readonly (string Name, double Hidden, double Attention, double Lora)[] Variants =
    [
        ("checkpoint's dropout (hidden 0.1, attention 0.1, LoRA 0.1)", 0.1, 0.1, 0.1),
        ("attention dropout 0", 0.1, 0.0, 0.1),
        ("hidden and LoRA dropout 0", 0.0, 0.1, 0.0),
        ("no dropout", 0.0, 0.0, 0.0),
    ];

    public string Name => "dropout-train";
    public string Summary => "MiniLM QA LoRA training step (bf16 base, 16 x 176) with and without dropout, interleaved";

    public int Run(BenchmarkOptions options)
    {
        var folder = DefaultModels.MiniLM();
        var inputs = ForwardBenchmark.TextBatch(HfTokenizer.FromFolder(folder), Batch, Tokens);
        manual_seed(0);
        var starts = randint(0, Tokens, [Batch]);
        var ends = randint(0, Tokens, [Batch]);
        var models = Variants.Select(v => Build(folder, v.Hidden, v.Attention, v.Lora)).ToArray();
        var steps = Variants.Select(_ => new List<double>()).ToArray();
        var loads = new List<string>();
        string loadBefore = MachineInfo.LoadAverage();
        for (int run = 0; run < options.Warmup + options.Runs; run++)
        {
            loads.Add(MachineInfo.LoadAverage().Split(' ')[0]);
            for (int i = 0; i < models.Length; i++)
            {
                long start = Stopwatch.GetTimestamp();
                using (var scope = NewDisposeScope())
                {
                    models[i].zero_grad();
                    var (startLogits, endLogits) = models[i].call(inputs);                         // (B, T) each
                    var loss = (nn.functional.cross_entropy(startLogits.to_type(ScalarType.Float32), starts) +
                                nn.functional.cross_entropy(endLogits.to_type(ScalarType.Float32), ends)) / 2;
                    loss.backward();
                }
                double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                Console.Error.WriteLine($"{(run < options.Warmup ? "warm-up" : "run")} {run}, {Variants[i].Name}: {ms:F0} ms");
                if (run >= options.Warmup) steps[i].Add(ms);
            }
        }
        string loadAfter = MachineInfo.LoadAverage();
        foreach (var model in models) model.Dispose();

        double none = new Timings(steps[^1]).Median;
        Console.WriteLine($"### MiniLM QA LoRA training step with and without dropout (`dropout-train`): {Batch} x {Tokens} tokens, " +
                          $"{options.Runs} interleaved runs after {options.Warmup} warm-up, median");
        Console.WriteLine();
        Console.WriteLine(MachineInfo.DescribeRun(loadBefore, loadAfter) + $"; 1-minute load at each run {string.Join(", ", loads)}");
        Console.WriteLine();
        Console.WriteLine(Markdown.Table(["dropout", "median ms/step", "vs no dropout", "runs (ms)"],
            Variants.Select((v, i) =>
            {
                double median = new Timings(steps[i]).Median;
                return (IReadOnlyList<string>)[v.Name, F(median, 0), F(median / none, 2) + "x",
                    string.Join(", ", steps[i].Select(ms => F(ms, 0)))];
            })));
        return 0;
    }

    /// <summary>BertForQuestionAnswering with the given dropout probabilities, base loaded in bf16, LoRA (float32) injected, in train mode.</summary>
    private static QuestionAnsweringModel Build(string folder, double hidden, double attention, double lora)
    {
        var json = JsonNode.Parse(HfConfig.Load(folder).ToString())!.AsObject();
        json["hidden_dropout_prob"] = hidden;
        json["attention_probs_dropout_prob"] = attention;
        var model = ModelFactory.CreateQuestionAnswering(HfConfig.Parse(json.ToJsonString(), folder));
        ModelFactory.LoadPretrained(model, folder, ScalarType.BFloat16);
        PeftModel.Inject(model, new LoraOptions
        {
            Rank = 16, Alpha = 32, Dropout = lora, TargetModules = ["query", "key", "value", "dense"],
            TaskType = PeftTaskType.QuestionAnswering,
        });
        model.train();
        return model;
    }

    private static string F(double value, int decimals) => ForwardBenchmark.F(value, decimals);
}
