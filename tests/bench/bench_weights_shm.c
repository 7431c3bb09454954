/* One copy of a BF16 checkpoint per node, two ways, measured side by side (weights_shm.sh):
 *   mapped  every rank maps the file read-only; the page cache holds the one copy (resae's way)
 *   window  an MPI-3 shared-memory window (MPI_Win_allocate_shared on the node's communicator):
 *           node rank 0 reads the file into it, every rank reads the window
 * Each rank then widens the whole file to fp32, 64 MB at a time, PASSES times (what a forward pass
 * does block by block). Printed by rank 0: the time until every rank can read the weights, the
 * widening rate per rank, each rank's Rss and Pss (/proc/self/smaps_rollup) and the node's sum of
 * Pss, and the growth of the node's memory (Cached in /proc/meminfo: the page cache and, Shmem, the
 * shared memory a window lives in).
 *   mpirun -n R bench_weights_shm FILE mapped|window [PASSES] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static double kb_of(const char *file, const char *key) {
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char line[256];
    double v = 0;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') v = strtod(line + n + 1, NULL);
    fclose(f);
    return v * 1024.0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (argc < 3 || (strcmp(argv[2], "mapped") && strcmp(argv[2], "window"))) {
        if (!rank) fprintf(stderr, "usage: bench_weights_shm FILE mapped|window [PASSES]\n");
        MPI_Finalize();
        return 2;
    }
    const char *path = argv[1];
    int window = !strcmp(argv[2], "window"), passes = argc > 3 ? atoi(argv[3]) : 2;
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int nrank;
    MPI_Comm_rank(node, &nrank);
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        fprintf(stderr, "cannot open %s\n", path);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    size_t bytes = (size_t)st.st_size;
    double cached0 = kb_of("/proc/meminfo", "Cached"), shmem0 = kb_of("/proc/meminfo", "Shmem");
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    const unsigned char *data = NULL;
    MPI_Win win = MPI_WIN_NULL;
    if (window) {
        unsigned char *base = NULL;
        MPI_Win_allocate_shared(nrank == 0 ? (MPI_Aint)bytes : 0, 1, MPI_INFO_NULL, node, &base, &win);
        MPI_Aint wsize;
        int disp;
        MPI_Win_shared_query(win, 0, &wsize, &disp, &base);
        if (nrank == 0)
            for (size_t off = 0; off < bytes;) {
                ssize_t r = pread(fd, base + off, bytes - off > (1u << 26) ? (1u << 26) : bytes - off, (off_t)off);
                if (r <= 0) MPI_Abort(MPI_COMM_WORLD, 1);
                off += (size_t)r;
            }
        MPI_Barrier(node);
        data = base;
    } else {
        data = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
        if (data == MAP_FAILED) MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double ready = MPI_Wtime() - t0;
    const size_t blk = (size_t)1 << 25; /* bf16 values per block: 64 MB read, 128 MB of fp32 */
    float *scratch = malloc(blk * sizeof(float));
    double sum = 0;
    double t1 = MPI_Wtime();
    for (int p = 0; p < passes; p++)
        for (size_t off = 0; off + 2 <= bytes; off += 2 * blk) {
            size_t n = (bytes - off) / 2 < blk ? (bytes - off) / 2 : blk;
            const uint16_t *src = (const uint16_t *)(data + off);
            for (size_t i = 0; i < n; i++) {
                uint32_t u = (uint32_t)src[i] << 16;
                memcpy(&scratch[i], &u, 4);
            }
            sum += scratch[n / 2];
        }
    double widen = MPI_Wtime() - t1;
    MPI_Barrier(MPI_COMM_WORLD); /* every rank still maps the weights while each one measures */
    double rss = kb_of("/proc/self/smaps_rollup", "Rss"), pss = kb_of("/proc/self/smaps_rollup", "Pss");
    double mine[3] = {rss, pss, widen}, all[3 * 256];
    MPI_Gather(mine, 3, MPI_DOUBLE, all, 3, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    double cached1 = kb_of("/proc/meminfo", "Cached"), shmem1 = kb_of("/proc/meminfo", "Shmem");
    if (!rank) {
        double node_pss = 0, wmax = 0;
        for (int r = 0; r < size && r < 256; r++) {
            node_pss += all[3 * r + 1];
            if (all[3 * r + 2] > wmax) wmax = all[3 * r + 2];
            printf("%s rank %d: Rss %.2f GB, Pss %.2f GB\n", argv[2], r, 1e-9 * all[3 * r], 1e-9 * all[3 * r + 1]);
        }
        printf("%s: %.2f GB file, %d ranks; ready in %.2f s; widening %.2f GB/s per rank (%d passes); node Pss "
               "%.2f GB; node memory grew %.2f GB: page cache %.2f GB + shared memory %.2f GB (checksum %g)\n",
               argv[2], 1e-9 * (double)bytes, size, ready, 1e-9 * (double)bytes * passes / wmax, passes,
               1e-9 * node_pss, 1e-9 * (cached1 - cached0), 1e-9 * (cached1 - cached0 - (shmem1 - shmem0)),
               1e-9 * (shmem1 - shmem0), sum);
    }
    free(scratch);
    if (window) MPI_Win_free(&win);
    else munmap((void *)data, bytes);
    close(fd);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return 0;
}
