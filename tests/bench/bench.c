/*
 * smkernel benchmark: every figure of docs/BENCHMARKS.md (except guest boot time and the build
 * time, which tests/bench/build-time.py measures) as a ratio against a baseline measured in the
 * same run, as medians (machines here are noisy). `meson test -C build --benchmark` runs it; or
 * directly:
 *
 *   bench [ROUNDS [STRIPPED_LIBRARY [SYNTHETIC_BLOB]]]
 *
 * STRIPPED_LIBRARY: the stripped libsmkernel the bench is linked with (its size is compared with
 * the embedded blobs and the raw assets). SYNTHETIC_BLOB: the largest asset 4x concatenated and
 * compressed exactly as assets/pack does (tests/bench/make-4x.py); its decoder memory is compared
 * with the real asset's. docs/BENCHMARKS.md explains each row.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include <smkernel.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: what the decoding itself costs, which other load on a shared machine
 * inflates far less than the wall time. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
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

static void die(const char *what, int err)
{
    fprintf(stderr, "bench: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

/*
 * The baseline of an extraction: the same bytes, already in memory, through the same path the
 * library takes (atomic.c): an O_TMPFILE in the target's directory, write, fchmod, fsync, then
 * linkat() to the target's name (a new target), or to a temporary name and rename() over it.
 */
static int write_floor(const char *dir, const char *name, const void *data, size_t len, int mode)
{
    char dst[4200], tmp[4200], proc[64];
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.floor-%s", dir, name);
    int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
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
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int r = 0;
    if (fchmod(fd, (mode_t)mode) || fsync(fd))
        r = -errno;
    else if (linkat(AT_FDCWD, proc, AT_FDCWD, dst, AT_SYMLINK_FOLLOW) != 0 &&
             (errno != EEXIST || linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) ||
              rename(tmp, dst)))
        r = -errno;
    close(fd);
    return r;
}

static size_t n_assets;
static const struct smk_asset *const *assets;
static void **raw;
static char dir[64] = "/tmp/smk-bench-XXXXXX";

struct job {
    size_t i;
    int floor;
    int ret;
};

static void *run_job(void *p)
{
    struct job *j = p;
    const struct smk_asset *a = assets[j->i];
    char path[4200];
    snprintf(path, sizeof path, "%s/%s%s", dir, j->floor ? "f-" : "x-", a->file_name);
    if (j->floor) {
        char name[300];
        snprintf(name, sizeof name, "f-%s", a->file_name);
        j->ret = write_floor(dir, name, raw[j->i], a->size, (int)a->mode);
    } else {
        j->ret = smk_extract(a->id, path, 0);
    }
    return NULL;
}

/* Every asset to a file that does not exist yet (a first, "cold" extraction; the targets of
 * the previous round are removed first), one after the other or each in its own thread. */
static double all_assets(int floor, int parallel)
{
    for (size_t i = 0; i < n_assets; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s%s", dir, floor ? "f-" : "x-", assets[i]->file_name);
        unlink(path);
    }
    sync(); /* the unlinks and the previous round's data are not this round's work */
    struct job jobs[16];
    pthread_t th[16];
    double t0 = now();
    for (size_t i = 0; i < n_assets; i++) {
        jobs[i] = (struct job){i, floor, 0};
        if (parallel) {
            if (pthread_create(&th[i], NULL, run_job, &jobs[i]) != 0)
                die("pthread_create", EAGAIN);
        } else {
            run_job(&jobs[i]);
        }
    }
    if (parallel)
        for (size_t i = 0; i < n_assets; i++)
            pthread_join(th[i], NULL);
    double t = now() - t0;
    for (size_t i = 0; i < n_assets; i++)
        if (jobs[i].ret != 0)
            die(floor ? "floor write" : "smk_extract", jobs[i].ret);
    return t;
}

static long status_kib(const char *key)
{
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = atol(line + kl + 1);
    fclose(f);
    return v;
}

static void touch(const unsigned char *p, size_t n)
{
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < n; i += 512)
        sum += p[i];
    (void)sum;
}

/* Decode a zstd blob the way smk__decode does (zstd filter + raw format, data blocks). */
static int libarchive_decode(const void *blob, size_t len)
{
    struct archive *ar = archive_read_new();
    struct archive_entry *e;
    int r = -1;
    if (archive_read_support_filter_zstd(ar) == ARCHIVE_OK &&
        archive_read_support_format_raw(ar) == ARCHIVE_OK &&
        archive_read_open_memory(ar, blob, len) == ARCHIVE_OK &&
        archive_read_next_header(ar, &e) == ARCHIVE_OK) {
        for (;;) {
            const void *chunk;
            size_t n;
            la_int64_t off;
            r = archive_read_data_block(ar, &chunk, &n, &off);
            if (r != ARCHIVE_OK)
                break;
        }
        r = r == ARCHIVE_EOF ? 0 : -1;
    }
    archive_read_free(ar);
    return r;
}

