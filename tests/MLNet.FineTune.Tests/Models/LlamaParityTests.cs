using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Models;

/// <summary>LlamaForCausalLM (grouped-query attention, untied head) against transformers on Fixtures/hf-reference/llama-tiny.</summary>
[TestClass]
public sealed class LlamaParityTests : CausalParityTests
{
    protected override string FixtureName => "llama-tiny";
    protected override Type ExpectedModelType => typeof(LlamaForCausalLM);
}
