/*
 * The a64 filter (src/common/a64-filter.h, specified in assets/README.md) against a reference
 * written here from the specification, on edge words, random data cut into random chunks and
 * the real kernel; and smk__decode of an "a64+zstd" asset: the raw bytes out, a corrupt blob
 * -EBADMSG with nothing published. On aarch64 the kernel asset is the packed, filtered Image
 * (whose filtered stream must be what the reference makes of the raw Image: assets/pack and the
 * library agree); elsewhere its blob stands in as a zstd frame of non-code data.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <nettle/sha2.h>

#include "internal.h"

#include "a64-filter.h"

/* The specification in its own terms: fields, signed page offsets, offsets as numbers. */
static uint32_t ref_word(uint32_t w, uint64_t p, int dir)
{
    if (w >> 26 == 0x25) { /* BL: 100101 imm26 */
        int64_t imm = (int64_t)(w & 0x3ffffff) + dir * (int64_t)((p / 4) % 0x4000000);
        imm = ((imm % 0x4000000) + 0x4000000) % 0x4000000;
        return 0x94000000u | (uint32_t)imm;
    }
    if ((w >> 31) == 1 && ((w >> 24) & 0x1f) == 0x10) { /* ADRP: 1 immlo 10000 immhi Rd */
        int32_t imm = (int32_t)(((w >> 5) & 0x7ffff) << 2 | ((w >> 29) & 3));
        if (imm >= 0x100000)
            imm -= 0x200000;
        if (imm < -0x20000 || imm >= 0x20000)
            return w;
        int64_t v = imm + dir * (int64_t)((p / 4096) % 0x40000) + 0x20000;
        v = ((v % 0x40000) + 0x40000) % 0x40000 - 0x20000; /* back into [-2^17, 2^17) */
        uint32_t f = (uint32_t)v & 0x1fffff;
        return (w & 0x9000001fu) | (f & 3) << 29 | (f >> 2) << 5;
    }
    return w;
}

static void ref_code(unsigned char *b, size_t len, int dir)
{
    for (size_t i = 0; i + 4 <= len; i += 4) {
        uint32_t w = (uint32_t)b[i] | (uint32_t)b[i + 1] << 8 | (uint32_t)b[i + 2] << 16 |
                     (uint32_t)b[i + 3] << 24;
        w = ref_word(w, i, dir);
        for (int k = 0; k < 4; k++)
            b[i + k] = (unsigned char)(w >> (8 * k));
    }
}

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* Words at the edges of each case: the classes' bounds, the ADRP range's bounds on both sides,
 * all ones, all zeros. */
static const uint32_t edge_words[] = {
    0x00000000, 0xffffffff, 0x94000000, 0x97ffffff, 0x93ffffff,
    0x98000000, 0x14000000, 0xd4000000, /* BL's class bits with one bit off; B; the next class */
    0x90000000, 0x9000001f, 0xf0ffffff, 0x907fffe0, 0x60000000 | 0x90000000 | 0x007fffe0,
    0x90800000, 0x90ffffe0, 0x90a00000, 0x90bfffff, 0x91000000,
    0x10000000, 0xb0000000, 0xd0000000, 0x908001e0, 0x907fffff,
    0x9f000000, 0x9e000000,
};

START_TEST(words)
{
    /* Every edge word and 2^16 random words (two thirds forced into BL's or ADRP's class), at
     * offsets where the word and page counts wrap: the header's arithmetic is the
     * reference's, and each direction undoes the other. */
    static const uint64_t offsets[] = {
        0,          4,         4092,       4096,           0xffffffc,
        0x10000000, 0x3fffffc, 0xfffffffc, 0x100000000ull, 0x7ffffffffff8ull};
    for (size_t o = 0; o < sizeof offsets / sizeof *offsets; o++) {
        uint64_t p = offsets[o];
        for (size_t n = 0; n < (1u << 16) + sizeof edge_words / sizeof *edge_words; n++) {
            uint32_t w = n < sizeof edge_words / sizeof *edge_words ? edge_words[n] : next();
            if (n % 3 == 1)
                w = (w & 0x03ffffff) | 0x94000000;
            else if (n % 3 == 2)
                w = (w & 0x60ffffff) | 0x90000000;
            uint32_t e = smk__a64_word(w, p, true), d = smk__a64_word(w, p, false);
            ck_assert_uint_eq(e, ref_word(w, p, 1));
            ck_assert_uint_eq(d, ref_word(w, p, -1));
            ck_assert_uint_eq(smk__a64_word(e, p, false), w);
            ck_assert_uint_eq(smk__a64_word(d, p, true), w);
        }
    }
}
END_TEST

