/* fuzz_program_cache.c — libFuzzer target for the validation of program
 * binary cache entries (src/program.c: a 64-byte header — magic
 * "MPCLBIN\x1a", version, header length, key, device hash, binary length,
 * binary checksum, header checksum — then the driver's binary), the checks
 * every entry passes before its bytes reach clCreateProgramWithBinary.
 * mpcl_cache_entry_problem (src/internal.h) makes read_entry's checks on a
 * buffer. Built by tools/fuzz.sh program_cache (ASan + UBSan); no device.
 *
 * Input: byte 0 is a set of flags, the rest an entry.
 *   bit 0: the key and device hash asked for are the entry's own (bytes
 *          16..31), so that only the format is fuzzed; else fixed ones
 *          (the committed seeds are written for them);
 *   bit 1: the two checksums are recomputed before the check, so that the
 *          fuzzer gets past them to the length and field checks.
 * Invariants: an entry that passes is a whole one: the magic, a binary of
 * 1 byte .. 1 GiB filling the rest of the file, its header what the writer
 * (mpcl_cache_header) makes for that key, device and binary (the reserved
 * field aside); and whatever the writer makes for any binary passes. */
#include "fuzz_util.h"

#include "internal.h"

#define FUZZ_KEY 0x0123456789abcdefULL
#define FUZZ_DEV 0xfedcba9876543210ULL

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const unsigned flags = data[0];
    const size_t n = size - 1;
    uint8_t *e = malloc(n ? n : 1);
    FUZZ_CHECK(e != NULL);
    memcpy(e, data + 1, n);
    uint64_t key = FUZZ_KEY, dev = FUZZ_DEV;
    if ((flags & 1) && n >= 32) {
        key = get_u64(e + 16);
        dev = get_u64(e + 24);
    }
    if ((flags & 2) && n >= 64) {
        put_u64(e + 40, mpcl_hash64(e + 64, n - 64, key));
        put_u64(e + 56, mpcl_hash64(e, 56, MPCL_HASH_SEED));
    }

    uint64_t bin_len = 0xdeadbeef;
    const char *why = mpcl_cache_entry_problem(e, n, key, dev, &bin_len);
    if (why) {
        FUZZ_CHECK(why[0] != '\0');
        FUZZ_CHECK(bin_len == 0xdeadbeef); /* untouched on a refusal */
    } else {
        FUZZ_CHECK(n > 64 && bin_len == n - 64 && bin_len <= ((uint64_t)1 << 30));
        FUZZ_CHECK(memcmp(e, "MPCLBIN\x1a", 8) == 0);
        uint8_t hdr[64];
        mpcl_cache_header(hdr, key, dev, e + 64, (size_t)bin_len);
        FUZZ_CHECK(memcmp(hdr, e, 48) == 0);
        static const uint8_t zero[8];
        if (memcmp(e + 48, zero, 8) == 0)
            FUZZ_CHECK(memcmp(hdr, e, 64) == 0);
        volatile uint8_t sum = 0;
        for (uint64_t i = 0; i < bin_len; i++)
            sum += e[64 + i];
    }
    free(e);

    /* the writer's entries pass: the whole input as a binary */
    uint8_t *w = malloc(64 + size);
    FUZZ_CHECK(w != NULL);
    mpcl_cache_header(w, key, dev, data, size);
    memcpy(w + 64, data, size);
    bin_len = 0;
    why = mpcl_cache_entry_problem(w, 64 + size, key, dev, &bin_len);
    FUZZ_CHECK(why == NULL && bin_len == size);
    /* and a binary cut short, or one byte more, does not */
    FUZZ_CHECK(mpcl_cache_entry_problem(w, 63 + size, key, dev, &bin_len) != NULL);
    FUZZ_CHECK(mpcl_cache_entry_problem(w, 64 + size, key ^ 1, dev, &bin_len) != NULL);
    FUZZ_CHECK(mpcl_cache_entry_problem(w, 64 + size, key, dev ^ 1, &bin_len) != NULL);
    free(w);
    return 0;
}
