/*
 * Atomic file replacement: write a temporary file in the target's directory, fsync it, rename
 * it over the target. On Linux the temporary is an O_TMPFILE, which has no name until it is
 * complete, so a killed process leaves nothing behind. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int smk__write_all(int fd, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int smk__mkdir_parents(const char *dir, unsigned int mode)
{
    char buf[PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, (mode_t)mode) != 0) {
            int e = errno;
            struct stat st;
            if (e != EEXIST)
                return -e;
            if (stat(buf, &st) != 0)
                return -errno;
            if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        }
        buf[i] = saved;
    }
    return 0;
}

/* A name no other writer picks: pid, clock and entropy, retried on EEXIST by the callers. */
static void temp_name(char *out, size_t size)
{
    unsigned long long r = 0;
    if (getentropy(&r, sizeof r) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (unsigned long long)ts.tv_sec;
    }
    snprintf(out, size, ".smk-tmp-%ld-%016llx", (long)getpid(), r);
}

static void reset(struct smk__atomic *t)
{
    t->dirfd = -1;
    t->fd = -1;
    t->named = false;
    t->own_dirfd = false;
    t->tmp_name[0] = '\0';
    t->name[0] = '\0';
}

int smk__atomic_begin_at(struct smk__atomic *t, int dirfd, const char *name)
{
    reset(t);
    size_t len = strlen(name);
    if (len >= sizeof t->name)
        return -ENAMETOOLONG;
    memcpy(t->name, name, len + 1);
    t->dirfd = dirfd;

    /* Refuse a directory target up front rather than after writing the whole asset. */
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return -EISDIR;

#ifdef O_TMPFILE
    t->fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (t->fd >= 0)
        return 0;
    /* Only "this file system cannot" falls back to a named temporary; real errors are final. */
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -errno;
#endif
    for (int tries = 0; tries < 100; tries++) {
        temp_name(t->tmp_name, sizeof t->tmp_name);
        t->fd = openat(dirfd, t->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                       0600);
        if (t->fd >= 0) {
            t->named = true;
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

int smk__atomic_begin(struct smk__atomic *t, const char *path, unsigned int flags)
{
    reset(t);
    if (!path || !*path)
        return -EINVAL;
    size_t len = strlen(path);
    if (len >= PATH_MAX)
        return -ENAMETOOLONG;
    if (path[len - 1] == '/')
        return -EISDIR;

    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *name = slash ? slash + 1 : path;
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -EISDIR;

    if (flags & SMK_EXTRACT_PARENTS) {
        int r = smk__mkdir_parents(dir, 0755);
        if (r != 0)
            return r;
    }
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    int r = smk__atomic_begin_at(t, dirfd, name);
    t->dirfd = dirfd;
    t->own_dirfd = true;
    if (r != 0)
        smk__atomic_abort(t);
    return r;
}

/* Give an O_TMPFILE a temporary name so that rename() can put it over the target. */
static int link_tmpfile(struct smk__atomic *t)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", t->fd);
    for (int tries = 0; tries < 100; tries++) {
        temp_name(t->tmp_name, sizeof t->tmp_name);
        if (linkat(AT_FDCWD, proc, t->dirfd, t->tmp_name, AT_SYMLINK_FOLLOW) == 0) {
            t->named = true;
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return -EEXIST;
}

int smk__atomic_commit(struct smk__atomic *t, unsigned int mode, const struct timespec *mtime)
{
    int r = 0;
    if (fchmod(t->fd, (mode_t)mode) != 0)
        r = -errno;
    if (r == 0 && mtime) {
        struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, *mtime};
        if (futimens(t->fd, times) != 0)
            r = -errno;
    }
    if (r == 0 && fsync(t->fd) != 0)
        r = -errno;
    if (r == 0 && !t->named)
        r = link_tmpfile(t);
    if (r == 0 && renameat(t->dirfd, t->tmp_name, t->dirfd, t->name) != 0)
        r = -errno;
    if (r == 0)
        t->named = false; /* the temporary name is gone: it is the target now */
    smk__atomic_abort(t);
    return r;
}

void smk__atomic_abort(struct smk__atomic *t)
{
    if (t->named && t->dirfd >= 0)
        unlinkat(t->dirfd, t->tmp_name, 0);
    t->named = false;
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
    if (t->own_dirfd && t->dirfd >= 0)
        close(t->dirfd);
    t->dirfd = -1;
    t->own_dirfd = false;
}
