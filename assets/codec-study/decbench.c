/* decbench — measure libarchive (raw format) decompression of asset blobs.
 *
 * Usage:
 *   decbench decode [-n RUNS] RAW BLOB
 *       Decode BLOB into memory RUNS times (default 7) through libarchive's raw
 *       format + every filter, check the bytes equal RAW, print one line:
 *         filter=<name> raw=<bytes> blob=<bytes> median_ms= min_ms= max_ms= mbps= cpu_ms= cpu_mbps=
 *       mbps is decompressed MB (10^6 bytes) per second at the median wall time;
 *       cpu_* use the median thread CPU time, which other load on the machine
 *       inflates much less than wall time.
 *
 *   decbench extract [-n RUNS] [-c] DIR RAW BLOB [RAW BLOB ...]
 *       "All host assets to files", RUNS times, rotating through the variants:
 *         raw:      write each RAW from memory to DIR/.name.tmp, fsync, rename to DIR/name
 *         data:     archive_read_data() 64 KiB chunks -> write -> fsync -> rename
 *         block:    archive_read_data_block() (no extra copy) -> write -> fsync -> rename
 *         kick:     block + sync_file_range(WRITE) per written MiB (I/O overlaps decoding)
 *         kick_par: kick, all assets concurrently (one thread each)
 *       Targets are deleted (and DIR fsynced) before each run, so every run is a
 *       first extraction. Prints the median and the minimum per variant and
 *       variant/raw for both (the minimum is the better estimate on a loaded machine).
 *       -c (cold, root only): the blobs are mmap()ed from their files, like the
 *       library's read-only data, and the page cache is dropped (sync +
 *       drop_caches) before every timed run, so decoding reads them from disk.
 *
 *   decbench mem BLOB
 *       Peak memory of one streaming decode: the blob is read into memory and touched
 *       first, the peak-RSS mark is reset (/proc/self/clear_refs 5), then the blob is
 *       decoded the way the library decodes (only its filter, by extension, + raw format,
 *       archive_read_data_block(), output discarded) and the growth of VmHWM over the
 *       RSS before is printed:  filter=<name> raw=<bytes> blob=<bytes> peak_kib=<KiB>
 *       (what libarchive and the codec allocate: window, buffers, contexts).
 *
 * Timing is in-process (CLOCK_MONOTONIC) and excludes process start and reading
 * the inputs: the blob is already in memory, as it is when embedded in a library.
 */
#define _GNU_SOURCE
#include <archive.h>
#include <pthread.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct buf {
    unsigned char *p;
    size_t n;
    const char *path;
};

static void die(const char *m, const char *a)
{
    fprintf(stderr, "decbench: %s%s%s\n", m, a ? ": " : "", a ? a : "");
    exit(2);
}

static struct buf slurp(const char *path)
{
    struct buf b = {0};
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0)
        die(strerror(errno), path);
    b.n = (size_t)st.st_size;
    b.p = malloc(b.n ? b.n : 1);
    if (!b.p)
        die("out of memory", path);
    size_t off = 0;
    while (off < b.n) {
        ssize_t r = read(fd, b.p + off, b.n - off);
        if (r <= 0)
            die("short read", path);
        off += (size_t)r;
    }
    close(fd);
    b.path = path;
    return b;
}

/* Cold mode: the blob is mapped from its file, like a library's .rodata, and the
 * page cache is dropped before every timed run, so decoding faults it in from disk. */
static int cold;

static struct buf map_file(const char *path)
{
    struct buf b = {0};
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0)
        die(strerror(errno), path);
    b.n = (size_t)st.st_size;
    b.p = mmap(NULL, b.n, PROT_READ, MAP_PRIVATE, fd, 0);
    if (b.p == MAP_FAILED)
        die(strerror(errno), path);
    close(fd);
    b.path = path;
    return b;
}

static void drop_caches(void)
{
    sync();
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0 || write(fd, "3\n", 2) != 2)
        die("cannot drop caches (-c needs root)", strerror(errno));
    close(fd);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: not inflated by other processes taking the CPU away. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static struct archive *open_blob(const struct buf *blob)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    if (!a)
        die("archive_read_new", NULL);
    archive_read_support_filter_all(a);
    archive_read_support_format_raw(a);
    if (archive_read_open_memory(a, blob->p, blob->n) != ARCHIVE_OK)
        die(archive_error_string(a), blob->path);
    if (archive_read_next_header(a, &e) != ARCHIVE_OK)
        die(archive_error_string(a), blob->path);
    return a;
}

