/* The experiment config parser (libyaml underneath): any bytes as an experiment YAML file. */
#include "fuzz.h"
#include "resae/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_begin();
    rs_config c;
    if (rs_config_load_text(&c, "fuzz.yaml", (const char *)data, size) == RS_OK) rs_config_free(&c);
    return 0;
}
