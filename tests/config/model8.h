/* The 8-layer GPT-NeoX shape of the demo model (configs/demo/model), as the config and grid tests
 * check configs against it without reading a checkpoint. */
#ifndef RESAE_TESTS_CONFIG_MODEL8_H
#define RESAE_TESTS_CONFIG_MODEL8_H

#include <stdio.h>
#include <string.h>

#include "resae/model_config.h"

static inline rs_model_config model8(void) {
    rs_model_config m;
    memset(&m, 0, sizeof m);
    m.arch = RS_ARCH_GPT_NEOX;
    snprintf(m.arch_name, sizeof m.arch_name, "GPTNeoXForCausalLM");
    m.n_layers = 8, m.d_model = 128, m.n_heads = 4, m.head_dim = 32, m.d_ff = 512, m.vocab_size = 256;
    m.max_positions = 256, m.rotary_pct = 0.25, m.rotary_base = 10000, m.layer_norm_eps = 1e-5;
    m.parallel_residual = 1;
    snprintf(m.hidden_act, sizeof m.hidden_act, "gelu");
    return m;
}

#endif
