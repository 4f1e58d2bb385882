/*
 * WRITE_FILE and READ_FILE, and the file primitives guestctl.c shares.
 *
 * The agent runs as root and the paths it is given live in a guest whose
 * workload may be hostile, so the last component of a path is never trusted:
 * a write replaces whatever link is there instead of following it, and only
 * regular files are ever opened through a symlink.
 */
#define _GNU_SOURCE
#include "agent.h"
#include "guestctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

int smka_is_pseudo_fs(int fd)
{
    /* Kernel interface file systems (values from <linux/magic.h>): their
     * files must be written in place, a temporary file cannot be created or
     * renamed there. */
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0)
        return 0;
    switch ((unsigned long)sfs.f_type) {
    case 0x9fa0:     /* proc */
    case 0x62656572: /* sysfs */
    case 0x27e0eb:   /* cgroup */
    case 0x63677270: /* cgroup2 */
    case 0x64626720: /* debugfs */
    case 0x74726163: /* tracefs */
    case 0x73636673: /* securityfs */
    case 0x62656570: /* configfs */
        return 1;
    default:
        return 0;
    }
}

/* ".smk-" and 12 random letters: short, so that a target name of up to
 * NAME_MAX bytes still leaves room for it. */
static int create_temp_at(int dirfd, char name[32])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    for (int attempt = 0; attempt < 64; attempt++) {
        uint8_t rnd[12];
        /* GRND_INSECURE never blocks, even before the CRNG is seeded (early
         * boot). The name need not be secret: O_EXCL | O_NOFOLLOW turn a
         * collision, or a name planted in advance, into another attempt. */
        if (getrandom(rnd, sizeof(rnd), GRND_INSECURE) != (ssize_t)sizeof(rnd) &&
            getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
                         ((uint64_t)getpid() << 20) ^ (uint64_t)attempt * 0x9e3779b97f4a7c15u;
            for (size_t i = 0; i < sizeof(rnd); i++, x = x * 6364136223846793005u + 1)
                rnd[i] = (uint8_t)(x >> 56);
        }
        memcpy(name, ".smk-", 5);
        for (size_t i = 0; i < sizeof(rnd); i++)
            name[5 + i] = alphabet[rnd[i] & 31];
        name[5 + sizeof(rnd)] = '\0';
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd < 0 ? -errno : fd;
    }
    return -EEXIST;
}

/* Only regular files are written in place: opening anything else can block
 * (a FIFO) or have side effects (a device). Nothing is created. */
static int write_in_place_at(int dirfd, const char *name, const void *data, size_t len)
{
    int fd =
        openat(dirfd, name, O_WRONLY | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    struct stat st;
    int r = fstat(fd, &st) < 0 ? -errno : S_ISREG(st.st_mode) ? 0 : -EEXIST;
    if (r == 0)
        r = smka_write_all(fd, data, len, -1);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r;
}

int smka_replace_file_at(int dirfd, const char *name, unsigned mode, const void *data, size_t len)
{
    if (!name || !*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
        mode > 07777 || (!data && len))
        return -EINVAL;
    if (strlen(name) > NAME_MAX)
        return -ENAMETOOLONG;
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISDIR(st.st_mode))
            return -EISDIR;
        /* A device node, FIFO or socket is neither opened nor replaced; a
         * symlink is replaced, whatever it points to. */
        if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
            return -EEXIST;
    } else if (errno != ENOENT) {
        return -errno;
    }
    if (smka_is_pseudo_fs(dirfd))
        return write_in_place_at(dirfd, name, data, len);

    char tmp[32];
    int fd = create_temp_at(dirfd, tmp);
    if (fd < 0)
        return fd;
    int r = smka_write_all(fd, data, len, -1);
    if (r == 0 && fchmod(fd, (mode_t)mode) < 0)
        r = -errno;
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    /* rename() replaces a symlink at the target itself, never its target. */
    if (r == 0 && renameat(dirfd, tmp, dirfd, name) < 0)
        r = -errno;
    if (r < 0) {
        unlinkat(dirfd, tmp, 0);
        /* A file with something mounted on it (a bind-mounted
         * /etc/resolv.conf) cannot be renamed over: write it in place. */
        if (r == -EBUSY)
            r = write_in_place_at(dirfd, name, data, len);
        return r;
    }
    /* The rename is durable only once the directory is. The new contents
     * are in place by now, so only a real I/O error is reported (some file
     * systems cannot sync a directory: EINVAL, EOPNOTSUPP). */
    if (fsync(dirfd) < 0 && errno == EIO)
        return -EIO;
    return 0;
}

