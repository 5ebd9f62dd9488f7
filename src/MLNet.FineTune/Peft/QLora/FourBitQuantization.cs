namespace MLNet.FineTune
{
    /// <summary>The 4-bit data type of a quantized base weight (bitsandbytes' <c>bnb_4bit_quant_type</c>).</summary>
    public enum FourBitType
    {
        /// <summary>4-bit NormalFloat (Dettmers et al., 2023): 16 quantiles of N(0, 1) scaled to [-1, 1], information
        /// theoretically optimal for normally distributed weights. QLoRA's choice.</summary>
        NF4,
        /// <summary>4-bit float, 1 sign, 2 exponent and 1 mantissa bit (bitsandbytes' FP4, values 0..12 scaled to
        /// [-1, 1]).</summary>
        FP4,
    }

    /// <summary>
    /// How the frozen base's linear layers are stored in 4 bits (bitsandbytes' <c>BitsAndBytesConfig</c> with
    /// <c>load_in_4bit</c>): each weight, flattened row-major, is cut into blocks of <see cref="BlockSize"/> values, each
    /// block scaled by its absolute maximum and rounded to the nearest of 16 code values; with
    /// <see cref="DoubleQuantization"/> the float32 block maxima are themselves quantized to 8 bits.
    /// </summary>
    public sealed record FourBitQuantization
    {
        /// <summary>bnb_4bit_quant_type: NF4 (default) or FP4.</summary>
        public FourBitType QuantType { get; init; } = FourBitType.NF4;

        /// <summary>Values per absmax block: 32, 64 (default, QLoRA's), 128, ..., 4096.</summary>
        public int BlockSize { get; init; } = 64;

        /// <summary>bnb_4bit_use_double_quant: the float32 block maxima, less their mean, are quantized to 8 bits in
        /// blocks of 256 (QLoRA's double quantization; about 0.37 bits per parameter saved at block size 64). Default on.</summary>
        public bool DoubleQuantization { get; init; } = true;

        /// <summary>Block size of the double quantization of the block maxima (bitsandbytes': 256).</summary>
        public const int NestedBlockSize = 256;

        /// <summary>Throws for a block size bitsandbytes does not accept.</summary>
        /// <exception cref="ArgumentOutOfRangeException">Names the option and the values allowed.</exception>
        public void Validate()
        {
            if (BlockSize is not (32 or 64 or 128 or 256 or 512 or 1024 or 2048 or 4096))
                throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize, "FourBitQuantization.BlockSize must be one of 32, 64, 128, 256, 512, 1024, 2048, 4096 (as bitsandbytes).");
            if (!Enum.IsDefined(QuantType))
                throw new ArgumentOutOfRangeException(nameof(QuantType), QuantType, "FourBitQuantization.QuantType must be NF4 or FP4.");
        }
    }
}
