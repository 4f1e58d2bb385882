/* GENERATED from smkernel-x86_64/tools/blobcheck.c by sync-shared sha256:c8507fc03c46 */
/*
 * blobcheck MANIFEST STAMP: the build step that refuses a blob not matching its manifest row.
 * Each blob is decoded with libarchive (as the library will at run time; a blob ending in
 * .a64.zst is unfiltered by the library's own a64-filter.h after zstd) and its compressed size,
 * decompressed size and SHA-256 compared with blobs/MANIFEST.tsv. On success STAMP is written,
 * so the check reruns only when the manifest or a blob changes.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>
#include <nettle/sha2.h>

#include "../src/common/a64-filter.h"

/* The columns blobcheck reads, found by name in the manifest's header line. */
enum { COL_BLOB, COL_SIZE, COL_BLOB_SIZE, COL_SHA256, NCOLS_USED };
static const char *const col_names[NCOLS_USED] = {"blob", "size", "blob_size", "sha256"};
#define MAX_COLS 32

struct columns {
    int count;          /* cells in every row */
    int at[NCOLS_USED]; /* where each column used is */
};

/* Split row at TABs in place into at most MAX_COLS cells; the number of cells. */
static int split(char *row, char *cell[MAX_COLS])
{
    int n = 0;
    for (char *p = row; n < MAX_COLS;) {
        cell[n++] = p;
        p = strchr(p, '\t');
        if (!p)
            return n;
        *p++ = '\0';
    }
    return MAX_COLS + 1;
}

/* What the decoded (and unfiltered) bytes add up to. */
struct digest {
    struct sha256_ctx sha;
    unsigned long long total;
};

static int hash(void *ctx, const unsigned char *data, size_t len)
{
    struct digest *d = ctx;
    sha256_update(&d->sha, len, data);
    d->total += len;
    return 0;
}

static int ends_with(const char *s, const char *end)
{
    size_t n = strlen(s), m = strlen(end);
    return n >= m && strcmp(s + n - m, end) == 0;
}

static int read_header(const char *manifest, char *line, struct columns *c)
{
    char *cell[MAX_COLS];
    c->count = split(line, cell);
    if (c->count > MAX_COLS) {
        fprintf(stderr, "blobcheck: %s:1: more than %d columns\n", manifest, MAX_COLS);
        return 1;
    }
    for (int k = 0; k < NCOLS_USED; k++) {
        c->at[k] = -1;
        for (int i = 0; i < c->count; i++)
            if (strcmp(cell[i], col_names[k]) == 0)
                c->at[k] = i;
        if (c->at[k] < 0) {
            fprintf(stderr, "blobcheck: %s:1: the header line names no '%s' column\n", manifest,
                    col_names[k]);
            return 1;
        }
    }
    return 0;
}

static int check_row(const char *manifest, const char *dir, int line, char *row,
                     const struct columns *c)
{
    char *cell[MAX_COLS];
    int n = split(row, cell);
    if (n != c->count) {
        fprintf(stderr, "blobcheck: %s:%d: %d columns, want %d\n", manifest, line, n, c->count);
        return 1;
    }
    const char *blob = cell[c->at[COL_BLOB]], *want_hex = cell[c->at[COL_SHA256]];
    unsigned long long want_size = strtoull(cell[c->at[COL_SIZE]], NULL, 10);
    unsigned long long want_blob = strtoull(cell[c->at[COL_BLOB_SIZE]], NULL, 10);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, blob);

    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "blobcheck: %s: %s (listed in %s:%d)\n", path, strerror(errno), manifest,
                line);
        return 1;
    }
    if ((unsigned long long)st.st_size != want_blob) {
        fprintf(stderr,
                "blobcheck: %s does not match its manifest: %llu compressed bytes, %s:%d says "
                "%llu\n",
                path, (unsigned long long)st.st_size, manifest, line, want_blob);
        return 1;
    }

    struct archive *ar = archive_read_new();
    archive_read_support_filter_all(ar);
    archive_read_support_format_raw(ar);
    struct archive_entry *e;
    if (archive_read_open_filename(ar, path, 1 << 16) != ARCHIVE_OK ||
        archive_read_next_header(ar, &e) != ARCHIVE_OK) {
        fprintf(stderr, "blobcheck: %s: cannot decode: %s\n", path, archive_error_string(ar));
        archive_read_free(ar);
        return 1;
    }
    /* The codec by the blob's ending, as tools/gen-embed.py maps it. */
    struct digest dg = {.total = 0};
    sha256_init(&dg.sha);
    static unsigned char buf[1 << 16], a64_buf[1 << 16];
    struct smk__a64_stream a64;
    int filtered = ends_with(blob, ".a64.zst");
    smk__a64_init(&a64, a64_buf, sizeof a64_buf, false, hash, &dg);
    la_ssize_t got;
    while ((got = archive_read_data(ar, buf, sizeof buf)) > 0) {
        if (filtered)
            smk__a64_feed(&a64, buf, (size_t)got);
        else
            hash(&dg, buf, (size_t)got);
    }
    if (filtered)
        smk__a64_finish(&a64);
    int bad = got < 0;
    if (bad)
        fprintf(stderr, "blobcheck: %s: corrupt: %s\n", path, archive_error_string(ar));
    archive_read_free(ar);
    if (bad)
        return 1;
    unsigned long long total = dg.total;

    unsigned char d[SHA256_DIGEST_SIZE];
    char hex[2 * SHA256_DIGEST_SIZE + 1];
    sha256_digest(&dg.sha, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    if (total != want_size || strcmp(hex, want_hex) != 0) {
        fprintf(stderr,
                "blobcheck: %s does not match its manifest (%s:%d):\n"
                "  decoded: %llu bytes, sha256 %s\n  manifest: %llu bytes, sha256 %s\n"
                "Rebuild the blobs with assets/build, or restore them from git.\n",
                path, manifest, line, total, hex, want_size, want_hex);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: blobcheck MANIFEST STAMP\n");
        return 2;
    }
    const char *manifest = argv[1];
    FILE *f = fopen(manifest, "r");
    if (!f) {
        fprintf(stderr, "blobcheck: %s: %s\n", manifest, strerror(errno));
        return 1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", manifest);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        strcpy(dir, ".");

    char line[8192];
    struct columns cols = {0};
    int n = 0, bad = 0, rows = 0;
    while (fgets(line, sizeof line, f)) {
        n++;
        line[strcspn(line, "\r\n")] = '\0';
        if (n == 1) {
            if (read_header(manifest, line, &cols) != 0) {
                fclose(f);
                return 1;
            }
            continue;
        }
        if (line[0] == '\0' || line[0] == '#')
            continue;
        rows++;
        bad |= check_row(manifest, dir, n, line, &cols);
    }
    fclose(f);
    if (rows == 0) {
        fprintf(stderr, "blobcheck: %s lists no blobs\n", manifest);
        return 1;
    }
    if (bad)
        return 1;
    FILE *s = fopen(argv[2], "w");
    if (!s || fprintf(s, "%d blobs match %s\n", rows, manifest) < 0 || fclose(s) != 0) {
        fprintf(stderr, "blobcheck: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}
