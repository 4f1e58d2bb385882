/* GENERATED from smkernel-x86_64/src/common/decode.c by sync-shared sha256:9abdea013712 */
/* Decompression of the embedded blobs through libarchive. SPDX-License-Identifier: MIT */
#include "internal.h"

#include "a64-filter.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <nettle/sha2.h>

/*
 * libarchive's "raw" format hands back the filter's output as one entry. Only the filter the
 * blob needs is enabled, so a corrupt header cannot steer libarchive into another decoder.
 * Every blob is zstd (assets/pack; gen-embed refuses any other codec): "zstd" alone, or
 * "a64+zstd", zstd over the ARM64 branch filter (a64-filter.h), which smk__decode undoes.
 */
#ifndef SMK_A64_FILTER
#define SMK_A64_FILTER 0 /* set by meson.build when the manifest has an a64+zstd blob */
#endif

static bool is_a64(const char *codec)
{
    return SMK_A64_FILTER && strcmp(codec, "a64+zstd") == 0;
}

static int enable_filter(struct archive *ar, const char *codec)
{
    if (strcmp(codec, "zstd") == 0 || is_a64(codec))
        return archive_read_support_filter_zstd(ar);
    return ARCHIVE_FATAL;
}

/*
 * Does the blob check itself while it is decoded? A zstd frame whose header sets
 * Content_Checksum_flag ends with the XXH64 of its decompressed content; libzstd verifies it as
 * the frame ends and libarchive then fails the read ("Restored data doesn't match checksum"), so
 * a corrupt blob can never reach ARCHIVE_EOF here. The expected SHA-256 lives in the same
 * library as the blob, so it adds no protection against tampering, only a second corruption
 * check that costs as much time as the rest of the decode (docs/BENCHMARKS.md). The flag is read
 * from the blob itself: a flipped flag bit leaves 4 stray bytes that fail as a next frame, and
 * falls back to SHA-256 anyway. Any other codec (or a frame without the flag) is SHA-checked.
 * Under the a64 filter the checksum covers the filtered bytes, and that is as good: the filter
 * is one to one for a given length, so the output is right exactly when they are.
 * The build (tools/blobcheck.c, unfiltering with this same a64-filter.h) checks every blob
 * against its SHA-256 in the manifest.
 */
static bool self_checked(const struct smk_asset *a)
{
    static const unsigned char zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    return (strcmp(a->codec, "zstd") == 0 || is_a64(a->codec)) && a->blob_size > 5 &&
           memcmp(a->blob, zstd_magic, sizeof zstd_magic) == 0 && (a->blob[4] & 0x04) != 0;
}

