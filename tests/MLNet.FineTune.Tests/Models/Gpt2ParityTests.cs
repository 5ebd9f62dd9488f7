using MLNet.FineTune.Models;

namespace MLNet.FineTune.Tests.Models;

/// <summary>GPT2LMHeadModel (Conv1D layout, tied head) against transformers on Fixtures/hf-reference/gpt2-tiny.</summary>
[TestClass]
public sealed class Gpt2ParityTests : CausalParityTests
{
    protected override string FixtureName => "gpt2-tiny";
    protected override Type ExpectedModelType => typeof(Gpt2LMHeadModel);
}
