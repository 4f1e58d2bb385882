/*
 * Extraction with decoding and writing on two threads (src/common/extract.c): the file is the
 * decoded asset byte for byte; a blob that fails mid-stream or only at its final checksum, a write
 * that fails part-way (RLIMIT_FSIZE) and a writer thread that cannot start each end with the
 * right error, the target absent or untouched and no temporary left. Links the static core (or
 * the portable one, whose temporaries are named files) to feed corrupt copies of real blobs to
 * the internal entry point. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include "internal.h"

#include <check.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* pthread_create as the library sees it: the real one, or EAGAIN while fail_threads is set. */
static volatile int fail_threads;
static volatile int thread_calls;

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))dlsym(
            RTLD_NEXT, "pthread_create");
    thread_calls++;
    if (fail_threads || !real)
        return EAGAIN;
    return real(t, attr, fn, arg);
}

static char dir[64];
static int dirfd_;

static void setup(void)
{
    strcpy(dir, "/tmp/smk-extract-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(dirfd_, 0);
    fail_threads = 0;
}

static void teardown(void)
{
    close(dirfd_);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

/* Both threads on one CPU: the decoder finds the writer is not running beside it and finishes
 * alone (the path a loaded machine takes). */
static void one_cpu(void)
{
    cpu_set_t set;
    ck_assert_int_eq(sched_getaffinity(0, sizeof set, &set), 0);
    int cpu = 0;
    while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set))
        cpu++;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    ck_assert_int_eq(sched_setaffinity(0, sizeof set, &set), 0);
}

static const char *at(const char *name)
{
    static char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Entries of the scratch directory other than keep (NULL: none): temporaries or partial files. */
static int strays(const char *keep)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
             !(keep && strcmp(e->d_name, keep) == 0);
    closedir(d);
    return n;
}

static unsigned char *read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    struct stat st;
    ck_assert_int_eq(fstat(fd, &st), 0);
    unsigned char *p = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(p);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    close(fd);
    *len = got;
    return p;
}

static const char old_bytes[] = "the previous complete file\n";