/* Decode the whole blob into out (capacity cap); returns bytes produced. */
static size_t decode_mem(const struct buf *blob, unsigned char *out, size_t cap, char *fname,
                         size_t fnl)
{
    struct archive *a = open_blob(blob);
    size_t off = 0;
    for (;;) {
        la_ssize_t r = archive_read_data(a, out + off, cap - off);
        if (r < 0)
            die(archive_error_string(a), blob->path);
        if (r == 0)
            break;
        off += (size_t)r;
        if (off == cap) {
            /* must be the end */
            unsigned char x;
            if (archive_read_data(a, &x, 1) != 0)
                die("decoded more than RAW", blob->path);
            break;
        }
    }
    if (fname)
        snprintf(fname, fnl, "%s", archive_filter_name(a, 0));
    archive_read_free(a);
    return off;
}

static int cmd_decode(int runs, const char *rawp, const char *blobp)
{
    struct buf raw = slurp(rawp), blob = slurp(blobp);
    unsigned char *out = malloc(raw.n + 1);
    double t[256], c[256];
    char fname[64] = "?";
    if (!out)
        die("out of memory", NULL);
    /* warm-up + correctness */
    if (decode_mem(&blob, out, raw.n, fname, sizeof fname) != raw.n || memcmp(out, raw.p, raw.n))
        die("decoded bytes differ from RAW", blobp);
    for (int i = 0; i < runs; i++) {
        double t0 = now(), c0 = cpu_now();
        decode_mem(&blob, out, raw.n, NULL, 0);
        t[i] = now() - t0;
        c[i] = cpu_now() - c0;
    }
    double lo = t[0], hi = t[0];
    for (int i = 0; i < runs; i++) {
        lo = t[i] < lo ? t[i] : lo;
        hi = t[i] > hi ? t[i] : hi;
    }
    double med = median(t, runs), cmed = median(c, runs);
    printf(
        "filter=%s raw=%zu blob=%zu median_ms=%.2f min_ms=%.2f max_ms=%.2f mbps=%.0f cpu_ms=%.2f "
        "cpu_mbps=%.0f\n",
        fname, raw.n, blob.n, med * 1e3, lo * 1e3, hi * 1e3, (double)raw.n / med / 1e6, cmed * 1e3,
        (double)raw.n / cmed / 1e6);
    return 0;
}

static void write_all(int fd, const void *p, size_t n, const char *path)
{
    const unsigned char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die(strerror(errno), path);
        }
        c += w;
        n -= (size_t)w;
    }
}

static void target_paths(const char *dir, const char *src, char *tmp, char *dst, size_t n)
{
    const char *base = strrchr(src, '/');
    base = base ? base + 1 : src;
    snprintf(dst, n, "%s/%s", dir, base);
    snprintf(tmp, n, "%s/.%s.tmp", dir, base);
}

static void finish(int fd, const char *tmp, const char *dst)
{
    if (fsync(fd) < 0)
        die(strerror(errno), tmp);
    if (close(fd) < 0)
        die(strerror(errno), tmp);
    if (rename(tmp, dst) < 0)
        die(strerror(errno), dst);
}

static void fsync_dir(const char *dir)
{
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    if (d < 0)
        die(strerror(errno), dir);
    fsync(d);
    close(d);
}

static double extract_raw(const char *dir, struct buf *raw, int n)
{
    char tmp[4096], dst[4096];
    double t0 = now();
    for (int i = 0; i < n; i++) {
        target_paths(dir, raw[i].path, tmp, dst, sizeof tmp);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            die(strerror(errno), tmp);
        write_all(fd, raw[i].p, raw[i].n, tmp);
        finish(fd, tmp, dst);
    }
    fsync_dir(dir);
    return now() - t0;
}

/* Variants of "decode one blob to a file":
 *   V_DATA:  archive_read_data() into a 64 KiB buffer, write(), fsync at the end
 *   V_BLOCK: archive_read_data_block() (no copy out of libarchive's buffer), write()
 *   V_KICK:  V_BLOCK + sync_file_range(SYNC_FILE_RANGE_WRITE) on every written MiB, so
 *            the device writes while the CPU decodes and the final fsync waits less */
enum { V_DATA, V_BLOCK, V_KICK };