/*
 * Child mode (a fresh process, so nothing earlier in the bench hides the peak):
 *   --rss extract ID touched|cold   smk_extract of asset ID; "touched": the blob's pages are
 *                                   resident before (the growth is the decoder's working memory);
 *                                   "cold": their first touch counts too (file-backed pages)
 *   --rss decode ID|FILE            libarchive_decode of the embedded blob or of a blob file
 * Prints the growth of the peak RSS (VmHWM, reset by /proc/self/clear_refs) over VmRSS before.
 */
static int rss_child(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    const char *mode = argv[2], *what = argv[3];
    const void *blob = NULL;
    size_t blob_len = 0;
    const struct smk_asset *a = NULL;
    if (strcmp(mode, "decode") == 0 && !(what[0] >= '0' && what[0] <= '9')) {
        FILE *f = fopen(what, "rb");
        if (!f)
            return 2;
        fseek(f, 0, SEEK_END);
        blob_len = (size_t)ftell(f);
        fseek(f, 0, SEEK_SET);
        void *m = malloc(blob_len);
        if (!m || fread(m, 1, blob_len, f) != blob_len) {
            fclose(f);
            return 2;
        }
        fclose(f);
        blob = m;
    } else {
        a = smk_asset_get((enum smk_asset_id)atoi(what));
        if (!a)
            return 2;
        blob = a->blob;
        blob_len = a->blob_size;
    }
    if (!(argc > 4 && strcmp(argv[4], "cold") == 0))
        touch(blob, blob_len);
    char path[4200];
    snprintf(path, sizeof path, "%s/rss-%s", argc > 5 ? argv[5] : "/tmp", a ? a->file_name : "x");
    /* Warm up what any call needs once (libarchive's and libc's lazy setup) with a tiny asset. */
    size_t n;
    const struct smk_asset *const *l = smk_assets(&n);
    const struct smk_asset *small = l[0];
    for (size_t i = 1; i < n; i++)
        if (l[i]->size < small->size)
            small = l[i];
    char warm[4300];
    snprintf(warm, sizeof warm, "%s.warm", path);
    if (smk_extract(small->id, warm, 0) != 0)
        return 2;
    unlink(warm);
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd < 0 || write(fd, "5", 1) != 1)
        return 3;
    close(fd);
    long before = status_kib("VmRSS");
    int r = strcmp(mode, "decode") == 0 ? libarchive_decode(blob, blob_len)
                                        : smk_extract(a->id, path, 0);
    long peak = status_kib("VmHWM");
    unlink(path);
    if (r != 0)
        return 4;
    printf("%ld\n", peak - before);
    return 0;
}

static char self[4096];

static long rss_run(const char *mode, const char *what, const char *touch_mode)
{
    /* Cross builds run the bench under an emulator (the cross file's wrapper, e.g. qemu-aarch64);
     * the child needs it too. The emulator's own memory is then part of both figures. */
    const char *wrap = getenv("SMK_BENCH_WRAPPER");
    char cmd[8600];
    snprintf(cmd, sizeof cmd, "%s '%s' --rss %s '%s' %s '%s'", wrap ? wrap : "", self, mode, what,
             touch_mode, dir);
    FILE *p = popen(cmd, "r");
    long v = -1;
    if (!p || fscanf(p, "%ld", &v) != 1)
        v = -1;
    if (p && pclose(p) != 0)
        v = -1;
    return v;
}

static long rss_median(const char *mode, const char *what, const char *touch_mode, int rounds)
{
    double v[64];
    int n = rounds < 64 ? rounds : 64;
    if (n < 1)
        return -1;
    for (int i = 0; i < n; i++) {
        long x = rss_run(mode, what, touch_mode);
        if (x < 0)
            return -1;
        v[i] = (double)x;
    }
    return (long)median(v, n);
}

/* The machine's load average, printed with the figures: a loaded machine slows the decoding
 * (CPU) far more than the baselines (mostly I/O), so the ratios say more on a quiet one. */
static void print_load(const char *when)
{
    char buf[128] = "?";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            strcpy(buf, "?\n");
        fclose(f);
    }
    printf("load average %s: %s", when, buf);
}