struct buf {
    unsigned char *p;
    size_t len, cap, max_chunk;
    int fail_after; /* fail the call after this many bytes (0: never) */
};

static int collect(void *ctx, const unsigned char *data, size_t len)
{
    struct buf *b = ctx;
    if (b->fail_after && b->len + len > (size_t)b->fail_after)
        return -ENOSPC;
    if (len > b->max_chunk)
        b->max_chunk = len;
    ck_assert_uint_le(b->len + len, b->cap);
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* Stream src through the filter in chunks of the sizes the rng picks (1-3 bytes a third of the
 * time, so words split every way) with a buffer of cap bytes, into out. */
static int stream(const unsigned char *src, size_t len, bool encode, size_t cap, struct buf *out)
{
    unsigned char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    struct smk__a64_stream s;
    smk__a64_init(&s, buf, cap, encode, collect, out);
    int r = 0;
    for (size_t at = 0; at < len && r == 0;) {
        size_t n = next() % 3 == 0 ? 1 + next() % 3 : 1 + next() % (2 * cap + 7);
        if (n > len - at)
            n = len - at;
        r = smk__a64_feed(&s, src + at, n);
        at += n;
    }
    if (r == 0)
        r = smk__a64_finish(&s);
    free(buf);
    ck_assert_uint_le(out->max_chunk, cap);
    return r;
}

static void fill_random(unsigned char *b, size_t len)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (unsigned char)next();
    /* Plenty of both instructions, all-ones and all-zero words, and a class word last. */
    for (size_t i = 0; i + 4 <= len; i += 4) {
        uint32_t w = next(), k = next() % 8;
        if (k == 0)
            w = (w & 0x03ffffff) | 0x94000000;
        else if (k == 1)
            w = (w & 0x601fffff) | 0x90000000 | (next() % 2 ? 0xe00000 : 0);
        else if (k == 2)
            w = next() % 2 ? 0xffffffff : 0;
        else
            continue;
        memcpy(b + i, &w, 4); /* either byte order: any word is input */
    }
    if (len >= 8)
        memcpy(b + (len & ~(size_t)3) - 4, &(uint32_t){0x97ffffff}, 4);
}

START_TEST(random_streams)
{
    static const size_t caps[] = {4, 8, 12, 4096, 1u << 16};
    for (int round = 0; round < 200; round++) {
        size_t len = round < 16 ? (size_t)round : next() % (round % 10 == 0 ? 300000 : 9000);
        size_t cap = caps[round % 5];
        unsigned char *raw = malloc(len + 1), *want = malloc(len + 1);
        struct buf enc = {.p = malloc(len + 1), .cap = len},
                   dec = {.p = malloc(len + 1), .cap = len};
        fill_random(raw, len);
        memcpy(want, raw, len);
        ref_code(want, len, 1);
        ck_assert_int_eq(stream(raw, len, true, cap, &enc), 0);
        ck_assert_uint_eq(enc.len, len);
        ck_assert(memcmp(enc.p, want, len) == 0);
        ck_assert_int_eq(stream(enc.p, len, false, cap, &dec), 0);
        ck_assert_uint_eq(dec.len, len);
        ck_assert(memcmp(dec.p, raw, len) == 0);
        /* The tail of a size not a multiple of 4 is passed on untouched. */
        for (size_t i = len & ~(size_t)3; i < len; i++)
            ck_assert_uint_eq(enc.p[i], raw[i]);
        free(raw);
        free(want);
        free(enc.p);
        free(dec.p);
    }
}
END_TEST

START_TEST(sink_error_stops)
{
    size_t len = 100003;
    unsigned char *raw = malloc(len);
    fill_random(raw, len);
    struct buf out = {.p = malloc(len), .cap = len, .fail_after = 50000};
    ck_assert_int_eq(stream(raw, len, false, 4096, &out), -ENOSPC);
    ck_assert_uint_le(out.len, 50000);
    free(raw);
    free(out.p);
}
END_TEST

