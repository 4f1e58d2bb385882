/*
 * Extraction as a stream (src/common/extract.c): the file is the decoded asset byte for byte; a
 * blob that fails mid-stream or only at its final checksum ends with -EBADMSG, the target absent
 * or untouched and no temporary left; a failed write stops the decoding. (Writes failing with
 * EFBIG part-way, through the public call: tests/faults.) Links the static core (or
 * the portable one, whose temporaries are named files) to feed corrupt copies of real blobs to
 * the internal entry point. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include "internal.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];
static int dirfd_;

static void setup(void)
{
    strcpy(dir, "/tmp/smk-extract-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(dirfd_, 0);
}

static void teardown(void)
{
    close(dirfd_);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
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

/* Every asset is the same bytes as smk_decompress gives, with the asset's mode. */
START_TEST(test_identical_to_decompress)
{
    for (size_t i = 0; i < smk__asset_count; i++) {
        const struct smk_asset *a = smk__asset_list[i];
        unsigned char *want = malloc(a->size ? a->size : 1);
        ck_assert_ptr_nonnull(want);
        ck_assert_int_eq(smk_decompress(a->id, want, a->size), 0);
        ck_assert_int_eq(smk__extract_at(a, dirfd_, a->file_name, NULL), 0);
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
 * checksum: fails only once all but the last block were decoded and written). _i: no target
 * before, or an old one that must stay.
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

/* The decoder stops at the first failed write instead of decoding the rest of the asset for
 * nothing: the write callback is never called again once it has failed, and its error is the
 * result. */
struct fail_after {
    uint64_t seen, limit;
    int calls_after;
};

static int fail_after_limit(void *ctx, const void *data, size_t len)
{
    (void)data;
    struct fail_after *f = ctx;
    if (f->seen >= f->limit) {
        f->calls_after++;
        return -ENOSPC;
    }
    f->seen += len;
    return 0;
}

START_TEST(test_write_error_stops_decoder)
{
    const struct smk_asset *a = largest();
    struct fail_after f = {0, 65536, 0};
    ck_assert_int_eq(smk__decode(a, fail_after_limit, &f), -ENOSPC);
    ck_assert_int_eq(f.calls_after, 1);
    ck_assert_uint_lt(f.seen, a->size);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("extract stream");
    TCase *tc = tcase_create("extract");
    tcase_set_timeout(tc, 240);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_identical_to_decompress);
    tcase_add_loop_test(tc, test_corrupt_blob_publishes_nothing, 0, 2);
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
