using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Models;

/// <summary>Qwen2ForCausalLM (q/k/v biases, tied head) against transformers on Fixtures/hf-reference/qwen2-tiny.</summary>
[TestClass]
public sealed class Qwen2ParityTests : CausalParityTests
{
    protected override string FixtureName => "qwen2-tiny";
    protected override Type ExpectedModelType => typeof(LlamaForCausalLM);
}
