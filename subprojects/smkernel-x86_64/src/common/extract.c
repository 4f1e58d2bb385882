/* Extraction of an asset to a file. SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>

#include "internal.h"

struct sink {
    int fd;
    off_t written, queued; /* bytes written; bytes already handed to writeback */
};

/*
 * Write a decoded chunk, and on Linux start writeback of every full MiB behind it at once
 * (sync_file_range without waiting): the disk works while the next chunks decode, so the
 * fsync before publishing finds little left to do. Errors surface at that fsync.
 */
static int to_fd(void *ctx, const void *data, size_t len)
{
    struct sink *s = ctx;
    int r = smk__write_all(s->fd, data, len);
    if (r != 0)
        return r;
    s->written += (off_t)len;
#ifdef SYNC_FILE_RANGE_WRITE
    if (s->written - s->queued >= (off_t)SMK_CHUNK) {
        sync_file_range(s->fd, s->queued, s->written - s->queued, SYNC_FILE_RANGE_WRITE);
        s->queued = s->written;
    }
#endif
    return 0;
}

/* The blob is checked by smk__decode before commit, so a corrupt blob never replaces path. */
static int fill_and_commit(const struct smk_asset *a, struct smk__atomic *t,
                           const struct timespec *mtime)
{
    struct sink sink = {.fd = t->fd};
    int r = smk__decode(a, to_fd, &sink);
    if (r == 0)
        return smk__atomic_commit(t, a->mode, mtime);
    smk__atomic_abort(t);
    return r;
}

int smk__extract_at(const struct smk_asset *a, int dirfd, const char *name,
                    const struct timespec *mtime)
{
    struct smk__atomic t;
    int r = smk__atomic_begin_at(&t, dirfd, name);
    if (r != 0) {
        smk__atomic_abort(&t);
        return r;
    }
    return fill_and_commit(a, &t, mtime);
}

int smk_extract(enum smk_asset_id id, const char *path, unsigned int flags)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (flags & ~SMK_EXTRACT_PARENTS)
        return -EINVAL;
    struct smk__atomic t;
    int r = smk__atomic_begin(&t, path, flags);
    if (r != 0)
        return r;
    return fill_and_commit(a, &t, NULL);
}

int smk_extract_kernel_to(const char *path)
{
    return smk_extract(SMK_ASSET_KERNEL, path, 0);
}

int smk_extract_kernel_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_KERNEL, path, SMK_EXTRACT_PARENTS);
}

int smk_extract_supermachine_agent_to(const char *path)
{
    return smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, path, 0);
}

int smk_extract_supermachine_agent_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, path, SMK_EXTRACT_PARENTS);
}