static void decode_to_fd(int fd, struct buf *blob, const char *tmp, int v)
{
    static __thread unsigned char chunk[64 * 1024];
    struct archive *a = open_blob(blob);
    off_t done = 0, kicked = 0;
    for (;;) {
        const void *p;
        size_t n;
        la_int64_t o;
        if (v == V_DATA) {
            la_ssize_t r = archive_read_data(a, chunk, sizeof chunk);
            if (r < 0)
                die(archive_error_string(a), blob->path);
            if (r == 0)
                break;
            p = chunk;
            n = (size_t)r;
        } else {
            int r = archive_read_data_block(a, &p, &n, &o);
            if (r == ARCHIVE_EOF)
                break;
            if (r != ARCHIVE_OK)
                die(archive_error_string(a), blob->path);
        }
        write_all(fd, p, n, tmp);
        done += (off_t)n;
        if (v == V_KICK && done - kicked >= (1 << 20)) {
            sync_file_range(fd, kicked, done - kicked, SYNC_FILE_RANGE_WRITE);
            kicked = done;
        }
    }
    archive_read_free(a);
}

struct job {
    const char *dir;
    struct buf *raw, *blob;
    int v;
};

static void *extract_one(void *arg)
{
    struct job *j = arg;
    char tmp[4096], dst[4096];
    target_paths(j->dir, j->raw->path, tmp, dst, sizeof tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(strerror(errno), tmp);
    decode_to_fd(fd, j->blob, tmp, j->v);
    finish(fd, tmp, dst);
    return NULL;
}

/* par: extract the assets concurrently, one thread each */
static double extract_codec(const char *dir, struct buf *raw, struct buf *blob, int n, int v,
                            int par)
{
    struct job jobs[64];
    pthread_t th[64];
    double t0 = now();
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct job){dir, &raw[i], &blob[i], v};
        if (par)
            pthread_create(&th[i], NULL, extract_one, &jobs[i]);
        else
            extract_one(&jobs[i]);
    }
    if (par)
        for (int i = 0; i < n; i++)
            pthread_join(th[i], NULL);
    fsync_dir(dir);
    return now() - t0;
}

static void clean(const char *dir, struct buf *raw, int n)
{
    char tmp[4096], dst[4096];
    for (int i = 0; i < n; i++) {
        target_paths(dir, raw[i].path, tmp, dst, sizeof tmp);
        unlink(dst);
        unlink(tmp);
    }
    fsync_dir(dir);
}

#define NVAR 5
static const char *const varname[NVAR] = {"raw", "data", "block", "kick", "kick_par"};

static int cmd_extract(int runs, const char *dir, int argc, char **argv)
{
    int n = argc / 2;
    struct buf *raw = calloc((size_t)n, sizeof *raw), *blob = calloc((size_t)n, sizeof *blob);
    double t[NVAR][256];
    size_t rawsum = 0, blobsum = 0;
    if (n > 64)
        die("too many assets", NULL);
    for (int i = 0; i < n; i++) {
        raw[i] = slurp(argv[2 * i]);
        blob[i] = cold ? map_file(argv[2 * i + 1]) : slurp(argv[2 * i + 1]);
        rawsum += raw[i].n;
        blobsum += blob[i].n;
    }
    for (int r = 0; r < runs; r++) {
        /* rotate the order so no variant always runs first */
        for (int k = 0; k < NVAR; k++) {
            int v = (k + r) % NVAR;
            clean(dir, raw, n);
            if (cold)
                drop_caches();
            switch (v) {
            case 0:
                t[v][r] = extract_raw(dir, raw, n);
                break;
            case 1:
                t[v][r] = extract_codec(dir, raw, blob, n, V_DATA, 0);
                break;
            case 2:
                t[v][r] = extract_codec(dir, raw, blob, n, V_BLOCK, 0);
                break;
            case 3:
                t[v][r] = extract_codec(dir, raw, blob, n, V_KICK, 0);
                break;
            case 4:
                t[v][r] = extract_codec(dir, raw, blob, n, V_KICK, 1);
                break;
            }
        }
    }
    clean(dir, raw, n);
    double m[NVAR], lo[NVAR];
    for (int v = 0; v < NVAR; v++) {
        lo[v] = t[v][0];
        for (int r = 1; r < runs; r++)
            lo[v] = t[v][r] < lo[v] ? t[v][r] : lo[v];
        m[v] = median(t[v], runs);
    }
    printf("assets=%d raw=%zu blob=%zu", n, rawsum, blobsum);
    for (int v = 0; v < NVAR; v++)
        printf(" %s_ms=%.1f", varname[v], m[v] * 1e3);
    for (int v = 1; v < NVAR; v++)
        printf(" %s_x=%.2f", varname[v], m[v] / m[0]);
    for (int v = 0; v < NVAR; v++)
        printf(" %s_min_ms=%.1f", varname[v], lo[v] * 1e3);
    for (int v = 1; v < NVAR; v++)
        printf(" %s_min_x=%.2f", varname[v], lo[v] / lo[0]);
    printf("\n");
    return 0;
}

