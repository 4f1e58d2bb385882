/* GENERATED from smkernel-x86_64/src/common/extract.c by sync-shared sha256:99de2b7f83a3 */
/* Extraction of an asset to a file. SPDX-License-Identifier: MIT */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sink {
    int fd;
    off_t written, queued; /* bytes written; bytes already handed to writeback */
};

/* Writeback starts behind every this many bytes written: small enough that the assets under a
 * MiB (the agent, init-oci) reach the disk while they decode too (measured: 256 KiB beat 1 MiB,
 * 512 KiB and 128 KiB). Decoding and writing stay on one thread: a second thread that decodes
 * while the first writes measured slower here, 9.9-11.5 ms against 9.5-9.9 ms for every x86_64
 * asset, because on a machine with a CPU or two to spare the copy between them and the hand-off
 * cost more than the overlap gains (docs/BENCHMARKS.md). */
#define WRITEBACK_STEP (256u * 1024)

/*
 * Write a decoded chunk, and on Linux start writeback of what is behind it at once
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
#if SMK_LINUX && defined(SYNC_FILE_RANGE_WRITE)
    if (s->written - s->queued >= (off_t)WRITEBACK_STEP) {
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

/* Each worker's stack: what smk_extract() needs with a wide margin, whatever the caller's
 * RLIMIT_STACK or default thread attributes say. */
#define WORKER_STACK (256u * 1024)

struct job {
    const struct smk_asset *a;
    char *path;
    pthread_t thread;
    bool started;
    int result;
};

static void *run_job(void *arg)
{
    struct job *j = arg;
    j->result = smk_extract(j->a->id, j->path, 0);
    return NULL;
}

/* Errors that say "not now, not this many at once", not "this asset cannot be written". */
static bool resource_error(int r)
{
    return r == -EMFILE || r == -ENFILE || r == -ENOMEM || r == -EAGAIN;
}

int smk_extract_all(const char *dir, unsigned int flags)
{
    if (!dir || !*dir || (flags & ~SMK_EXTRACT_PARENTS))
        return -EINVAL;
    if (flags & SMK_EXTRACT_PARENTS) {
        int r = smk__mkdir_parents(dir, 0755);
        if (r != 0)
            return r;
    }
    size_t n = smk__asset_count;
    struct job *jobs = calloc(n, sizeof *jobs);
    if (!jobs)
        return -ENOMEM;
    int first = 0;
    for (size_t i = 0; i < n && first == 0; i++) {
        jobs[i].a = smk__asset_list[i];
        size_t len = strlen(dir) + 1 + strlen(jobs[i].a->file_name) + 1;
        if (len > PATH_MAX)
            first = -ENAMETOOLONG;
        else if (!(jobs[i].path = malloc(len)))
            first = -ENOMEM;
        else
            snprintf(jobs[i].path, len, "%s/%s", dir, jobs[i].a->file_name);
    }
    if (first == 0) {
        /* Each asset on its own thread: decoding is CPU, writing is I/O, and they overlap.
         * An asset whose thread cannot start runs on the calling thread. */
        pthread_attr_t attr;
        bool attr_ok = pthread_attr_init(&attr) == 0;
        if (attr_ok && pthread_attr_setstacksize(&attr, WORKER_STACK) != 0) {
            pthread_attr_destroy(&attr);
            attr_ok = false;
        }
        for (size_t i = 0; i < n; i++)
            jobs[i].started =
                attr_ok && pthread_create(&jobs[i].thread, &attr, run_job, &jobs[i]) == 0;
        if (attr_ok)
            pthread_attr_destroy(&attr);
        for (size_t i = 0; i < n; i++)
            if (!jobs[i].started)
                run_job(&jobs[i]);
        for (size_t i = 0; i < n; i++)
            if (jobs[i].started)
                pthread_join(jobs[i].thread, NULL);
        /* Too many at once for the descriptors or memory there are: one by one, which needs
         * only what one smk_extract() does. Extraction is atomic, so a retry is safe. */
        for (size_t i = 0; i < n; i++)
            if (resource_error(jobs[i].result))
                run_job(&jobs[i]);
        for (size_t i = 0; i < n && first == 0; i++)
            first = jobs[i].result;
    }
    for (size_t i = 0; i < n; i++)
        free(jobs[i].path);
    free(jobs);
    return first;
}
