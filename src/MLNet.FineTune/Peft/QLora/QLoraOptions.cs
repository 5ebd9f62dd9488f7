namespace MLNet.FineTune;

/// <summary>
/// QLoRA (Dettmers et al., 2023): <see cref="LoraOptions"/> trained over a frozen base whose linear layers are stored
/// in 4 bits (<see cref="Quantization"/>: NF4 with double quantization, blocks of 64, by default), dequantized one layer
/// at a time to the compute dtype (bfloat16 on CUDA and on CPUs with AVX-512 BF16). Embeddings, norms, the output layer
/// and the task head stay in the base dtype. The base is quantized when it is loaded; the trained adapter is an
/// ordinary PEFT LoRA adapter (SaveAdapter writes a LORA adapter_config.json; it loads on a 16-bit base too). Set
/// <see cref="LoraOptions.UseDora"/> for DoRA over the 4-bit base.
/// </summary>
public sealed record QLoraOptions : LoraOptions
{
    /// <summary>How the base's linear layers are stored (bitsandbytes' <c>BitsAndBytesConfig</c> with
    /// <c>load_in_4bit</c>). Default: NF4, block size 64, double quantization.</summary>
    public FourBitQuantization Quantization { get; init; } = new();
}
