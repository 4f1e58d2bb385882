/* GENERATED from smkernel-x86_64/src/common/extract.c by sync-shared sha256:7bb836c7ae92 */
/* Extraction of an asset to a file. SPDX-License-Identifier: MIT */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sink {
    int fd;
    off_t written, queued; /* bytes written; bytes already handed to writeback */
};

/* Writeback starts behind every this many bytes written: small enough that the assets under a
 * MiB (the agent, init-oci) reach the disk while they decode too (measured: 256 KiB beat 1 MiB
 * and 128 KiB). */
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

/*
 * Decoding and writing overlap: the calling thread decodes into a few fixed slots while a writer
 * thread writes the filled ones in order (write() and the writeback above: about half as much
 * CPU as the decoding), so an extraction costs about the longer of the two instead of their sum,
 * in SLOTS x SLOT_SIZE of memory whatever the asset's size. That needs a CPU for each thread.
 * The decoder never waits for a writer the scheduler has not run: with every slot full, or the
 * decoding done, it writes the oldest slot itself. After PROBE_BYTES it checks once whether the
 * writer really runs beside it (probe below); if not, the copies and thread switches would only
 * add time, and it finishes alone, writing straight from the decoder's buffer as the serial path
 * does. Writes stay write() calls in file order, one at a time.
 * Assets under PIPELINE_MIN are decoded and written in turn: the probe could not judge them, and
 * they are the ones with the least to write (the agent and init-oci, 0.7-0.8 MB).
 */
#define SLOTS 4
#define SLOT_SIZE (128u * 1024)
#define PIPELINE_MIN (1024u * 1024)
#define PROBE_BYTES (1024u * 1024)
#define PROBE_SHARE 0.85
/* The writer only calls write() and sync_file_range(): a small stack whatever the caller's
 * default thread attributes say. */
#define WRITER_STACK (128u * 1024)

struct pipeline {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned char *slots;
    size_t len[SLOTS];
    unsigned int head, tail, queued; /* next slot to fill, next to write, filled and not taken */
    bool writing;                    /* a thread is writing slot tail */
    unsigned int written_by_writer;  /* slots the writer thread has written */
    bool writer_waiting;             /* the writer thread sleeps until a slot is queued */
    bool eof;                        /* nothing more will be queued */
    int err;                         /* the first error of either side; stops both */
    struct sink sink;                /* used by whichever thread is writing */
    /* The decoder's alone: */
    size_t fill;                 /* bytes in slot head so far */
    uint64_t decoded;            /* bytes decoded so far */
    bool probed;                 /* the share check is done */
    bool alone;                  /* the decoder writes everything itself from now on */
    struct timespec wall0, cpu0; /* when decoding started, by the clock and by its CPU time */
};

/* Called with the lock held, a slot queued and no write under way: write slot tail (the lock
 * released meanwhile) and free it. */
static void write_oldest(struct pipeline *p, bool writer)
{
    unsigned int i = p->tail;
    p->writing = true;
    p->queued--;
    pthread_mutex_unlock(&p->lock);
    int r = to_fd(&p->sink, p->slots + (size_t)i * SLOT_SIZE, p->len[i]);
    pthread_mutex_lock(&p->lock);
    if (r != 0 && p->err == 0)
        p->err = r;
    p->tail = (i + 1) % SLOTS;
    p->writing = false;
    p->written_by_writer += writer;
    pthread_cond_broadcast(&p->cond);
}

