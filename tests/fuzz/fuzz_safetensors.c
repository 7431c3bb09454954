/* A safetensors file: the header's JSON, dtypes, shapes and offsets, then every tensor converted to
 * fp32 where the dtype allows (reading every byte the parser let through). */
#include <stdlib.h>

#include "fuzz.h"
#include "resae/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    if (fuzz_write("model.safetensors", data, size)) return 0;
    char path[512];
    fuzz_path(path, sizeof path, "model.safetensors");
    rs_safetensors st;
    if (rs_safetensors_open_file(&st, path)) return 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const rs_st_tensor *t = &st.tensors[i];
        if (t->numel > (1 << 20)) continue;
        float *out = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
        if (!out) continue;
        (void)rs_st_tensor_to_f32(out, &st, t);
        rs_err_clear();
        free(out);
    }
    rs_safetensors_free(&st);
    return 0;
}