/* Opens name again and checks it is still the inode st describes. */
static int reopen_same(int dirfd, const char *name, const struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat now;
    if (fstat(fd, &now) < 0 || now.st_dev != st->st_dev || now.st_ino != st->st_ino) {
        close(fd);
        return -EAGAIN; /* replaced under us */
    }
    return fd;
}

int smka_open_regular_at(int dirfd, const char *name)
{
    /* O_PATH resolves the name without opening what it names (no device
     * open, no FIFO wait); the real open then goes through the descriptor's
     * /proc link, so it opens exactly the inode that was checked. */
    int p = openat(dirfd, name, O_PATH | O_CLOEXEC);
    if (p < 0)
        return -errno;
    struct stat st;
    int r = fstat(p, &st) < 0     ? -errno
            : S_ISREG(st.st_mode) ? 0
            : S_ISDIR(st.st_mode) ? -EISDIR
                                  : -EEXIST;
    if (r == 0) {
        char link[64];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", p);
        r = open(link, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        /* The descriptor holds the inode, so ENOENT means no /proc: open
         * by name (non-blocking, so a FIFO swapped in cannot stall it) and
         * make sure it is the file that was checked. */
        if (r < 0)
            r = errno == ENOENT ? reopen_same(dirfd, name, &st) : -errno;
    }
    close(p);
    return r;
}

static int fail(char *why, size_t why_len, int err, const char *what, const char *path)
{
    snprintf(why, why_len, "%s %s: %s", what, path, strerror(err));
    return -err;
}

static int describe(char *why, size_t why_len, int err, const char *what, const char *path)
{
    if (err == EEXIST) {
        snprintf(why, why_len, "%s %s: not a regular file (device, FIFO or socket): refused", what,
                 path);
        return -err;
    }
    return fail(why, why_len, err, what, path);
}

int smka_write_file(const char *path, uint32_t mode, const uint8_t *data, size_t len, char *why,
                    size_t why_len)
{
    if (path[0] != '/')
        return fail(why, why_len, EINVAL, "write", path);
    size_t n = strlen(path);
    if (n >= PATH_MAX)
        return fail(why, why_len, ENAMETOOLONG, "write", path);
    /* "/", "/dir/", "/dir/." name a directory, not a file to replace. */
    const char *slash = strrchr(path, '/'), *base = slash + 1;
    if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        return fail(why, why_len, EISDIR, "write", path);

    char dir[PATH_MAX] = "/";
    if (slash > path) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    /* Symlinks among the parent directories are followed (Debian's /var/run
     * and /lib are links); only the last component is never followed. */
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return fail(why, why_len, errno, "open directory of", path);
    int r = smka_replace_file_at(dirfd, base, mode, data, len);
    close(dirfd);
    return r < 0 ? describe(why, why_len, -r, "write", path) : 0;
}

/* A path whose last component is not a symlink is opened as named, whatever
 * it is: /dev/kmsg and FIFOs are read non-blocking. Through a symlink, only
 * a regular file: a link planted by the workload must not make the agent
 * open a device (opening /dev/watchdog arms it). */
static int open_for_read(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
    if (fd >= 0)
        return fd;
    if (errno != ELOOP)
        return -errno;
    return smka_open_regular_at(AT_FDCWD, path);
}

int smka_read_fd(int fd, size_t max, uint8_t **data, size_t *len, int *truncated)
{
    /* One byte past the cap tells a file of exactly the cap from a longer one. */
    size_t limit = max + 1, cap = 65536, n = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0)
        cap = (size_t)st.st_size + 1;
    if (cap > limit)
        cap = limit;
    uint8_t *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err && n < limit) {
        if (n == cap) {
            size_t ncap = cap * 2 < limit ? cap * 2 : limit;
            uint8_t *p = realloc(buf, ncap);
            if (!p) {
                err = ENOMEM;
                break;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        /* A non-blocking source with nothing more right now (/dev/kmsg, a
         * FIFO) ends the read. */
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0)
            err = errno;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    if (err) {
        free(buf);
        return -err;
    }
    *truncated = n > max;
    *len = *truncated ? max : n;
    *data = buf;
    return 0;
}

int smka_read_file(const char *path, uint8_t **data, size_t *len, int *truncated, char *why,
                   size_t why_len)
{
    int fd = open_for_read(path);
    if (fd < 0) {
        if (fd == -EEXIST) {
            snprintf(why, why_len, "open %s: a symlink to a device, FIFO or socket is not followed",
                     path);
            return -ELOOP;
        }
        return fail(why, why_len, -fd, "open", path);
    }
    int r = smka_read_fd(fd, SMK_MAX_DATA, data, len, truncated);
    close(fd);
    return r < 0 ? fail(why, why_len, -r, "read", path) : 0;
}
