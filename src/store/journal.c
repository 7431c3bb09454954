/* The harvest journal: read (with torn-record repair), reset, append records (rank 0 only). */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resae/log.h"
#include "resae/util.h"

#define JOURNAL_MAGIC "resae-harvest-journal"
#define JOURNAL_VERSION 1
/* bytes of one "done <split> <batch>\n" record at most: split names are short, 19 digits */
#define JOURNAL_RECORD_MAX 48

void batch_map_local(int *split, int64_t *batch, const batch_map *m, int64_t g) {
    int s = 0;
    while (s + 1 < RS_SPLIT_COUNT && g >= m->off[s + 1]) s++;
    *split = s;
    *batch = g - m->off[s];
}

static rs_err fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    int e = fsync(fd);
    close(fd);
    if (e) RS_FAIL(RS_ERR_IO, "%s: fsync failed: %s", dir, strerror(errno));
    return RS_OK;
}

/* ------------------------------------------------------------------------------------------------
 * reading and starting over
 * ---------------------------------------------------------------------------------------------- */

rs_err journal_read(int *status, int *complete, unsigned char *done, const char *path, uint64_t ident,
                    const batch_map *m) {
    *status = JOURNAL_MISSING;
    *complete = 0;
    struct stat sb;
    if (stat(path, &sb)) {
        if (errno == ENOENT) return RS_OK;
        RS_FAIL(RS_ERR_IO, "%s: %s", path, strerror(errno));
    }
    char *text = NULL;
    size_t len = 0;
    RS_TRY(rs_read_file(&text, &len, path, (size_t)1 << 32));
    size_t keep = len;
    while (keep > 0 && text[keep - 1] != '\n') keep--;
    if (keep != len) {
        RS_WARN("%s: dropping a torn last record (%zu bytes)", path, len - keep);
        if (truncate(path, (off_t)keep)) {
            free(text);
            RS_FAIL(RS_ERR_IO, "%s: cannot truncate a torn record: %s", path, strerror(errno));
        }
        text[keep] = '\0';
    }
    char *save = NULL;
    char *line = strtok_r(text, "\n", &save);
    char magic[64];
    int version = 0;
    unsigned long long h = 0;
    if (!line || sscanf(line, "%63s %d %16llx", magic, &version, &h) != 3 || strcmp(magic, JOURNAL_MAGIC) ||
        version != JOURNAL_VERSION || (uint64_t)h != ident) {
        free(text);
        *status = JOURNAL_STALE;
        return RS_OK;
    }
    int lineno = 1;
    while ((line = strtok_r(NULL, "\n", &save))) {
        lineno++;
        char sname[16];
        long long b = -1;
        if (!strcmp(line, "complete")) {
            *complete = 1;
            continue;
        }
        int s = -1;
        if (sscanf(line, "done %15s %lld", sname, &b) == 2) s = rs_split_from_name(sname);
        if (s < 0 || b < 0 || b >= m->off[s + 1] - m->off[s]) {
            free(text);
            RS_FAIL(RS_ERR_FORMAT,
                    "%s: line %d ('%s') is not a valid record: the journal is damaged. Delete the run directory "
                    "(or use a new run_dir) to harvest again",
                    path, lineno, line);
        }
        done[m->off[s] + b] = 1;
    }
    free(text);
    *status = JOURNAL_OK;
    return RS_OK;
}

rs_err journal_reset(const char *path, const char *dir, uint64_t ident) {
    char tmp[RS_ACTSTORE_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) RS_FAIL(RS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    char head[128];
    int n = snprintf(head, sizeof head, "%s %d %016" PRIx64 "\n", JOURNAL_MAGIC, JOURNAL_VERSION, ident);
    int bad = write(fd, head, (size_t)n) != n || fsync(fd);
    close(fd);
    if (bad || rename(tmp, path)) RS_FAIL(RS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    RS_TRY(fsync_dir(dir));
    return RS_OK;
}

/* ------------------------------------------------------------------------------------------------
 * appending
 * ---------------------------------------------------------------------------------------------- */

void journal_init(journal *j) {
    memset(j, 0, sizeof *j);
    j->fd = -1;
}

rs_err journal_open(journal *j, const char *path, int64_t n_records) {
    journal_init(j);
    snprintf(j->path, sizeof j->path, "%s", path);
    j->fd = open(path, O_WRONLY | O_APPEND);
    if (j->fd < 0) RS_FAIL(RS_ERR_IO, "%s: %s", path, strerror(errno));
    j->cap = (size_t)n_records * JOURNAL_RECORD_MAX + 16;
    j->buf = malloc(j->cap);
    if (!j->buf) {
        journal_close(j);
        RS_FAIL(RS_ERR_NOMEM, "harvest: out of memory for the journal buffer");
    }
    return RS_OK;
}

static rs_err journal_append(journal *j, const char *text, size_t n) {
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(j->fd, text + off, n - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) RS_FAIL(RS_ERR_IO, "%s: append failed: %s", j->path, strerror(errno));
        off += (size_t)w;
    }
    if (fsync(j->fd)) RS_FAIL(RS_ERR_IO, "%s: fsync failed: %s", j->path, strerror(errno));
    return RS_OK;
}

rs_err journal_record(journal *j, const int64_t *todo, int64_t from, int64_t to, const batch_map *m) {
    size_t used = 0;
    for (int64_t k = from; k < to; k++) {
        int s;
        int64_t b;
        batch_map_local(&s, &b, m, todo[k]);
        int w = snprintf(j->buf + used, j->cap - used, "done %s %lld\n", rs_split_name(s), (long long)b);
        RS_CHECK(w > 0 && (size_t)w < j->cap - used, RS_ERR_INTERNAL, "%s: journal buffer of %zu bytes too small",
                 j->path, j->cap);
        used += (size_t)w;
    }
    RS_TRY(journal_append(j, j->buf, used));
    return RS_OK;
}

rs_err journal_complete(journal *j) {
    RS_TRY(journal_append(j, "complete\n", 9));
    return RS_OK;
}

void journal_close(journal *j) {
    if (j->fd >= 0) close(j->fd);
    free(j->buf);
    journal_init(j);
}
