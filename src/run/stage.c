/* The stages, the task context and the config mappings shared by the stages (stage.h). */
#include "resae/stage.h"

#include <stdint.h>
#include <string.h>

#include "resae/splits.h"
#include "resae/tokens.h"

const char *const rs_stage_names[RS_STAGE_COUNT] = {"harvest", "affine", "train", "evaluate"};

const char *rs_stage_name(enum rs_stage s) { return s >= 0 && s < RS_STAGE_COUNT ? rs_stage_names[s] : "?"; }

rs_err rs_stage_parse(enum rs_stage *out, const char *name) {
    for (int s = 0; s < RS_STAGE_COUNT; s++)
        if (!strcmp(name, rs_stage_names[s])) {
            *out = (enum rs_stage)s;
            return RS_OK;
        }
    RS_FAIL(RS_ERR_INVAL, "unknown stage '%s' (harvest, affine, train, evaluate)", name);
}

void rs_task_ctx_init(rs_task_ctx *c, const rs_run *run, MPI_Comm comm) {
    c->run = run;
    c->comm = comm;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
}

/* The one mapping from the config's data format to the tokens reader's (two enums one value apart:
 * the reader also has AUTO). */
static int tokens_format(enum rs_data_format f) {
    switch (f) {
    case RS_FORMAT_HDF5: return RS_TOKENS_HDF5;
    case RS_FORMAT_BIN_U16: return RS_TOKENS_BIN_U16;
    case RS_FORMAT_BIN_U32: return RS_TOKENS_BIN_U32;
    }
    return RS_TOKENS_AUTO;
}

rs_err rs_stage_tokens_open(rs_tokens *tk, const rs_run *run, int check_positions) {
    rs_tokens_opts o = {0};
    o.format = tokens_format((enum rs_data_format)run->cfg.data.format);
    o.seq_len = (int)run->cfg.data.seq_len;
    o.vocab = run->mc.vocab_size;
    RS_TRY(rs_tokens_open(tk, run->cfg.data.tokens, &o));
    RS_CHECK(!check_positions || tk->seq_len <= run->mc.max_positions, RS_ERR_CONFIG,
             "%s: sequences of %d tokens are longer than the model's max_position_embeddings %d; set data.seq_len",
             run->cfg.data.tokens, tk->seq_len, run->mc.max_positions);
    return RS_OK;
}

rs_err rs_stage_splits_build(rs_splits *sp, const rs_run *run, const rs_tokens *tk) {
    rs_split_config sc = {0};
    sc.seed = (uint64_t)run->cfg.data.split_seed;
    sc.budget[RS_SPLIT_CALIB] = run->cfg.data.calibration;
    sc.budget[RS_SPLIT_TRAIN] = run->cfg.data.train;
    sc.budget[RS_SPLIT_EVAL] = run->cfg.data.eval;
    sc.skip_pos0 = run->cfg.data.exclude_first_position;
    return rs_splits_build(sp, &sc, tk->n_seq, tk->seq_len, NULL);
}
