/* Load a checkpoint directory in both weight modes (model.h): each must accept or refuse it alike.
 * Returns the resident load's outcome (its error is the current one); aborts when they disagree. */
#ifndef RESAE_TESTS_LOAD_MODES_H
#define RESAE_TESTS_LOAD_MODES_H

#include <stdio.h>
#include <stdlib.h>

#include "resae/model.h"

static inline rs_err load_both_modes(const char *dir) {
    rs_model m;
    rs_err e = rs_model_load(&m, dir, RS_WEIGHTS_MAPPED);
    if (!e) rs_model_free(&m);
    rs_err e2 = rs_model_load(&m, dir, RS_WEIGHTS_RESIDENT);
    if (!e2) rs_model_free(&m);
    if (!e != !e2) {
        fprintf(stderr, "%s: mapped load %s, resident load %s\n", dir, e ? "failed" : "succeeded",
                e2 ? "failed" : "succeeded");
        abort();
    }
    return e2;
}

#endif
