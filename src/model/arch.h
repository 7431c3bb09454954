/* Per-architecture pieces of the runtime (internal to resae_core). */
#ifndef RESAE_SRC_ARCH_H
#define RESAE_SRC_ARCH_H

#include "resae/model.h"

/* One parameter an architecture expects in the checkpoint. */
typedef struct rs_tensor_spec {
    char name[160];
    int ndim;
    int64_t shape[2];
    const float **slot;  /* where the loaded view goes */
    const char *dims;    /* NULL, or the config.json keys the expected shape comes from (for the error) */
} rs_tensor_spec;

/* Names of tensors real checkpoints carry that are not parameters (ignored silently). */
typedef int (*rs_ignorable_fn)(const char *name);

/* GPT-NeoX (src/neox.c). specs needs room for rs_neox_n_specs(cfg) entries. */
int rs_neox_n_specs(const rs_model_config *c);
void rs_neox_specs(rs_tensor_spec *specs, rs_model *m);
int rs_neox_ignorable(const char *name);
/* Block `layer` with weights w on s->h (B, T, d) in place. */
void rs_neox_block(rs_run_state *s, const rs_model *m, int layer, const rs_layer_weights *w, int B, int T);

/* Gemma-2 (src/gemma2.c). specs needs room for rs_gemma2_n_specs(cfg) entries. */
int rs_gemma2_n_specs(const rs_model_config *c);
void rs_gemma2_specs(rs_tensor_spec *specs, rs_model *m);
int rs_gemma2_ignorable(const char *name);
void rs_gemma2_block(rs_run_state *s, const rs_model *m, int layer, const rs_layer_weights *w, int B, int T);

#endif