/* The kernel blob's zstd content as libarchive gives it: the filtered stream under a64. */
static unsigned char *zstd_content(const struct smk_asset *a, size_t *len)
{
    struct archive *ar = archive_read_new();
    struct archive_entry *e;
    ck_assert_int_eq(archive_read_support_filter_zstd(ar), ARCHIVE_OK);
    ck_assert_int_eq(archive_read_support_format_raw(ar), ARCHIVE_OK);
    ck_assert_int_eq(archive_read_open_memory(ar, a->blob, a->blob_size), ARCHIVE_OK);
    ck_assert_int_eq(archive_read_next_header(ar, &e), ARCHIVE_OK);
    unsigned char *p = malloc(a->size + 1);
    ck_assert_ptr_nonnull(p);
    size_t got = 0;
    la_ssize_t n;
    while ((n = archive_read_data(ar, p + got, a->size + 1 - got)) > 0)
        got += (size_t)n;
    ck_assert_int_eq(n, 0);
    archive_read_free(ar);
    *len = got;
    return p;
}

static int collect_any(void *ctx, const void *data, size_t len)
{
    ck_assert_uint_le(len, SMK_CHUNK);
    return collect(ctx, data, len);
}

START_TEST(kernel)
{
    const struct smk_asset *k = smk_asset_get(SMK_ASSET_KERNEL);
    ck_assert_ptr_nonnull(k);
    size_t slen;
    unsigned char *s = zstd_content(k, &slen);
    ck_assert_uint_eq(slen, k->size);
    unsigned char *raw = malloc(slen);
    memcpy(raw, s, slen);
    ref_code(raw, slen, -1);

    /* An "a64+zstd" asset: the embedded kernel where it is one, else its blob relabelled. */
    struct smk_asset a = *k;
    a.codec = "a64+zstd";
    struct sha256_ctx sha;
    sha256_init(&sha);
    sha256_update(&sha, slen, raw);
    sha256_digest(&sha, sizeof a.sha256, a.sha256);
    if (strcmp(k->codec, "a64+zstd") == 0) {
        /* The pack's filter (Python) made what the reference makes of the raw Image. */
        ck_assert(memcmp(a.sha256, k->sha256, sizeof a.sha256) == 0);
        unsigned char *again = malloc(slen);
        memcpy(again, raw, slen);
        ref_code(again, slen, 1);
        ck_assert(memcmp(again, s, slen) == 0);
        free(again);
        unsigned char *out = malloc(slen);
        ck_assert_int_eq(smk_decompress(SMK_ASSET_KERNEL, out, slen), 0);
        ck_assert(memcmp(out, raw, slen) == 0);
        free(out);
    }
    struct buf out = {.p = malloc(slen), .cap = slen};
    ck_assert_int_eq(smk__decode(&a, collect_any, &out), 0);
    ck_assert_uint_eq(out.len, slen);
    ck_assert(memcmp(out.p, raw, slen) == 0);

    /* A corrupt filtered blob: -EBADMSG from the decoder, nothing published by extraction. */
    char dir[] = "/tmp/smk-a64-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ck_assert_int_ge(dirfd, 0);
    unsigned char *bad = malloc(k->blob_size);
    for (int c = 0; c < 4; c++) {
        memcpy(bad, k->blob, k->blob_size);
        struct smk_asset b = a;
        b.blob = bad;
        if (c == 0)
            bad[k->blob_size / 2] ^= 0x55; /* the middle */
        else if (c == 1)
            bad[k->blob_size - 2] ^= 0x55; /* the frame's checksum */
        else if (c == 2)
            b.blob_size -= 100; /* truncated */
        else
            b.size += 4; /* one word more than the frame holds */
        out.len = 0;
        ck_assert_int_eq(smk__decode(&b, collect_any, &out), -EBADMSG);
        ck_assert_int_eq(smk__extract_at(&b, dirfd, "Image", NULL), -EBADMSG);
        DIR *d = opendir(dir);
        struct dirent *e;
        int entries = 0;
        while ((e = readdir(d)))
            entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
        closedir(d);
        ck_assert_int_eq(entries, 0);
    }
    close(dirfd);
    rmdir(dir);
    free(bad);
    free(out.p);
    free(raw);
    free(s);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("a64-filter");
    TCase *tc = tcase_create("a64-filter");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, words);
    tcase_add_test(tc, random_streams);
    tcase_add_test(tc, sink_error_stops);
    tcase_add_test(tc, kernel);
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
