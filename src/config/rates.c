/* Stage rates for the cost model (rates.h), read with libyaml. */
#include "resae/rates.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

void rs_rates_default(rs_rates *r) {
    /* tests/bench/rehearsal.py --arch neox (the Pythia-1.4B shape, 2 ranks of 1 thread) on a 2-core AMD
     * EPYC running OpenBLAS's Haswell kernels; train from the trainer at the grid's batch of 4096
     * tokens (docs/scaling.md) */
    r->harvest = 64.2;
    r->affine = 14.6;
    r->train = 90.8;
    r->evaluate = 83.5;
}

rs_err rs_rates_load(rs_rates *r, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) RS_FAIL(RS_ERR_IO, "%s: cannot open the rates file: %s", path, strerror(errno));
    yaml_parser_t yp;
    yaml_document_t doc;
    yaml_parser_initialize(&yp);
    yaml_parser_set_input_file(&yp, f);
    rs_err err = RS_OK;
    if (!yaml_parser_load(&yp, &doc)) {
        err = RS_ERR(RS_ERR_CONFIG, "%s:%zu:%zu: not valid YAML: %s", path, yp.problem_mark.line + 1,
                     yp.problem_mark.column + 1, yp.problem ? yp.problem : "?");
        yaml_parser_delete(&yp);
        fclose(f);
        return err;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type != YAML_MAPPING_NODE)
        err = RS_ERR(RS_ERR_CONFIG, "%s:%zu: the rates file is a mapping of stage: GFLOP/s per core (harvest, "
                     "affine, train, evaluate)", path, root->start_mark.line + 1);
    for (yaml_node_pair_t *q = root && !err ? root->data.mapping.pairs.start : NULL; q && q < root->data.mapping.pairs.top && !err; q++) {
        yaml_node_t *k = yaml_document_get_node(&doc, q->key), *v = yaml_document_get_node(&doc, q->value);
        const char *key = k && k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "?";
        double *dst = !strcmp(key, "harvest") ? &r->harvest : !strcmp(key, "affine") ? &r->affine
                    : !strcmp(key, "train") ? &r->train : !strcmp(key, "evaluate") ? &r->evaluate : NULL;
        if (!dst) {
            err = RS_ERR(RS_ERR_CONFIG, "%s:%zu: unknown key '%s'; the keys are harvest, affine, train, evaluate", path,
                         k ? k->start_mark.line + 1 : 0, key);
            break;
        }
        char *end = NULL;
        double x = v && v->type == YAML_SCALAR_NODE ? strtod((const char *)v->data.scalar.value, &end) : NAN;
        if (!end || *end || !(x > 0) || !isfinite(x)) {
            err = RS_ERR(RS_ERR_CONFIG, "%s:%zu: %s: expected a positive number of GFLOP/s per core", path,
                         v ? v->start_mark.line + 1 : 0, key);
            break;
        }
        *dst = x;
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&yp);
    fclose(f);
    return err;
}