static long status_kib(const char *key)
{
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("cannot read /proc/self/status", NULL);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':')
            v = atol(line + kl + 1);
    fclose(f);
    return v;
}

/* Only the blob's own filter, as the library enables it (decode.c), chosen by extension. */
static struct archive *open_blob_one(const struct buf *blob)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    const char *ext = strrchr(blob->path, '.');
    if (!a || !ext)
        die("archive_read_new or no extension", blob->path);
    int r = strcmp(ext, ".zst") == 0   ? archive_read_support_filter_zstd(a)
            : strcmp(ext, ".xz") == 0  ? archive_read_support_filter_xz(a)
            : strcmp(ext, ".lz4") == 0 ? archive_read_support_filter_lz4(a)
            : strcmp(ext, ".gz") == 0  ? archive_read_support_filter_gzip(a)
                                       : ARCHIVE_FATAL;
    if (r != ARCHIVE_OK || archive_read_support_format_raw(a) != ARCHIVE_OK)
        die("unknown blob extension", blob->path);
    if (archive_read_open_memory(a, blob->p, blob->n) != ARCHIVE_OK ||
        archive_read_next_header(a, &e) != ARCHIVE_OK)
        die(archive_error_string(a), blob->path);
    return a;
}

static uint64_t stream_decode(const struct buf *blob, char *fname, size_t fnl)
{
    struct archive *a = open_blob_one(blob);
    uint64_t total = 0;
    for (;;) {
        const void *chunk;
        size_t len;
        la_int64_t off;
        int r = archive_read_data_block(a, &chunk, &len, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK)
            die(archive_error_string(a), blob->path);
        total += len;
    }
    if (fname)
        snprintf(fname, fnl, "%s", archive_filter_name(a, 0));
    archive_read_free(a);
    return total;
}

static int cmd_mem(const char *blobp)
{
    struct buf blob = slurp(blobp);
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < blob.n; i += 1024)
        sum += blob.p[i];
    /* Warm up libarchive and libc once on the first KiB (it fails, which is fine): the
	 * measured decode then holds only what decoding this blob needs. */
    struct buf head = blob;
    head.n = blob.n < 1024 ? blob.n : 1024;
    struct archive *w = archive_read_new();
    struct archive_entry *e;
    archive_read_support_filter_all(w);
    archive_read_support_format_raw(w);
    if (archive_read_open_memory(w, head.p, head.n) == ARCHIVE_OK)
        archive_read_next_header(w, &e);
    archive_read_free(w);
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd < 0 || write(fd, "5\n", 2) != 2)
        die("cannot reset the peak RSS (/proc/self/clear_refs)", strerror(errno));
    close(fd);
    long before = status_kib("VmRSS");
    char fname[64];
    uint64_t total = stream_decode(&blob, fname, sizeof fname);
    printf("filter=%s raw=%llu blob=%zu peak_kib=%ld\n", fname, (unsigned long long)total, blob.n,
           status_kib("VmHWM") - before);
    return 0;
}

int main(int argc, char **argv)
{
    int runs = 7;
    if (argc < 2)
        goto usage;
    const char *cmd = argv[1];
    argv += 2;
    argc -= 2;
    for (;;) {
        if (argc >= 2 && strcmp(argv[0], "-n") == 0) {
            runs = atoi(argv[1]);
            argv += 2;
            argc -= 2;
        } else if (argc >= 1 && strcmp(argv[0], "-c") == 0) {
            cold = 1;
            argv++;
            argc--;
        } else {
            break;
        }
    }
    if (runs < 1 || runs > 256)
        die("RUNS must be 1..256", NULL);
    if (strcmp(cmd, "decode") == 0 && argc == 2)
        return cmd_decode(runs, argv[0], argv[1]);
    if (strcmp(cmd, "mem") == 0 && argc == 1)
        return cmd_mem(argv[0]);
    if (strcmp(cmd, "extract") == 0 && argc >= 3 && argc % 2 == 1)
        return cmd_extract(runs, argv[0], argc - 1, argv + 1);
usage:
    fprintf(stderr, "usage: decbench decode [-n RUNS] RAW BLOB\n"
                    "       decbench mem BLOB\n"
                    "       decbench extract [-n RUNS] [-c] DIR RAW BLOB [RAW BLOB ...]\n");
    return 2;
}
