/* GENERATED from smkernel-x86_64/src/common/internal.h by sync-shared sha256:c38ea4ad3759 */
/* Internal interfaces shared by the library's source files. SPDX-License-Identifier: MIT */
#ifndef SMK_INTERNAL_H
#define SMK_INTERNAL_H

/*
 * Included before any system header. On Linux the library uses a few Linux interfaces
 * (O_TMPFILE, /proc, sync_file_range, secure_getenv) where they help; everything else, and
 * every other OS, takes the POSIX path. SMK_PORTABLE (the portable build, -Dportable=true)
 * builds on Linux as on macOS: no _GNU_SOURCE, no Linux-only path, so the tests prove the
 * fallbacks.
 */
#if defined(__linux__) && !defined(SMK_PORTABLE)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SMK_LINUX 1
#else
#define SMK_LINUX 0
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "smkernel-common.h"

/* -fvisibility=hidden hides what is defined here, but a declaration of a symbol defined in
 * another object (the generated tables, the .incbin blobs, another source file) is taken to be
 * default visibility and reached through the GOT; SMK_HIDDEN lets the compiler address it
 * directly. */
#define SMK_HIDDEN __attribute__((visibility("hidden")))

/* Decoded bytes are handed on in chunks of this size at most; it bounds our own buffers. */
#define SMK_CHUNK (1u << 20)

/* Generated from blobs/MANIFEST.tsv (see tools/gen-embed.py). */
SMK_HIDDEN extern const struct smk_asset *const smk__asset_by_id[SMK_ASSET_ID_COUNT];
SMK_HIDDEN extern const struct smk_asset *const smk__asset_list[];
SMK_HIDDEN extern const size_t smk__asset_count;
SMK_HIDDEN extern const char smk__arch[];
SMK_HIDDEN extern const char smk__kernel_cmdline[];

/* One asset the arch puts in its initramfs, and where. */
struct smk__layout_entry {
    const char *guest_path;
    enum smk_asset_id asset;
    unsigned int mode;
};
SMK_HIDDEN extern const struct smk__layout_entry smk__initramfs_layout[];
SMK_HIDDEN extern const size_t smk__initramfs_layout_count;

/* The asset for id, or NULL with *err set to -EINVAL (out of range) or -ENOENT (not here). */
SMK_HIDDEN const struct smk_asset *smk__lookup(enum smk_asset_id id, int *err);

/* Decode the asset's blob, calling cb for each chunk; checks the size, and the content by the
 * zstd frame's own checksum or else by SHA-256, at the end (decode.c). */
SMK_HIDDEN int smk__decode(const struct smk_asset *a, smk_write_fn cb, void *ctx);

/* fsync, or F_FULLFSYNC on macOS, whose fsync() does not reach the media. 0 or -errno. */
SMK_HIDDEN int smk__fsync(int fd);
/* Make dirfd's entries (a new or renamed name) durable; file systems that cannot are 0. */
SMK_HIDDEN int smk__sync_dir(int dirfd);

/* Map a failed libarchive call: -ENOMEM for an allocation failure, else -EBADMSG. */
struct archive;
SMK_HIDDEN int smk__archive_error(struct archive *ar);

/* Write all of buf to fd, retrying short writes and EINTR. Returns 0 or -errno. */
SMK_HIDDEN int smk__write_all(int fd, const void *buf, size_t len);

/* A file being written next to its final name, published atomically by smk__atomic_commit. */
struct smk__atomic {
    int dirfd;
    int fd;
    bool named;        /* a named temporary exists (no O_TMPFILE) and must be removed on abort */
    bool own_dirfd;    /* dirfd was opened by smk__atomic_begin and is closed with t */
    uint32_t host;     /* host identity in temporary names (0: not computed yet) */
    char tmp_name[64]; /* the temporary's name once it has one, relative to dirfd */
    char name[256];    /* final name, relative to dirfd */
};

/*
 * Open a temporary file for path (creating missing parents when flags has SMK_EXTRACT_PARENTS).
 * Fails with -EISDIR if path is a directory, so nothing is written for a hopeless target.
 */
SMK_HIDDEN int smk__atomic_begin(struct smk__atomic *t, const char *path, unsigned int flags);
/* Same, with the directory already open; dirfd is borrowed. */
SMK_HIDDEN int smk__atomic_begin_at(struct smk__atomic *t, int dirfd, const char *name);
/* fchmod to mode, optionally stamp mtime, fsync, then rename over the final name. */
SMK_HIDDEN int smk__atomic_commit(struct smk__atomic *t, unsigned int mode,
                                  const struct timespec *mtime);
/* Discard the temporary file; the final name is untouched. Safe after a failed begin. */
SMK_HIDDEN void smk__atomic_abort(struct smk__atomic *t);

/* mkdir -p dir, creating missing directories with mode. */
SMK_HIDDEN int smk__mkdir_parents(const char *dir, unsigned int mode);

/* Extract asset a to dirfd/name atomically, stamping mtime when non-NULL. */
SMK_HIDDEN int smk__extract_at(const struct smk_asset *a, int dirfd, const char *name,
                               const struct timespec *mtime);

#endif
