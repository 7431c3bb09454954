/* Sustained rates of the pipeline's stages, for the cost model `resae validate` prints: GFLOP/s
 * per core of each stage's estimated FLOPs (rs_grid_estimate_cost), as tests/bench/rehearsal.py
 * measures them and writes them (`--rates-out FILE`), a YAML mapping
 *     harvest: 51.2
 *     affine: 40.0
 *     train: 90.1
 *     evaluate: 48.3
 * (docs/scaling.md). */
#ifndef RESAE_RATES_H
#define RESAE_RATES_H

#include "resae/err.h"

typedef struct rs_rates {
    double harvest, affine, train, evaluate; /* GFLOP/s per core */
} rs_rates;

/* The rates measured by the full-shape rehearsal on the reference machine (docs/scaling.md). */
void rs_rates_default(rs_rates *r);
/* Read a rates file: every key of the four is optional (the default stays), unknown keys and
 * values that are not positive numbers are errors naming the file, line and key. */
rs_err rs_rates_load(rs_rates *r, const char *path);

#endif
