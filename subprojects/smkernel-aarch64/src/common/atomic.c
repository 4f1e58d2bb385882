/* GENERATED from smkernel-x86_64/src/common/atomic.c by sync-shared sha256:b2edab505979 */
/*
 * Atomic file replacement: write a temporary file in the target's directory, fsync it, publish
 * it under the target's name. SPDX-License-Identifier: MIT
 *
 * On Linux the temporary is an O_TMPFILE, which has no name while it is written, so a killed
 * process leaves nothing behind. A new target is published with one linkat() straight to its
 * name. Replacing an existing target needs rename(), hence a name for the temporary for the few
 * microseconds between linkat() and rename(); where O_TMPFILE is missing the named temporary
 * lives for the whole write. Either way a writer killed at the wrong moment leaves a
 * ".smk-tmp-<host>-<pid>-<random>" file behind, and the next successful write in that
 * directory removes it: <host> says which machine boot and PID namespace wrote it, so only
 * temporaries of processes that are provably gone, and owned by this user, are ever removed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TMP_PREFIX ".smk-tmp-"

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

/* FNV-1a, to fold the host identity into a short, fixed-width part of the name. */
static uint32_t fnv1a(uint32_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/*
 * Who may judge a writer's PID: the same machine boot (boot_id) in the same PID namespace.
 * Elsewhere (another host sharing the directory over NFS, another container) a PID that does
 * not exist here may still be alive there. 0 means "unknown": such temporaries are never
 * judged stale.
 */
static uint32_t host_id(void)
{
#ifdef __linux__
    char boot[64] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, boot, sizeof boot - 1) : -1;
    if (fd >= 0)
        close(fd);
    struct stat ns;
    if (n <= 0 || stat("/proc/self/ns/pid", &ns) != 0)
        return 0;
    uint32_t h = fnv1a(2166136261u, boot, (size_t)n);
    h = fnv1a(h, &ns.st_dev, sizeof ns.st_dev);
    h = fnv1a(h, &ns.st_ino, sizeof ns.st_ino);
#else
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0)
        return 0;
    uint32_t h = fnv1a(2166136261u, host, strlen(host));
#endif
    return h ? h : 1;
}

/* A name no other writer picks: host, pid and entropy, retried on EEXIST by the callers. */
static void temp_name(char *out, size_t size, uint32_t host)
{
    unsigned long long r = 0;
    if (getentropy(&r, sizeof r) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ull ^ (unsigned long long)ts.tv_sec;
    }
    snprintf(out, size, TMP_PREFIX "%08x-%ld-%016llx", (unsigned)host, (long)getpid(), r);
}

/*
 * Remove temporaries that writers killed between linkat() and rename() left in dirfd: only
 * ours (this host and PID namespace, this user, a plain file with one link) and only when their
 * writer no longer exists. Best effort: errors are ignored, the caller's write succeeded.
 */
static void remove_stale_temps(int dirfd, uint32_t host)
{
    if (host == 0)
        return;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        unsigned int h;
        long pid;
        int used = 0;
        if (strncmp(e->d_name, TMP_PREFIX, sizeof TMP_PREFIX - 1) != 0 ||
            sscanf(e->d_name + sizeof TMP_PREFIX - 1, "%8x-%ld-%*16[0-9a-f]%n", &h, &pid, &used) <
                2 ||
            used == 0 || e->d_name[sizeof TMP_PREFIX - 1 + (size_t)used] != '\0')
            continue;
        if (h != host || pid <= 0 || pid == (long)getpid() || pid > INT_MAX)
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive, or someone else's: not ours to judge */
        struct stat st;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_uid == geteuid() && st.st_nlink == 1)
            unlinkat(dirfd, e->d_name, 0);
    }
    closedir(d);
}

static void reset(struct smk__atomic *t)
{
    t->dirfd = -1;
    t->fd = -1;
    t->named = false;
    t->own_dirfd = false;
    t->host = 0;
    t->tmp_name[0] = '\0';
    t->name[0] = '\0';
}

static void new_temp_name(struct smk__atomic *t)
{
    if (t->host == 0)
        t->host = host_id();
    temp_name(t->tmp_name, sizeof t->tmp_name, t->host);
}

int smk__atomic_begin_at(struct smk__atomic *t, int dirfd, const char *name)
{
    reset(t);
    size_t len = strlen(name);
    if (len >= sizeof t->name)
        return -ENAMETOOLONG;
    memcpy(t->name, name, len + 1);
    t->dirfd = dirfd;

    /*
     * Refuse hopeless or dangerous targets up front rather than after writing the asset: a
     * directory, and special files (a FIFO, socket or device node is never what a caller
     * meant to replace with an asset). A symlink is fine: rename() replaces the link itself.
     */
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode))
            return -EISDIR;
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            return -EEXIST;
    }

#ifdef O_TMPFILE
    t->fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (t->fd >= 0)
        return 0;
    /* Only "this file system cannot" falls back to a named temporary; real errors are final. */
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -errno;
#endif
    for (int tries = 0; tries < 100; tries++) {
        new_temp_name(t);
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

/* Give the O_TMPFILE t->fd the name newname in t->dirfd (never replacing an existing one). */
static int link_fd(const struct smk__atomic *t, const char *newname)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", t->fd);
    if (linkat(AT_FDCWD, proc, t->dirfd, newname, AT_SYMLINK_FOLLOW) == 0)
        return 0;
    int e = errno;
    /* No /proc: AT_EMPTY_PATH does the same where the caller may use it. */
    if (e == ENOENT && linkat(t->fd, "", t->dirfd, newname, AT_EMPTY_PATH) == 0)
        return 0;
    return e == ENOENT ? -errno : -e;
}

/*
 * Publish the complete O_TMPFILE. A new target gets it with one linkat(): no temporary name
 * ever exists. An existing target (EEXIST) gets a temporary name (t->named) for the caller to
 * rename() over it.
 */
static int publish_tmpfile(struct smk__atomic *t)
{
    int r = link_fd(t, t->name);
    if (r != -EEXIST)
        return r;
    for (int tries = 0; tries < 100; tries++) {
        new_temp_name(t);
        r = link_fd(t, t->tmp_name);
        if (r == 0) {
            t->named = true;
            return 0;
        }
        if (r != -EEXIST)
            return r;
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
        r = publish_tmpfile(t); /* an O_TMPFILE: linked to the target, or named for rename */
    if (r == 0 && t->named && renameat(t->dirfd, t->tmp_name, t->dirfd, t->name) != 0)
        r = -errno;
    if (r == 0)
        t->named = false; /* the temporary name is gone: it is the target now */
    if (r == 0)
        remove_stale_temps(t->dirfd, t->host ? t->host : host_id());
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