static void write_old(const char *name)
{
    int fd = openat(dirfd_, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(smk__write_all(fd, old_bytes, sizeof old_bytes - 1), 0);
    close(fd);
}

static bool is_old(const char *name)
{
    size_t len;
    unsigned char *p = read_file(at(name), &len);
    bool same = len == sizeof old_bytes - 1 && memcmp(p, old_bytes, len) == 0;
    free(p);
    return same;
}

static const struct smk_asset *largest(void)
{
    const struct smk_asset *big = smk__asset_list[0];
    for (size_t i = 1; i < smk__asset_count; i++)
        if (smk__asset_list[i]->size > big->size)
            big = smk__asset_list[i];
    return big;
}

/* Every asset, through the threaded path (_i = 0), with no thread to be had (1: the serial
 * path) and on one CPU (2: the decoder goes on alone part-way), is the same bytes as
 * smk_decompress gives, with the asset's mode. */
START_TEST(test_identical_to_decompress)
{
    fail_threads = _i == 1;
    if (_i == 2)
        one_cpu();
    for (size_t i = 0; i < smk__asset_count; i++) {
        const struct smk_asset *a = smk__asset_list[i];
        unsigned char *want = malloc(a->size ? a->size : 1);
        ck_assert_ptr_nonnull(want);
        ck_assert_int_eq(smk_decompress(a->id, want, a->size), 0);
        thread_calls = 0;
        ck_assert_int_eq(smk__extract_at(a, dirfd_, a->file_name, NULL), 0);
        if (_i == 1 && a == largest())
            ck_assert_int_gt(thread_calls, 0); /* the threaded path was tried and fell back */
        size_t len;
        unsigned char *got = read_file(at(a->file_name), &len);
        ck_assert_uint_eq(len, a->size);
        ck_assert_msg(memcmp(got, want, len) == 0, "%s differs from smk_decompress", a->name);
        struct stat st;
        ck_assert_int_eq(stat(at(a->file_name), &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, a->mode);
        free(got);
        free(want);
    }
    ck_assert_int_eq(strays(NULL), (int)smk__asset_count);
}
END_TEST

struct count {
    uint64_t bytes;
};

static int count_bytes(void *ctx, const void *data, size_t len)
{
    (void)data;
    ((struct count *)ctx)->bytes += len;
    return 0;
}

/*
 * Corrupt copies of the largest blob: cut at 60 % (fails mid-stream, after megabytes were
 * decoded and written), 64 bytes overwritten in the middle, and the frame's last byte (its
 * checksum: fails only once all but the last block were decoded and written). _i: no target before, or an
 * old one that must stay.
 */
START_TEST(test_corrupt_blob_publishes_nothing)
{
    const struct smk_asset *real = largest();
    for (int kind = 0; kind < 3; kind++) {
        unsigned char *blob = malloc(real->blob_size);
        ck_assert_ptr_nonnull(blob);
        memcpy(blob, real->blob, real->blob_size);
        struct smk_asset a = *real;
        a.blob = blob;
        if (kind == 0)
            a.blob_size = real->blob_size / 10 * 6;
        else if (kind == 1)
            memset(blob + real->blob_size / 2, 0xa5, 64);
        else
            blob[real->blob_size - 1] ^= 0x01;
        struct count c = {0};
        ck_assert_int_eq(smk__decode(&a, count_bytes, &c), -EBADMSG);
        if (kind == 0)
            ck_assert_uint_gt(c.bytes, (uint64_t)SMK_CHUNK); /* mid-stream, not at the header */
        if (kind == 2) /* libarchive holds back only the frame's last block for the check */
            ck_assert_uint_gt(c.bytes, a.size - (uint64_t)SMK_CHUNK);
        if (_i)
            write_old("k");
        else
            unlinkat(dirfd_, "k", 0);
        ck_assert_int_eq(smk__extract_at(&a, dirfd_, "k", NULL), -EBADMSG);
        if (_i)
            ck_assert(is_old("k"));
        else
            ck_assert_int_eq(faccessat(dirfd_, "k", F_OK, 0), -1);
        ck_assert_int_eq(strays(_i ? "k" : NULL), 0);
        free(blob);
    }
}
END_TEST

/*
 * write() fails with EFBIG part-way (RLIMIT_FSIZE, SIGXFSZ ignored) at limits from the first
 * write to the last slot: the error comes back, the decoder stops, nothing is published or left.
 * _i & 1: an old target that must stay; _i & 2: on one CPU (the decoder goes on alone).
 */
START_TEST(test_write_error_mid_stream)
{
    const bool old = _i & 1;
    const struct smk_asset *a = largest();
    const long long half = (long long)a->size / 2, last = (long long)a->size - 1;
    const long long limits[] = {0, 1, 300000, (long long)SMK_CHUNK * 2 + 4097, half, last};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
        if (old)
            write_old("k");
        else
            unlinkat(dirfd_, "k", 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            if (_i & 2)
                one_cpu();
            struct rlimit rl = {(rlim_t)limits[i], (rlim_t)limits[i]};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(90);
            int r = smk__extract_at(a, dirfd_, "k", NULL);
            _exit(r == -EFBIG ? 0 : r == 0 ? 91 : 92);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "limit %lld: status %#x", limits[i],
                      (unsigned)st);
        if (old)
            ck_assert(is_old("k"));
        else
            ck_assert_int_eq(faccessat(dirfd_, "k", F_OK, 0), -1);
        ck_assert_int_eq(strays(old ? "k" : NULL), 0);
    }
    /* The same process extracts fine afterwards: nothing was left locked or half-done. */
    ck_assert_int_eq(smk__extract_at(a, dirfd_, "k", NULL), 0);
    ck_assert_int_eq(smk_verify_file(a->id, at("k")), 0);
}
END_TEST

/* A callback-level view of the same: the decoder really does stop early when the writer fails,
 * instead of decoding the rest of the asset for nothing (timed against a full extraction). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(test_write_error_stops_decoder)
{
    const struct smk_asset *a = largest();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        close(p[0]);
        /* Warm up, then time the best of a few full and of a few failed extractions. */
        double full = 1e9, failed = 1e9;
        for (int round = 0; round < 5; round++) {
            struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
            double t0 = now();
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0 || smk__extract_at(a, dirfd_, "k", NULL) != 0)
                _exit(90);
            double t1 = now();
            rl.rlim_cur = 65536;
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(90);
            if (smk__extract_at(a, dirfd_, "k2", NULL) != -EFBIG)
                _exit(91);
            double t2 = now();
            full = t1 - t0 < full ? t1 - t0 : full;
            failed = t2 - t1 < failed ? t2 - t1 : failed;
        }
        double v[2] = {full, failed};
        _exit(write(p[1], v, sizeof v) == sizeof v ? 0 : 92);
    }
    close(p[1]);
    double v[2] = {0, 0};
    ck_assert_int_eq(read(p[0], v, sizeof v), (ssize_t)sizeof v);
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", (unsigned)st);
    printf("extract %s: %.2f ms whole, %.2f ms when writing fails at 64 KiB\n", a->name, v[0] * 1e3,
           v[1] * 1e3);
    ck_assert_msg(v[1] < v[0] / 2, "a failed write did not stop decoding: %.2f ms vs %.2f ms",
                  v[1] * 1e3, v[0] * 1e3);
    ck_assert_int_eq(faccessat(dirfd_, "k2", F_OK, 0), -1);
    ck_assert_int_eq(strays("k"), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("extract pipeline");
    TCase *tc = tcase_create("extract");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_identical_to_decompress, 0, 3);
    tcase_add_loop_test(tc, test_corrupt_blob_publishes_nothing, 0, 2);
    tcase_add_loop_test(tc, test_write_error_mid_stream, 0, 4);
    tcase_add_test(tc, test_write_error_stops_decoder);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
