/*
 * smkernel benchmark: each figure as a ratio against a baseline measured in the same run, as
 * medians (machines here are noisy). `meson test --benchmark` runs it; or run it directly:
 *   bench [ROUNDS] [LIBRARY_FILE]
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <smkernel.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The floor: the same bytes, already in memory, through the same temp + fsync + rename path. */
static int write_floor(const char *dir, const char *name, const void *data, size_t len, int mode)
{
    char tmp[4200], dst[4200];
    snprintf(tmp, sizeof tmp, "%s/.floor-%s", dir, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, (const char *)data + off, len - off);
        if (n <= 0) {
            close(fd);
            return -EIO;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, (mode_t)mode) || fsync(fd) || close(fd) || rename(tmp, dst))
        return -errno;
    return 0;
}

static long max_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Peak RSS growth of a fresh process extracting one asset (a child, so earlier work in this
 * process does not hide it). */
static long rss_growth(const struct smk_asset *a, const char *dir)
{
    int p[2];
    if (pipe(p))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        char path[4200];
        snprintf(path, sizeof path, "%s/rss-%s", dir, a->file_name);
        long before = max_rss_kib();
        long growth = smk_extract(a->id, path, 0) == 0 ? max_rss_kib() - before : -1;
        if (write(p[1], &growth, sizeof growth) != (ssize_t)sizeof growth)
            _exit(1);
        _exit(0);
    }
    close(p[1]);
    long growth = -1;
    if (read(p[0], &growth, sizeof growth) != (ssize_t)sizeof growth)
        growth = -1;
    close(p[0]);
    waitpid(pid, NULL, 0);
    return growth;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 11;
    const char *libfile = argc > 2 ? argv[2] : NULL;
    if (rounds < 1)
        rounds = 1;
    char dir[] = "/tmp/smk-bench-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    void **raw = calloc(n, sizeof *raw);
    uint64_t raw_total = 0, blob_total = 0;
    size_t li = 0;
    for (size_t i = 0; i < n; i++) {
        raw[i] = malloc(list[i]->size);
        if (!raw[i] || smk_decompress(list[i]->id, raw[i], list[i]->size) != 0)
            return 1;
        raw_total += list[i]->size;
        blob_total += list[i]->blob_size;
        if (list[i]->size > list[li]->size)
            li = i;
    }
    const struct smk_asset *largest = list[li];
    printf("smkernel %s bench (%s): %zu assets, %llu raw bytes, %llu embedded, %d rounds, "
           "medians\n",
           smk_version(), smk_arch(), n, (unsigned long long)raw_total,
           (unsigned long long)blob_total, rounds);

    double *ex = calloc((size_t)rounds, sizeof *ex), *fl = calloc((size_t)rounds, sizeof *fl);
    for (int r = 0; r < rounds; r++) {
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/%s", dir, list[i]->file_name);
            if (smk_extract(list[i]->id, path, 0) != 0)
                return 1;
        }
        double t1 = now();
        for (size_t i = 0; i < n; i++)
            if (write_floor(dir, list[i]->file_name, raw[i], list[i]->size, (int)list[i]->mode))
                return 1;
        double t2 = now();
        ex[r] = t1 - t0;
        fl[r] = t2 - t1;
    }
    double mex = median(ex, rounds), mfl = median(fl, rounds);
    printf("extract all assets to files:     %8.2f ms   floor (memory->temp+fsync+rename) "
           "%8.2f ms   ratio %.2fx\n",
           mex * 1e3, mfl * 1e3, mex / mfl);

    void *buf = malloc(largest->size), *buf2 = malloc(largest->size);
    for (int r = 0; r < rounds; r++) {
        double t0 = now();
        smk_decompress(largest->id, buf, largest->size);
        double t1 = now();
        memcpy(buf2, raw[li], largest->size);
        double t2 = now();
        ex[r] = t1 - t0;
        fl[r] = t2 - t1;
    }
    mex = median(ex, rounds);
    mfl = median(fl, rounds);
    printf("decompress %-20s %8.2f ms   memcpy %8.3f ms   ratio %.1fx   %.0f MB/s\n",
           largest->file_name, mex * 1e3, mfl * 1e3, mex / mfl, (double)largest->size / mex / 1e6);

    char cache[4200], p[4200];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    setenv("SMKERNEL_CACHE_DIR", cache, 1);
    double t0 = now();
    if (smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p) != 0)
        return 1;
    double cold = now() - t0;
    enum { CALLS = 2000 };
    for (int r = 0; r < rounds; r++) {
        double a = now();
        for (int i = 0; i < CALLS; i++)
            smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
        double b = now();
        struct stat st;
        for (int i = 0; i < CALLS; i++)
            stat(p, &st);
        double c = now();
        ex[r] = (b - a) / CALLS;
        fl[r] = (c - b) / CALLS;
    }
    mex = median(ex, rounds);
    mfl = median(fl, rounds);
    printf("smk_asset_path warm, per call:   %8.2f us   stat() %8.2f us   ratio %.1fx   (cold "
           "first call %.1f ms)\n",
           mex * 1e6, mfl * 1e6, mex / mfl, cold * 1e3);

    printf("peak RSS growth extracting %s (%llu B): %ld KiB\n", largest->file_name,
           (unsigned long long)largest->size, rss_growth(largest, dir));
    if (libfile) {
        struct stat st;
        if (stat(libfile, &st) == 0)
            printf("library file %s: %lld B = embedded blobs + %lld B; %.1f%% of the raw assets\n",
                   libfile, (long long)st.st_size, (long long)st.st_size - (long long)blob_total,
                   100.0 * (double)st.st_size / (double)raw_total);
    }
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