static const char *verdict(int ok)
{
    return ok ? "met" : "NOT met";
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--rss") == 0)
        return rss_child(argc, argv);
    int rounds = argc > 1 ? atoi(argv[1]) : 11;
    const char *libfile = argc > 2 ? argv[2] : NULL;
    const char *synth = argc > 3 && argv[3][0] ? argv[3] : NULL;
    if (rounds < 1)
        rounds = 1;
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        die("readlink /proc/self/exe", errno);
    self[sl] = '\0';
    if (!mkdtemp(dir))
        die("mkdtemp", errno);
    assets = smk_assets(&n_assets);
    if (n_assets > 16)
        return 1;
    raw = calloc(n_assets, sizeof *raw);
    uint64_t raw_total = 0, blob_total = 0;
    size_t li = 0;
    for (size_t i = 0; i < n_assets; i++) {
        raw[i] = malloc(assets[i]->size);
        if (!raw[i])
            die("malloc", ENOMEM);
        int r = smk_decompress(assets[i]->id, raw[i], assets[i]->size);
        if (r != 0)
            die("smk_decompress", r);
        raw_total += assets[i]->size;
        blob_total += assets[i]->blob_size;
        if (assets[i]->size > assets[li]->size)
            li = i;
    }
    const struct smk_asset *largest = assets[li];
    unsigned long long synth_size = 4 * largest->size;
    printf("smkernel %s bench (%s): %zu assets, %llu raw bytes, %llu embedded; %d rounds, "
           "medians; temp dir %s\n\n",
           smk_version(), smk_arch(), n_assets, (unsigned long long)raw_total,
           (unsigned long long)blob_total, rounds, dir);
    print_load("at start");
    printf("%-52s %14s %14s %9s  %s\n", "figure", "smkernel", "baseline", "ratio", "goal");

    /* 1. Every asset to files, first extraction, against the same bytes from memory. The two
     * alternate which goes first in each round, so neither always follows the other's writes. */
    double *ex = calloc((size_t)rounds, sizeof *ex), *fl = calloc((size_t)rounds, sizeof *fl);
    for (int par = 0; par <= 1; par++) {
        for (int r = 0; r < rounds; r++) {
            if (r % 2) {
                fl[r] = all_assets(1, par);
                ex[r] = all_assets(0, par);
            } else {
                ex[r] = all_assets(0, par);
                fl[r] = all_assets(1, par);
            }
        }
        double lex = ex[0], lfl = fl[0];
        for (int r = 1; r < rounds; r++) {
            lex = ex[r] < lex ? ex[r] : lex;
            lfl = fl[r] < lfl ? fl[r] : lfl;
        }
        double mex = median(ex, rounds), mfl = median(fl, rounds);
        printf("%-52s %11.2f ms %11.2f ms %8.2fx  %s\n",
               par ? "extract every asset, one thread each" : "extract every asset, one by one",
               mex * 1e3, mfl * 1e3, mex / mfl,
               par ? "(same goal, for callers that extract concurrently)"
                   : (mex / mfl <= 1.5 ? "<= 1.5x: met" : "<= 1.5x: NOT met"));
        printf("%-52s %11.2f ms %11.2f ms %8.2fx  (minimum of the rounds: less load in it)\n",
               "  the same, minimum", lex * 1e3, lfl * 1e3, lex / lfl);
    }

    /* 2. Decompress into a caller's buffer, against memcpy of the same bytes. Both buffers are
     * written once first, so page faults are in neither. */
    void *buf = malloc(largest->size), *buf2 = malloc(largest->size);
    memset(buf, 0, largest->size);
    memset(buf2, 0, largest->size);
    double *cex = calloc((size_t)rounds, sizeof *cex), *cfl = calloc((size_t)rounds, sizeof *cfl);
    for (int r = 0; r < rounds; r++) {
        double t0 = now(), c0 = cpu_now();
        int rr = smk_decompress(largest->id, buf, largest->size);
        double t1 = now(), c1 = cpu_now();
        memcpy(buf2, raw[li], largest->size);
        double t2 = now(), c2 = cpu_now();
        if (rr != 0)
            die("smk_decompress", rr);
        ex[r] = t1 - t0;
        fl[r] = t2 - t1;
        cex[r] = c1 - c0;
        cfl[r] = c2 - c1;
    }
    double mex = median(ex, rounds), mfl = median(fl, rounds);
    double mcex = median(cex, rounds), mcfl = median(cfl, rounds);
    char label[128];
    snprintf(label, sizeof label, "decompress %s into a buffer (vs memcpy)", largest->file_name);
    printf("%-52s %11.2f ms %11.3f ms %8.1fx  report: %.0f MB/s decompressed\n", label, mex * 1e3,
           mfl * 1e3, mex / mfl, (double)largest->size / mex / 1e6);
    printf("%-52s %11.2f ms %11.3f ms %8.1fx  report: %.0f MB/s decompressed\n",
           "  the same, thread CPU time", mcex * 1e3, mcfl * 1e3, mcex / mcfl,
           (double)largest->size / mcex / 1e6);
    /* The codec's own speed: libarchive + libzstd decoding the same blob, output discarded. */
    for (int r = 0; r < rounds; r++) {
        double c0 = cpu_now();
        if (libarchive_decode(largest->blob, largest->blob_size) != 0)
            die("libarchive decode", EBADMSG);
        cfl[r] = cpu_now() - c0;
    }
    double mlib = median(cfl, rounds);
    printf("%-52s %11.2f ms %11.2f ms %8.2fx  report: libarchive+libzstd alone %.0f MB/s\n",
           "  CPU time vs libarchive+zstd decoding, no output", mcex * 1e3, mlib * 1e3, mcex / mlib,
           (double)largest->size / mlib / 1e6);

    /* 3. The cached path, warm, against one stat() of the file it returns. */
    char cache[4200], p[4200];
    snprintf(cache, sizeof cache, "%s/cache", dir);
    setenv("SMKERNEL_CACHE_DIR", cache, 1);
    double t0 = now();
    int rr = smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
    if (rr != 0)
        die("smk_asset_path", rr);
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
    printf("%-52s %11.2f us %11.2f us %8.1fx  <= 20 us: %s (cold first call %.1f ms)\n",
           "smk_asset_path, warm, per call (vs one stat)", mex * 1e6, mfl * 1e6, mex / mfl,
           verdict(mex <= 20e-6), cold * 1e3);

    /* 4. Peak RSS growth of a fresh process extracting one asset, over the same process before.
     * Each asset (memory must not follow the asset's size), blob pages already resident; then the
     * largest with the first touch of its blob pages counted; then the decoder alone on the
     * largest blob and on a 4x larger one packed the same way. */
    int rss_rounds = rounds < 5 ? rounds : 5;
    long lmax = 0;
    for (size_t i = 0; i < n_assets; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", (int)assets[i]->id);
        long g = rss_median("extract", id, "touched", rss_rounds);
        if (assets[i] == largest)
            lmax = g;
        snprintf(label, sizeof label, "peak RSS growth, extract %s (%.1f MB)", assets[i]->file_name,
                 (double)assets[i]->size / 1e6);
        printf("%-52s %10ld KiB %14s %9s  %s\n", label, g, "0 (before)", "",
               g < 0                  ? "(not measured: the child process failed)"
               : assets[i] == largest ? (g <= 4096 ? "<= 4 MiB: met" : "<= 4 MiB: NOT met")
                                      : "");
    }
    char id[16];
    snprintf(id, sizeof id, "%d", (int)largest->id);
    long gcold = rss_median("extract", id, "cold", rss_rounds);
    snprintf(label, sizeof label, "  the same, blob pages not yet resident");
    printf("%-52s %10ld KiB %14s %9s  (+ %.1f MiB of file-backed blob pages)\n", label, gcold, "",
           "", (double)largest->blob_size / 1048576.0);
    long d1 = rss_median("decode", id, "touched", rss_rounds);
    if (synth && synth_size) {
        long d4 = rss_median("decode", synth, "touched", rss_rounds);
        snprintf(label, sizeof label, "decoder peak, %s x4 (%.1f MB) vs x1", largest->file_name,
                 (double)synth_size / 1e6);
        printf("%-52s %10ld KiB %10ld KiB %8.2fx  flat: %s\n", label, d4, d1,
               d1 > 0 ? (double)d4 / (double)d1 : 0.0,
               d4 < 0 || d1 <= 0 ? "not measured" : verdict(d4 <= d1 + d1 / 10));
    } else {
        printf("%-52s %10ld KiB  (no 4x synthetic blob given)\n", "decoder peak, largest blob", d1);
    }
    (void)lmax;

    /* 5. The stripped library's size against the embedded blobs and the raw assets. */
    if (libfile) {
        struct stat st;
        if (stat(libfile, &st) == 0) {
            long long over = (long long)st.st_size - (long long)blob_total;
            const int x86 = strcmp(smk_arch(), "x86_64") == 0;
            printf("%-52s %12lld B %12llu B %9s  %s%s (+%lld B)\n",
                   "stripped library vs embedded blobs", (long long)st.st_size,
                   (unsigned long long)blob_total, "",
                   x86 ? "<= blobs + 65536 B: " : "(the blobs + 64 KiB goal is x86_64's)",
                   x86 ? verdict(over <= 65536) : "", over);
            double pct = 100.0 * (double)st.st_size / (double)raw_total;
            printf("%-52s %12lld B %12llu B %8.2f%%  %s\n", "stripped library vs raw assets",
                   (long long)st.st_size, (unsigned long long)raw_total, pct,
                   strcmp(smk_arch(), "aarch64") == 0
                       ? (pct <= 40.0 ? "<= 40%: met" : "<= 40%: NOT met")
                       : "(the 40% goal is aarch64's)");
        }
    }
    print_load("at end");
    char cmd[100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
