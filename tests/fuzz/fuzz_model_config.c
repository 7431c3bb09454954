/* A checkpoint directory's config.json (cJSON underneath): GPT-NeoX and Gemma-2 fields. */
#include "fuzz.h"
#include "resae/model_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    if (fuzz_write("config.json", data, size)) return 0;
    rs_model_config mc;
    (void)rs_model_config_load(&mc, fuzz_dir());
    return 0;
}
