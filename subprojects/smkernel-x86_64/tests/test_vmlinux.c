/*
 * The PVH vmlinux derived from the embedded bzImage: its contents, its extraction contract and
 * what a malformed bzImage gives. x86_64 only. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "smkernel-x86_64.h"
#include "vmlinux.h"

struct buf {
    unsigned char *p;
    size_t len, cap;
    size_t max_chunk;
    int fail_at_call; /* return fail_with from this call on (0: never) */
    int fail_with;
    int calls;
};

static int collect(void *ctx, const void *data, size_t len)
{
    struct buf *b = ctx;
    b->calls++;
    if (b->fail_at_call && b->calls >= b->fail_at_call)
        return b->fail_with;
    if (len > b->max_chunk)
        b->max_chunk = len;
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->p = realloc(b->p, b->cap);
        ck_assert_ptr_nonnull(b->p);
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

static uint64_t rd(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static unsigned char *bzimage(void)
{
    unsigned char *bz = malloc(SMK_KERNEL_LEN);
    ck_assert_ptr_nonnull(bz);
    ck_assert_int_eq(smk_decompress(SMK_ASSET_KERNEL, bz, SMK_KERNEL_LEN), 0);
    return bz;
}

static char tmpdir[] = "/tmp/smk-vmlinux-XXXXXX";

static void setup(void)
{
    strcpy(tmpdir, "/tmp/smk-vmlinux-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    ck_assert_int_eq(system(cmd), 0);
}

/* The ELF is whole: the headers' extent is the file, and the PVH note is there. */
START_TEST(test_stream_is_pvh_elf)
{
    struct buf b = {0};
    ck_assert_int_eq(smk_stream_vmlinux(collect, &b), 0);
    ck_assert_uint_gt(b.len, SMK_KERNEL_LEN);
    ck_assert_uint_le(b.max_chunk, 1u << 20);
    ck_assert_mem_eq(b.p, "\177ELF\2\1", 6);
    ck_assert_uint_eq(rd(b.p + 18, 2), 62); /* EM_X86_64 */
    uint64_t shoff = rd(b.p + 40, 8), shnum = rd(b.p + 60, 2);
    ck_assert_uint_eq(shoff + shnum * 64, b.len);
    uint64_t phoff = rd(b.p + 32, 8), phnum = rd(b.p + 56, 2);
    bool pvh = false;
    for (uint64_t i = 0; i < phnum; i++) {
        const unsigned char *ph = b.p + phoff + i * 56;
        if (rd(ph, 4) != 4)
            continue;
        const unsigned char *n = b.p + rd(ph + 8, 8), *end = n + rd(ph + 32, 8);
        while (n + 12 <= end) {
            uint64_t namesz = rd(n, 4), descsz = rd(n + 4, 4);
            if (rd(n + 8, 4) == 18 && namesz == 4 && memcmp(n + 12, "Xen", 4) == 0)
                pvh = true;
            n += 12 + ((namesz + 3) & ~3u) + ((descsz + 3) & ~3u);
        }
    }
    ck_assert(pvh);

    /* The decompressed length the bzImage promises, read here from its own trailer. */
    unsigned char *bz = bzimage();
    size_t setup = bz[0x1f1] ? bz[0x1f1] : 4;
    size_t start = (setup + 1) * 512 + rd(bz + 0x248, 4), len = rd(bz + 0x24c, 4);
    ck_assert_uint_le(b.len, rd(bz + start + len - 4, 4));
    free(bz);
    free(b.p);
}
END_TEST

START_TEST(test_extract_matches_stream)
{
    struct buf b = {0};
    ck_assert_int_eq(smk_stream_vmlinux(collect, &b), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/a/b/vmlinux", tmpdir);
    ck_assert_int_eq(smk_extract_vmlinux_to(path), -ENOENT);
    ck_assert_int_eq(smk_extract_vmlinux_to_with_parents(path), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, b.len);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    unsigned char *f = malloc(b.len);
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fread(f, 1, b.len, fp), b.len);
    fclose(fp);
    ck_assert_mem_eq(f, b.p, b.len);
    /* Again over the existing file: replaced, still equal. */
    ck_assert_int_eq(smk_extract_vmlinux_to(path), 0);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq((uint64_t)st.st_size, b.len);
    free(f);
    free(b.p);
}
END_TEST

START_TEST(test_bad_arguments)
{
    ck_assert_int_eq(smk_stream_vmlinux(NULL, NULL), -EINVAL);
    ck_assert_int_eq(smk_extract_vmlinux_to(NULL), -EINVAL);
    ck_assert_int_eq(smk_extract_vmlinux_to(""), -EINVAL);
    ck_assert_int_eq(smk_extract_vmlinux_to(tmpdir), -EISDIR);
    char path[128];
    snprintf(path, sizeof path, "%s/", tmpdir);
    ck_assert_int_eq(smk_extract_vmlinux_to_with_parents(path), -EISDIR);
}
END_TEST

/* A callback's error is returned as is (a positive one as -EIO); the old file stays. */
START_TEST(test_callback_error_keeps_target)
{
    struct buf b = {.fail_at_call = 3, .fail_with = -ENOSPC};
    ck_assert_int_eq(smk_stream_vmlinux(collect, &b), -ENOSPC);
    ck_assert_int_eq(b.calls, 3);
    struct buf c = {.fail_at_call = 1, .fail_with = 7};
    ck_assert_int_eq(smk_stream_vmlinux(collect, &c), -EIO);
    free(b.p);
    free(c.p);

    char path[128];
    snprintf(path, sizeof path, "%s/vmlinux", tmpdir);
    FILE *fp = fopen(path, "w");
    ck_assert_ptr_nonnull(fp);
    fputs("old", fp);
    fclose(fp);
    /* A read-only directory makes the publish step fail (not as root: root may write). */
    if (geteuid() != 0) {
        ck_assert_int_eq(chmod(tmpdir, 0555), 0);
        ck_assert_int_lt(smk_extract_vmlinux_to(path), 0);
        ck_assert_int_eq(chmod(tmpdir, 0755), 0);
    }
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, 3);
}
END_TEST

static int from_copy(unsigned char *bz, struct buf *b)
{
    return smk__vmlinux_from_bzimage(bz, SMK_KERNEL_LEN, collect, b);
}

/* Each part of the bzImage the derivation relies on, broken in turn: -EBADMSG every time. */
START_TEST(test_malformed_bzimage)
{
    unsigned char *good = bzimage();
    unsigned char *bz = malloc(SMK_KERNEL_LEN);
    struct buf b = {0};
    ck_assert_int_eq(from_copy(good, &b), 0);
    size_t setup = good[0x1f1] ? good[0x1f1] : 4;
    size_t start = (setup + 1) * 512 + rd(good + 0x248, 4), len = rd(good + 0x24c, 4);
    struct {
        const char *what;
        size_t off;
        unsigned char xor_with;
    } cases[] = {
        {"HdrS magic", 0x202, 0x01},
        {"protocol version below 2.08", 0x207, 0x02},
        {"payload offset", 0x24b, 0x40},
        {"payload length", 0x24f, 0x40},
        {"LZ4 magic", start, 0x01},
        {"first LZ4 block size", start + 5, 0x80},
        {"decompressed length trailer", start + len - 4, 0x01},
        {"decompressed length trailer, high byte", start + len - 1, 0x10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(bz, good, SMK_KERNEL_LEN);
        bz[cases[i].off] ^= cases[i].xor_with;
        b.len = 0;
        int r = from_copy(bz, &b);
        if (r != -EBADMSG)
            ck_abort_msg("%s broken: got %d, want -EBADMSG", cases[i].what, r);
    }
    /* Too short to hold a header at all. */
    ck_assert_int_eq(smk__vmlinux_from_bzimage(good, 0x200, collect, &b), -EBADMSG);
    free(b.p);
    free(bz);
    free(good);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("smkernel-x86_64 vmlinux");
    TCase *tc = tcase_create("vmlinux");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_stream_is_pvh_elf);
    tcase_add_test(tc, test_extract_matches_stream);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_callback_error_keeps_target);
    tcase_add_test(tc, test_malformed_bzimage);
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
