/* The harvest journal, <run_dir>/harvest.journal (format: resae/harvest.h): which global batches
 * are durable in the store. Only rank 0 touches the file; harvest.c agrees on the outcome.
 * Private to src/store (harvest.c and journal.c). */
#ifndef RESAE_STORE_JOURNAL_H
#define RESAE_STORE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "resae/actstore.h"
#include "resae/err.h"
#include "resae/splits.h"

enum journal_status { JOURNAL_MISSING = 0, JOURNAL_OK = 1, JOURNAL_STALE = 2 };

/* The global batch list: split s owns indices [off[s], off[s] + its batch count). */
typedef struct batch_map {
    int64_t off[RS_SPLIT_COUNT + 1];
} batch_map;

/* Global batch index g -> (split, batch index within the split). */
void batch_map_local(int *split, int64_t *batch, const batch_map *m, int64_t g);

/* The journal open for appending (rank 0), with room for the records of every batch of the run. */
typedef struct journal {
    int fd;                           /* -1 when closed */
    char path[RS_ACTSTORE_PATH_MAX];
    char *buf;                        /* (cap) the records of one checkpoint */
    size_t cap;
} journal;

/* Read the journal at path into done (indexed by global batch); *status says whether it exists and
 * matches the identity hash ident, *complete whether it has the "complete" line. A torn last line
 * (a write cut by a kill) is cut off the file. */
rs_err journal_read(int *status, int *complete, unsigned char *done, const char *path, uint64_t ident,
                    const batch_map *m);
/* Start a fresh journal at path atomically (temp file, fsync, rename, fsync of dir). */
rs_err journal_reset(const char *path, const char *dir, uint64_t ident);

/* A closed journal (fd -1, no buffer): what journal_close expects of a journal never opened. */
void journal_init(journal *j);
/* Open the journal at path for appending, with room for the records of n_records batches. */
rs_err journal_open(journal *j, const char *path, int64_t n_records);
/* Append "done <split> <batch>" for the global batches todo[from, to), then fsync. */
rs_err journal_record(journal *j, const int64_t *todo, int64_t from, int64_t to, const batch_map *m);
/* Append the "complete" line, then fsync. */
rs_err journal_complete(journal *j);
/* Close and free (then j is as after journal_init). */
void journal_close(journal *j);

#endif
