/*
 * Atomic, durable file replacement: write a temporary file in the target's directory, fsync it,
 * publish it under the target's name, fsync the directory. SPDX-License-Identifier: MIT
 *
 * On Linux the temporary is an O_TMPFILE, which has no name while it is written, so a killed
 * process leaves nothing behind. A new target is published with one linkat() straight to its
 * name. Replacing an existing target needs rename(), hence a name for the temporary for the few
 * microseconds between linkat() and rename(); where O_TMPFILE is missing the named temporary
 * lives for the whole write. Either way a writer killed at the wrong moment leaves a
 * ".smk-tmp-<host>-<pid>-<random><tag>" file behind, and a later successful write in that
 * directory removes it: <host> says which machine boot and PID namespace wrote it, and <tag>
 * binds the name to its directory, so only temporaries this library provably wrote, whose
 * writer is provably gone and which this user owns, are ever removed.
 */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#if defined(__APPLE__) || defined(__linux__)
#include <sys/random.h> /* getentropy */
#endif

/* The portable build must see what macOS sees: no Linux-only interface. */
#if defined(SMK_PORTABLE) && (defined(O_TMPFILE) || defined(AT_EMPTY_PATH))
#error "SMK_PORTABLE build sees Linux-only interfaces: a system header was included first"
#endif

#define TMP_PREFIX ".smk-tmp-"

/*
 * A sweep reads at most this many directory entries: a directory shared with many other files
 * costs every write a bounded amount, not one stat per name in it.
 */
#define SWEEP_MAX_ENTRIES 1024

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

int smk__fsync(int fd)
{
#if defined(__APPLE__) && defined(F_FULLFSYNC)
    /* macOS fsync() leaves the data in the drive's cache; F_FULLFSYNC flushes it to the media.
     * File systems that do not support it (some network ones) fall back to fsync(). */
    if (fcntl(fd, F_FULLFSYNC) == 0)
        return 0;
#endif
    return fsync(fd) == 0 ? 0 : -errno;
}

int smk__sync_dir(int dirfd)
{
    int r = smk__fsync(dirfd);
    /* Some file systems cannot sync a directory (EINVAL, EROFS): their entries are then as
     * durable as they make them, and nothing we can do changes that. */
    return r == -EINVAL || r == -EROFS || r == -ENOTSUP ? 0 : r;
}