static void *writer_thread(void *arg)
{
    struct pipeline *p = arg;
    pthread_mutex_lock(&p->lock);
    while (p->err == 0 && !(p->eof && p->queued == 0)) {
        if (p->queued > 0 && !p->writing) {
            write_oldest(p, true);
        } else {
            p->writer_waiting = p->queued == 0;
            pthread_cond_wait(&p->cond, &p->lock);
            p->writer_waiting = false;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* Queue the slot being filled (if any). Then, until a slot is free (drain: until every slot is
 * written), write the oldest one, or wait while the writer thread writes it. Returns the first
 * error of either side, which makes smk__decode stop. */
static int queue_slot(struct pipeline *p, bool drain)
{
    pthread_mutex_lock(&p->lock);
    if (p->fill > 0 && p->err == 0) {
        p->len[p->head] = p->fill;
        p->head = (p->head + 1) % SLOTS;
        p->queued++;
        if (p->writer_waiting)
            pthread_cond_signal(&p->cond);
    }
    while (p->err == 0 && (drain ? p->queued + p->writing > 0 : p->queued + p->writing == SLOTS)) {
        if (p->queued > 0 && !p->writing)
            write_oldest(p, false);
        else
            pthread_cond_wait(&p->cond, &p->lock);
    }
    int r = p->err;
    pthread_mutex_unlock(&p->lock);
    p->fill = 0;
    return r;
}

static double seconds_since(clockid_t clock, const struct timespec *t0)
{
    struct timespec t;
    if (clock_gettime(clock, &t) != 0)
        return -1;
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * Is the writer running beside the decoder? Not if the decoder had a CPU for less than
 * PROBE_SHARE of the time since it started (the writer, or other load, takes turns with it on
 * one CPU), nor if the decoder has had to write most of the slots so far itself (the writer gets
 * little of another CPU). Then drain the slots and go on alone.
 */
static int probe(struct pipeline *p)
{
    p->probed = true;
    double wall = seconds_since(CLOCK_MONOTONIC, &p->wall0);
    double cpu = seconds_since(CLOCK_THREAD_CPUTIME_ID, &p->cpu0);
    pthread_mutex_lock(&p->lock);
    unsigned int by_writer = p->written_by_writer;
    pthread_mutex_unlock(&p->lock);
    unsigned int slots = (unsigned int)(p->decoded / SLOT_SIZE);
    if (wall > 0 && cpu >= PROBE_SHARE * wall && 2 * by_writer + SLOTS >= slots)
        return 0;
    int r = queue_slot(p, true);
    p->alone = r == 0;
    return r;
}

/* The decoder's callback: copy each decoded chunk into slots (libarchive reuses its buffer). */
static int to_slots(void *ctx, const void *data, size_t len)
{
    struct pipeline *p = ctx;
    if (!p->probed && p->decoded >= PROBE_BYTES) {
        int r = probe(p);
        if (r != 0)
            return r;
    }
    p->decoded += len;
    if (p->alone)
        return to_fd(&p->sink, data, len);
    const unsigned char *d = data;
    while (len > 0) {
        if (p->fill == SLOT_SIZE) {
            int r = queue_slot(p, false);
            if (r != 0)
                return r;
        }
        size_t n = len < SLOT_SIZE - p->fill ? len : SLOT_SIZE - p->fill;
        memcpy(p->slots + (size_t)p->head * SLOT_SIZE + p->fill, d, n);
        p->fill += n;
        d += n;
        len -= n;
    }
    return 0;
}

/* Start the writer thread; false (nothing to undo) if its attributes or the thread cannot be had. */
static bool start_writer(struct pipeline *p, pthread_t *writer)
{
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0)
        return false;
    bool ok = pthread_attr_setstacksize(&attr, WRITER_STACK) == 0 &&
              pthread_create(writer, &attr, writer_thread, p) == 0;
    pthread_attr_destroy(&attr);
    return ok;
}

/*
 * Decode a into fd beside a writer thread. Returns 0 or the first error of either side, or 1
 * when the pipeline cannot start (no memory for the slots, no thread, no clock): nothing has
 * been decoded or written then, and the caller takes the serial path.
 */
static int decode_pipelined(const struct smk_asset *a, int fd)
{
    struct pipeline p = {.sink = {.fd = fd}};
    if (clock_gettime(CLOCK_MONOTONIC, &p.wall0) != 0 ||
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &p.cpu0) != 0)
        return 1;
    if (!(p.slots = malloc((size_t)SLOTS * SLOT_SIZE)))
        return 1;
    int r = 1;
    if (pthread_mutex_init(&p.lock, NULL) == 0) {
        if (pthread_cond_init(&p.cond, NULL) == 0) {
            pthread_t writer;
            if (start_writer(&p, &writer)) {
                int dr = smk__decode(a, to_slots, &p);
                if (dr == 0 && !p.alone)
                    dr = queue_slot(&p, true);
                pthread_mutex_lock(&p.lock);
                if (dr != 0 && p.err == 0)
                    p.err = dr;
                p.eof = true;
                pthread_cond_broadcast(&p.cond);
                pthread_mutex_unlock(&p.lock);
                pthread_join(writer, NULL);
                r = p.err;
            }
            pthread_cond_destroy(&p.cond);
        }
        pthread_mutex_destroy(&p.lock);
    }
    free(p.slots);
    return r;
}

/* The blob is checked by smk__decode before commit, so a corrupt blob never replaces path. */
static int fill_and_commit(const struct smk_asset *a, struct smk__atomic *t,
                           const struct timespec *mtime)
{
    int r = a->size >= PIPELINE_MIN ? decode_pipelined(a, t->fd) : 1;
    if (r == 1) {
        struct sink sink = {.fd = t->fd};
        r = smk__decode(a, to_fd, &sink);
    }
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