static bool contains_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (; s && *s; s++) {
        size_t i = 0;
        while (i < n && tolower((unsigned char)s[i]) == word[i])
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/*
 * libarchive sets ENOMEM when its own allocations fail, but a decoder library's failure to
 * allocate (libzstd's window) reaches us as a generic error whose message says so
 * ("Zstd decompression failed: Allocation error : not enough memory"). Both are -ENOMEM:
 * the blob is fine, the machine is short of memory.
 */
int smk__archive_error(struct archive *ar)
{
    if (archive_errno(ar) == ENOMEM)
        return -ENOMEM;
    const char *msg = archive_error_string(ar);
    /* Not any mention of memory: a corrupt zstd header that asks for a huge window fails with
     * "Frame requires too much memory for decoding", and that is corrupt data. */
    if (contains_word(msg, "alloc") || contains_word(msg, "out of memory") ||
        contains_word(msg, "not enough memory"))
        return -ENOMEM;
    return -EBADMSG;
}

/* Where decoded (and unfiltered) bytes go: the SHA-256 when the blob needs it, then the caller
 * in chunks of at most SMK_CHUNK. */
struct output {
    smk_write_fn cb;
    void *ctx;
    bool sha_needed;
    struct sha256_ctx sha;
};

static int emit(void *ctx, const unsigned char *data, size_t len)
{
    struct output *o = ctx;
    if (o->sha_needed)
        sha256_update(&o->sha, len, data);
    /* The filter's blocks are bounded by its own buffer; split anyway so callers can rely on
     * SMK_CHUNK. */
    for (size_t done = 0; done < len;) {
        size_t n = len - done < SMK_CHUNK ? len - done : SMK_CHUNK;
        int cr = o->cb(o->ctx, data + done, n);
        if (cr != 0)
            return cr < 0 ? cr : -EIO;
        done += n;
    }
    return 0;
}

int smk__decode(const struct smk_asset *a, smk_write_fn cb, void *ctx)
{
    struct archive *ar = archive_read_new();
    if (!ar)
        return -ENOMEM;

    int ret = -EBADMSG;
    unsigned char *a64_buf = NULL;
    struct smk__a64_stream a64 = {.buf = NULL};
    const bool filtered = is_a64(a->codec);
    if (filtered) {
        a64_buf = malloc(SMK_CHUNK);
        if (!a64_buf) {
            ret = -ENOMEM;
            goto out;
        }
    }
    if (enable_filter(ar, a->codec) != ARCHIVE_OK ||
        archive_read_support_format_raw(ar) != ARCHIVE_OK) {
        ret = -ENOMEM;
        goto out;
    }
    if (archive_read_open_memory(ar, a->blob, a->blob_size) != ARCHIVE_OK) {
        ret = smk__archive_error(ar);
        goto out;
    }
    struct archive_entry *entry;
    if (archive_read_next_header(ar, &entry) != ARCHIVE_OK) {
        ret = smk__archive_error(ar);
        goto out;
    }

    struct output o = {.cb = cb, .ctx = ctx, .sha_needed = !self_checked(a)};
    sha256_init(&o.sha);
    if (filtered)
        smk__a64_init(&a64, a64_buf, SMK_CHUNK, false, emit, &o);
    uint64_t total = 0;
    for (;;) {
        const void *chunk;
        size_t len;
        la_int64_t offset;
        int r = archive_read_data_block(ar, &chunk, &len, &offset);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            ret = smk__archive_error(ar);
            goto out;
        }
        if ((uint64_t)offset != total)
            goto out;
        /* A blob that inflates past its manifest size is corrupt; stop before passing it on. */
        if (len > a->size - total)
            goto out;
        total += len;
        int er = filtered ? smk__a64_feed(&a64, chunk, len) : emit(&o, chunk, len);
        if (er != 0) {
            ret = er;
            goto out;
        }
    }
    if (total != a->size)
        goto out;
    if (filtered) {
        int er = smk__a64_finish(&a64);
        if (er != 0) {
            ret = er;
            goto out;
        }
    }
    if (o.sha_needed) {
        unsigned char digest[SHA256_DIGEST_SIZE];
        sha256_digest(&o.sha, sizeof digest, digest);
        if (memcmp(digest, a->sha256, sizeof digest) != 0)
            goto out;
    }
    ret = 0;
out:
    archive_read_free(ar);
    free(a64_buf);
    return ret;
}

int smk_stream(enum smk_asset_id id, smk_write_fn write_cb, void *ctx)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (!write_cb)
        return -EINVAL;
    return smk__decode(a, write_cb, ctx);
}

struct membuf {
    unsigned char *p;
    size_t used;
};

static int to_buffer(void *ctx, const void *data, size_t len)
{
    struct membuf *m = ctx;
    memcpy(m->p + m->used, data, len);
    m->used += len;
    return 0;
}

int smk_decompress(enum smk_asset_id id, void *buf, size_t buf_size)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (!buf)
        return -EINVAL;
    /* smk__decode never passes more than a->size bytes, so this check makes to_buffer safe. */
    if (buf_size < a->size)
        return -ENOBUFS;
    struct membuf m = {buf, 0};
    return smk__decode(a, to_buffer, &m);
}

int smk_verify_file(enum smk_asset_id id, const char *path)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (!path || !*path)
        return -EINVAL;

    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int ret = 0;
    if (fstat(fd, &st) != 0) {
        ret = -errno;
        goto out;
    }
    if (S_ISDIR(st.st_mode)) {
        ret = -EISDIR;
        goto out;
    }
    /* A FIFO or device would block or never end: only a regular file can hold an asset. */
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != a->size) {
        ret = -EBADMSG;
        goto out;
    }
    unsigned char *buf = malloc(SMK_CHUNK);
    if (!buf) {
        ret = -ENOMEM;
        goto out;
    }
    struct sha256_ctx sha;
    sha256_init(&sha);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, SMK_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            ret = -errno;
            break;
        }
        if (n == 0)
            break;
        sha256_update(&sha, (size_t)n, buf);
        total += (uint64_t)n;
    }
    free(buf);
    if (ret == 0) {
        unsigned char digest[SHA256_DIGEST_SIZE];
        sha256_digest(&sha, sizeof digest, digest);
        if (total != a->size || memcmp(digest, a->sha256, sizeof digest) != 0)
            ret = -EBADMSG;
    }
out:
    close(fd);
    return ret;
}
