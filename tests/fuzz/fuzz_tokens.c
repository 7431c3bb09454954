/* Raw token files (bin_u16, bin_u32): the first input byte picks the format and the sequence length,
 * the second the vocabulary; the rest is the file, read sequence by sequence with the id check. */
#include <stdlib.h>

#include "fuzz.h"
#include "resae/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    if (size < 2) return 0;
    rs_tokens_opts o = {.format = data[0] & 1 ? RS_TOKENS_BIN_U32 : RS_TOKENS_BIN_U16,
                        .seq_len = (data[0] >> 1) - 8, /* -8..119: zero and negative lengths too */
                        .vocab = data[1] * 4};         /* 0 (unchecked) .. 1020 */
    if (fuzz_write("tokens.bin", data + 2, size - 2)) return 0;
    char path[512];
    fuzz_path(path, sizeof path, "tokens.bin");
    rs_tokens tk;
    if (rs_tokens_open(&tk, path, &o)) return 0;
    int32_t *seq = tk.seq_len > 0 ? malloc(sizeof(int32_t) * (size_t)tk.seq_len) : NULL;
    for (int64_t s = 0; seq && s < tk.n_seq && s < 4096; s++)
        if (rs_tokens_read(seq, &tk, s, 1)) break;
    free(seq);
    rs_tokens_close(&tk);
    return 0;
}