/* fsync the directory that holds path's last component (created there just now). */
static int sync_parent_of(const char *path, size_t len)
{
    char dir[PATH_MAX];
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != '/')
        cut--;
    if (cut == 0) {
        strcpy(dir, ".");
    } else {
        while (cut > 1 && path[cut - 1] == '/')
            cut--;
        memcpy(dir, path, cut);
        dir[cut] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = smk__sync_dir(fd);
    close(fd);
    return r;
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
        if (mkdir(buf, (mode_t)mode) == 0) {
            /* The new directory's entry must survive a power cut as the files in it will. */
            int r = sync_parent_of(buf, i);
            if (r != 0)
                return r;
        } else {
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
#if SMK_LINUX
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

/*
 * The tag that binds a temporary's name to the directory it was made in: a file that merely
 * looks like one of ours (a caller's, or one copied from elsewhere) fails it. It is known
 * before the file exists, so a temporary has its final name from its first moment.
 */
static uint32_t tag_of(uint32_t host, long pid, uint32_t random, const struct stat *dir)
{
    uint64_t dev = (uint64_t)dir->st_dev, ino = (uint64_t)dir->st_ino;
    uint32_t h = fnv1a(2166136261u, &host, sizeof host);
    h = fnv1a(h, &pid, sizeof pid);
    h = fnv1a(h, &random, sizeof random);
    h = fnv1a(h, &dev, sizeof dev);
    return fnv1a(h, &ino, sizeof ino);
}

static uint32_t random32(void)
{
    uint32_t r = 0;
    if (getentropy(&r, sizeof r) != 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = (uint32_t)((unsigned long long)ts.tv_nsec * 0x9E3779B97F4A7C15ull >> 32) ^
            (uint32_t)ts.tv_sec;
    }
    return r;
}

/* A name no other writer picks (host, pid, entropy; callers retry on EEXIST), tagged with the
 * directory it is made in. */
static void temp_name(char *out, size_t size, uint32_t host, const struct stat *dir)
{
    long pid = (long)getpid();
    uint32_t r = random32();
    snprintf(out, size, TMP_PREFIX "%08x-%ld-%08x%08x", (unsigned)host, pid, (unsigned)r,
             (unsigned)tag_of(host, pid, r, dir));
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Exactly n lowercase hex digits at s, into *out. */
static bool parse_hex(const char *s, int n, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int d = hex_digit(s[i]);
        if (d < 0)
            return false;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return true;
}

/*
 * The parts of a name temp_name() made, or false. Strict: the prefix, 8 lowercase hex digits,
 * '-', a decimal PID without sign, space or leading zero, '-', 16 lowercase hex digits, end.
 */
static bool parse_temp_name(const char *name, uint32_t *host, long *pid, uint32_t *random,
                            uint32_t *tag)
{
    if (strncmp(name, TMP_PREFIX, sizeof TMP_PREFIX - 1) != 0)
        return false;
    const char *p = name + sizeof TMP_PREFIX - 1;
    if (!parse_hex(p, 8, host) || p[8] != '-')
        return false;
    p += 9;
    if (*p < '1' || *p > '9')
        return false;
    long v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (digits == 10)
            return false;
        v = v * 10 + (*p - '0');
    }
    if (*p != '-' || v > INT_MAX)
        return false;
    *pid = v;
    p++;
    return parse_hex(p, 8, random) && parse_hex(p + 8, 8, tag) && p[16] == '\0';
}

/* Is dirfd/name a temporary this library wrote, whose writer is provably gone? */
static bool is_stale_temp(int dirfd, const struct stat *dir, const char *name, uint32_t host)
{
    uint32_t h, random, tag;
    long pid;
    if (host == 0 || !parse_temp_name(name, &h, &pid, &random, &tag))
        return false;
    if (h != host || pid == (long)getpid())
        return false;
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
        st.st_uid != geteuid() || st.st_nlink != 1 || tag != tag_of(h, pid, random, dir))
        return false;
    /* Alive, or someone else's process: not ours to judge. */
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/*
 * Remove temporaries that writers killed between linkat() and rename() left in dirfd: only
 * ours (see is_stale_temp) and only when their writer no longer exists; at most
 * SWEEP_MAX_ENTRIES names are read. Best effort: errors are ignored, the caller's write
 * succeeded.
 */
static void remove_stale_temps(int dirfd, uint32_t host)
{
    struct stat dir;
    if (host == 0 || fstat(dirfd, &dir) != 0)
        return;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return;
    }
    const struct dirent *e;
    for (int seen = 0; seen < SWEEP_MAX_ENTRIES && (e = readdir(d)) != NULL; seen++)
        if (e->d_name[0] == '.' && is_stale_temp(dirfd, &dir, e->d_name, host))
            unlinkat(dirfd, e->d_name, 0);
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

static int new_temp_name(struct smk__atomic *t)
{
    struct stat dir;
    if (fstat(t->dirfd, &dir) != 0)
        return -errno;
    if (t->host == 0)
        t->host = host_id();
    temp_name(t->tmp_name, sizeof t->tmp_name, t->host, &dir);
    return 0;
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

#if SMK_LINUX && defined(O_TMPFILE)
    t->fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (t->fd >= 0)
        return 0;
    /* Only "this file system cannot" falls back to a named temporary; real errors are final. */
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -errno;
#endif
    for (int tries = 0; tries < 100; tries++) {
        int r = new_temp_name(t);
        if (r != 0)
            return r;
        t->fd =
            openat(dirfd, t->tmp_name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
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

#if SMK_LINUX && defined(O_TMPFILE)
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
        r = new_temp_name(t);
        if (r != 0)
            return r;
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
#endif

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
    if (r == 0)
        r = smk__fsync(t->fd);
#if SMK_LINUX && defined(O_TMPFILE)
    if (r == 0 && !t->named)
        r = publish_tmpfile(t); /* an O_TMPFILE: linked to the target, or named for rename */
#endif
    if (r == 0 && t->named && renameat(t->dirfd, t->tmp_name, t->dirfd, t->name) != 0)
        r = -errno;
    if (r == 0)
        t->named = false; /* the temporary name is gone: it is the target now */
    /* The new name must reach the disk too, or a power cut brings back the old file (or none). */
    if (r == 0)
        r = smk__sync_dir(t->dirfd);
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
