using System.Buffers.Binary;
using System.Text;

namespace MLNet.FineTune.Runtime;

/// <summary>
/// Rewrites a copy of TorchSharp's native bridge (libLibTorchSharp.so, built with GCC 13) so that it loads against an
/// older libstdc++ (GCC 12: Debian 12, Ubuntu 22.04, RHEL 9).
/// </summary>
/// <remarks>
/// The bridge needs exactly one symbol that GCC 12's libstdc++ lacks: <c>std::ios_base_library_init()</c>
/// (version GLIBCXX_3.4.32), a no-op that GCC 13 headers reference so iostreams get initialised; libtorch has done that
/// long before. The patch renames the version need to GLIBCXX_3.4.20 (same length, hash updated) and the symbol to
/// <c>std::get_new_handler()</c>, which libstdc++ has exported since 3.4.20 and which is harmless to call.
/// </remarks>
internal static class LibStdCxxCompatPatch
{
    public const string MissingVersion = "GLIBCXX_3.4.32";
    public const string ReplacementVersion = "GLIBCXX_3.4.20";
    public const string MissingSymbol = "_ZSt21ios_base_library_initv";
    public const string ReplacementSymbol = "_ZSt15get_new_handlerv";

    private const uint SectionTypeVersionNeed = 0x6ffffffe; // SHT_GNU_verneed

    /// <summary>True when the ELF image references the symbol that old libstdc++ lacks.</summary>
    public static bool NeedsPatch(ReadOnlySpan<byte> elf) => IndexOf(elf, Encoding.ASCII.GetBytes(MissingSymbol + "\0")) >= 0;

    /// <summary>Returns a patched copy of a 64-bit little-endian ELF shared object.</summary>
    /// <exception cref="InvalidDataException">The file is not such an object, or lacks what the patch expects.</exception>
    public static byte[] Patch(ReadOnlySpan<byte> original, string fileNameForErrors)
    {
        var elf = original.ToArray();
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F' || elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"{fileNameForErrors} is not a 64-bit little-endian ELF file.");

        long sectionTableOffset = BinaryPrimitives.ReadInt64LittleEndian(elf.AsSpan(0x28));
        int sectionHeaderSize = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x3A));
        int sectionCount = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan(0x3C));

        bool versionPatched = false;
        long dynamicStringsOffset = 0, dynamicStringsSize = 0;
        for (int i = 0; i < sectionCount && !versionPatched; i++)
        {
            var header = elf.AsSpan((int)(sectionTableOffset + (long)i * sectionHeaderSize), sectionHeaderSize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) != SectionTypeVersionNeed) continue;
            long needOffset = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
            int stringTableIndex = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[40..]);
            int needCount = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[44..]);
            var strings = elf.AsSpan((int)(sectionTableOffset + (long)stringTableIndex * sectionHeaderSize), sectionHeaderSize);
            dynamicStringsOffset = BinaryPrimitives.ReadInt64LittleEndian(strings[24..]);
            dynamicStringsSize = BinaryPrimitives.ReadInt64LittleEndian(strings[32..]);
            versionPatched = PatchVersionNeeds(elf, needOffset, needCount, dynamicStringsOffset);
        }
        if (!versionPatched)
            throw new InvalidDataException($"{fileNameForErrors} has no version need named {MissingVersion}; it does not need this patch.");

        // The symbol name lives in .dynstr (the version needs' string table); a shorter name padded with NULs keeps
        // every other offset valid.
        var symbol = Encoding.ASCII.GetBytes("\0" + MissingSymbol + "\0");
        int found = IndexOf(elf.AsSpan((int)dynamicStringsOffset, (int)dynamicStringsSize), symbol);
        int at = (int)dynamicStringsOffset + found + 1;
        if (found < 0) throw new InvalidDataException($"{fileNameForErrors} does not reference {MissingSymbol}.");
        var replacement = Encoding.ASCII.GetBytes(ReplacementSymbol);
        elf.AsSpan(at, symbol.Length - 2).Clear();
        replacement.CopyTo(elf.AsSpan(at));
        return elf;
    }

    // Walks Elf64_Verneed entries and their Elf64_Vernaux lists; renames the GLIBCXX_3.4.32 need in place.
    private static bool PatchVersionNeeds(byte[] elf, long needOffset, int needCount, long stringsOffset)
    {
        long need = needOffset;
        for (int n = 0; n < needCount; n++)
        {
            int auxCount = BinaryPrimitives.ReadUInt16LittleEndian(elf.AsSpan((int)need + 2));
            long aux = need + BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan((int)need + 8));
            for (int a = 0; a < auxCount; a++)
            {
                long nameOffset = stringsOffset + BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan((int)aux + 8));
                if (ReadCString(elf, nameOffset) == MissingVersion)
                {
                    Encoding.ASCII.GetBytes(ReplacementVersion).CopyTo(elf.AsSpan((int)nameOffset));
                    BinaryPrimitives.WriteUInt32LittleEndian(elf.AsSpan((int)aux), ElfHash(ReplacementVersion));
                    return true;
                }
                uint nextAux = BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan((int)aux + 12));
                if (nextAux == 0) break;
                aux += nextAux;
            }
            uint next = BinaryPrimitives.ReadUInt32LittleEndian(elf.AsSpan((int)need + 12));
            if (next == 0) break;
            need += next;
        }
        return false;
    }

    /// <summary>The System V ABI's ELF hash, which vna_hash must hold for the version name.</summary>
    internal static uint ElfHash(string name)
    {
        uint h = 0;
        foreach (byte c in Encoding.ASCII.GetBytes(name))
        {
            h = (h << 4) + c;
            uint g = h & 0xf0000000;
            if (g != 0) h ^= g >> 24;
            h &= ~g;
        }
        return h;
    }

    private static string ReadCString(byte[] bytes, long offset)
    {
        int end = Array.IndexOf(bytes, (byte)0, (int)offset);
        return Encoding.ASCII.GetString(bytes, (int)offset, end - (int)offset);
    }

    private static int IndexOf(ReadOnlySpan<byte> haystack, ReadOnlySpan<byte> needle) => haystack.IndexOf(needle);
}
