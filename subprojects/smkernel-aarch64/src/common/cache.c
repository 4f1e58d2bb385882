/* GENERATED from smkernel-x86_64/src/common/cache.c by sync-shared sha256:e81fde380c86 */
/* The per-user asset cache behind smk_asset_path() and smk_asset_open(). SPDX-License-Identifier: MIT */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The environment as a setuid or setgid program may trust it: not at all. glibc and musl say
 * so with secure_getenv(); elsewhere issetugid() (BSD, macOS) or differing real and effective
 * ids tell.
 */
static const char *trusted_env(const char *name)
{
#if SMK_LINUX
    return secure_getenv(name);
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
    return issetugid() ? NULL : getenv(name);
#else
    return getuid() != geteuid() || getgid() != getegid() ? NULL : getenv(name);
#endif
}

static int put(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s%s", a, b);
    return n < 0 || (size_t)n >= size ? -ERANGE : 0;
}

int smk_cache_dir(char *buf, size_t buf_size)
{
    if (!buf || buf_size == 0)
        return -EINVAL;
    const char *v = trusted_env("SMKERNEL_CACHE_DIR");
    if (v && *v)
        return put(buf, buf_size, v, "");
    v = trusted_env("XDG_CACHE_HOME");
    if (v && v[0] == '/')
        return put(buf, buf_size, v, "/smkernel");
    v = trusted_env("HOME");
    if (v && v[0] == '/')
        return put(buf, buf_size, v, "/.cache/smkernel");
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res && res->pw_dir &&
        res->pw_dir[0] == '/')
        return put(buf, buf_size, res->pw_dir, "/.cache/smkernel");
    return -ENOENT;
}

/*
 * The modification time extraction stamps on a cached file. It is derived from the digest and
 * is far in the past, so any later write to the file (which sets mtime to now) shows. Whole even
 * seconds survive file systems with coarse timestamps.
 */
static struct timespec stamp_of(const struct smk_asset *a)
{
    uint32_t h = (uint32_t)a->sha256[0] << 24 | (uint32_t)a->sha256[1] << 16 |
                 (uint32_t)a->sha256[2] << 8 | a->sha256[3];
    struct timespec ts = {.tv_sec = 1000000000 + 2 * (time_t)(h & 0x0fffffff), .tv_nsec = 0};
    return ts;
}

/* The root and the levels below it: ours alone, or another user could hand us any file. */
static int trusted(const struct stat *st)
{
    if (!S_ISDIR(st->st_mode))
        return -ENOTDIR;
    if (st->st_uid != geteuid() || (st->st_mode & (S_IWGRP | S_IWOTH)))
        return -EPERM;
    return 0;
}

/*
 * A parent of the root, as OpenSSH judges the directories above its files: owned by root or
 * by us, and writable by nobody else, except a sticky directory (/tmp) whose entry next on the
 * way is ours or root's: there others may add names but cannot rename or remove that entry.
 */
static int trusted_parent(const struct stat *st, const struct stat *next)
{
    if (!S_ISDIR(st->st_mode))
        return -ENOTDIR;
    if (st->st_uid != 0 && st->st_uid != geteuid())
        return -EPERM;
    if ((st->st_mode & (S_IWGRP | S_IWOTH)) &&
        !((st->st_mode & S_ISVTX) && (next->st_uid == geteuid() || next->st_uid == 0)))
        return -EPERM;
    return 0;
}

static bool cached_ok(const struct smk_asset *a, const struct stat *st)
{
    struct timespec want = stamp_of(a);
    return S_ISREG(st->st_mode) && st->st_uid == geteuid() &&
           (unsigned int)(st->st_mode & 07777) == a->mode && (uint64_t)st->st_size == a->size &&
           st->st_mtime == want.tv_sec;
}

/* Open dirfd's subdirectory name, never through a symlink (a planted one is -EPERM). */
static int open_dir_at(int dirfd, const char *name, struct stat *st)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat lst;
        if (fstatat(dirfd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
            return -EPERM;
        return -e;
    }
    if (fstat(fd, st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* Create (0700, durably) and open dirfd's subdirectory name. */
static int make_dir_at(int dirfd, const char *name, struct stat *st)
{
    if (mkdirat(dirfd, name, 0700) == 0) {
        int r = smk__sync_dir(dirfd);
        if (r != 0)
            return r;
    } else if (errno != EEXIST) {
        return -errno;
    }
    return open_dir_at(dirfd, name, st);
}

/* Append "/name" (or "name" after "/") to path. */
static int append(char *path, size_t size, const char *name, size_t len)
{
    size_t used = strlen(path);
    bool slash = used > 0 && path[used - 1] != '/';
    if (used + slash + len + 1 > size)
        return -ENAMETOOLONG;
    if (slash)
        path[used++] = '/';
    memcpy(path + used, name, len);
    path[used + len] = '\0';
    return 0;
}

/* A symlink met where a directory was opened without following: resolve the path first. */
#define SYMLINK_MET 1

enum create { NEVER, ALWAYS, WHEN_MISSING };

/*
 * Go down from the directory *fd (whose stat is *st) through the components of p..stop, each
 * opened without following symlinks and checked with trusted_parent() against the one above;
 * creating them (0700) when create says so, never in a directory that would fail the check.
 * *fd and *st then describe the last level, and canon has each name appended.
 */
static int descend(int *fd, struct stat *st, const char *p, const char *stop, enum create create,
                   char *canon, size_t canon_size)
{
    while (p < stop) {
        while (p < stop && *p == '/')
            p++;
        const char *q = p;
        while (q < stop && *q != '/')
            q++;
        size_t n = (size_t)(q - p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
            p = q;
            continue;
        }
        if (n > NAME_MAX)
            return -ENAMETOOLONG;
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return -EINVAL; /* only in a part that is created: realpath() removed the others */
        char name[NAME_MAX + 1];
        memcpy(name, p, n);
        name[n] = '\0';
        struct stat next;
        int nfd = create == ALWAYS ? -ENOENT : open_dir_at(*fd, name, &next);
        if (nfd == -EPERM && create == WHEN_MISSING) {
            struct stat lst;
            if (fstatat(*fd, name, &lst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(lst.st_mode))
                return SYMLINK_MET;
        }
        if (nfd == -ENOENT && create != NEVER) {
            create = ALWAYS;
            /* Nothing is created in a directory that would fail the check. */
            struct stat ours = {.st_uid = geteuid()};
            int r = trusted_parent(st, &ours);
            if (r != 0)
                return r;
            nfd = make_dir_at(*fd, name, &next);
        }
        if (nfd < 0)
            return nfd;
        int r = trusted_parent(st, &next);
        if (r == 0)
            r = append(canon, canon_size, name, n);
        close(*fd);
        *fd = nfd;
        *st = next;
        if (r != 0)
            return r;
        p = q;
    }
    return 0;
}

/* The root with symlinks in its path: resolve the longest prefix that exists, then descend. */
static int descend_resolved(int *fd, struct stat *st, const char *root, size_t len, char *canon,
                            size_t canon_size)
{
    char *probe = malloc(PATH_MAX);
    char *resolved = malloc(PATH_MAX);
    int r = probe && resolved ? 0 : -ENOMEM;
    /* The longest prefix that exists; the rest (root[end..len]) is created. */
    size_t end = len;
    while (r == 0) {
        if (end == 0) {
            strcpy(probe, ".");
        } else {
            memcpy(probe, root, end);
            probe[end] = '\0';
        }
        if (realpath(probe, resolved))
            break;
        if (errno != ENOENT || end == 0) {
            r = -errno;
            break;
        }
        while (end > 0 && root[end - 1] != '/')
            end--;
        while (end > 1 && root[end - 1] == '/')
            end--;
    }
    free(probe);
    if (r == 0)
        r = descend(fd, st, resolved, resolved + strlen(resolved), NEVER, canon, canon_size);
    if (r == 0)
        r = descend(fd, st, root + end, root + len, ALWAYS, canon, canon_size);
    free(resolved);
    return r;
}

/*
 * Open the cache root, creating what is missing of it (0700), with every directory from / down
 * checked: the parents by trusted_parent(), the root by trusted(). Every level is opened
 * without following symlinks, so nothing can be swapped between the check and the use; a root
 * whose path has symlinks (or is relative) is resolved with realpath() first. canon receives
 * the resolved path of the root.
 */
static int open_root(const char *root, char *canon, size_t canon_size)
{
    size_t len = strlen(root);
    while (len > 1 && root[len - 1] == '/')
        len--;
    if (len >= PATH_MAX || canon_size < 2)
        return -ENAMETOOLONG;
    /* An absolute path without "." or ".." components is walked as it is; resolved only if a
     * symlink is met on the way. */
    bool literal = root[0] == '/';
    for (size_t i = 0; literal && i < len; i++) {
        size_t n = 0;
        while (i + n < len && root[i + n] != '/')
            n++;
        literal = !((n == 1 || n == 2) && memcmp(root + i, "..", n) == 0);
        i += n;
    }
    int r = 1;
    int fd = -1;
    struct stat st;
    for (int attempt = literal ? 0 : 1; attempt < 2 && r != 0; attempt++) {
        if (fd >= 0)
            close(fd);
        canon[0] = '/';
        canon[1] = '\0';
        fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        if (fstat(fd, &st) != 0) {
            r = -errno;
            break;
        }
        r = attempt == 0 ? descend(&fd, &st, root, root + len, WHEN_MISSING, canon, canon_size)
                         : descend_resolved(&fd, &st, root, len, canon, canon_size);
        if (r < 0)
            break;
    }
    if (r == 0)
        r = trusted(&st);
    if (r != 0) {
        close(fd);
        return r < 0 ? r : -ELOOP;
    }
    return fd;
}

/* Create (or open) the subdirectory name of a trusted dirfd, refusing untrusted ones. */
static int open_subdir(int dirfd, const char *name)
{
    struct stat st;
    int fd = open_dir_at(dirfd, name, &st);
    if (fd == -ENOENT)
        fd = make_dir_at(dirfd, name, &st);
    if (fd < 0)
        return fd;
    int r = trusted(&st);
    if (r != 0) {
        close(fd);
        return r;
    }
    return fd;
}

/*
 * Open ROOT/<version>-<arch>/<sha256 prefix>, every level checked, and write the file's path
 * (through the resolved root) into full.
 */
static int open_asset_dir(const struct smk_asset *a, char *full, size_t full_size)
{
    char *root = malloc(PATH_MAX);
    if (!root)
        return -ENOMEM;
    int r = smk_cache_dir(root, PATH_MAX);
    if (r == -ERANGE)
        r = -ENAMETOOLONG;
    char sub1[96], sub2[24];
    snprintf(sub1, sizeof sub1, "%s-%s", SMK_VERSION_STRING, smk__arch);
    snprintf(sub2, sizeof sub2, "%.16s", a->sha256_hex);
    int fd = r == 0 ? open_root(root, full, full_size) : r;
    free(root);
    if (fd < 0)
        return fd;
    if (append(full, full_size, sub1, strlen(sub1)) != 0 ||
        append(full, full_size, sub2, strlen(sub2)) != 0 ||
        append(full, full_size, a->file_name, strlen(a->file_name)) != 0) {
        close(fd);
        return -ENAMETOOLONG;
    }
    int d1 = open_subdir(fd, sub1);
    close(fd);
    if (d1 < 0)
        return d1;
    int d2 = open_subdir(d1, sub2);
    close(d1);
    return d2;
}

/* The cached file in dirfd, opened for reading if it is intact, else -ESTALE. */
static int open_cached(const struct smk_asset *a, int dirfd)
{
    int fd = openat(dirfd, a->file_name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ELOOP ? -ESTALE : -errno;
    struct stat st;
    if (fstat(fd, &st) != 0 || !cached_ok(a, &st) || fcntl(fd, F_SETFL, 0) != 0) {
        close(fd);
        return -ESTALE;
    }
    return fd;
}

static int cached_at(const struct smk_asset *a, int dirfd)
{
    struct stat st;
    if (fstatat(dirfd, a->file_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && cached_ok(a, &st))
        return 0;
    struct timespec ts = stamp_of(a);
    return smk__extract_at(a, dirfd, a->file_name, &ts);
}

int smk_asset_path(enum smk_asset_id id, char *buf, size_t buf_size)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (!buf || buf_size == 0)
        return -EINVAL;
    char *full = malloc(PATH_MAX);
    if (!full)
        return -ENOMEM;
    int dirfd = open_asset_dir(a, full, PATH_MAX);
    int r = dirfd < 0 ? dirfd : strlen(full) >= buf_size ? -ERANGE : cached_at(a, dirfd);
    if (r == 0)
        memcpy(buf, full, strlen(full) + 1);
    if (dirfd >= 0)
        close(dirfd);
    free(full);
    return r;
}

int smk_asset_open(enum smk_asset_id id)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    char *full = malloc(PATH_MAX);
    if (!full)
        return -ENOMEM;
    int dirfd = open_asset_dir(a, full, PATH_MAX);
    free(full);
    if (dirfd < 0)
        return dirfd;
    int fd = open_cached(a, dirfd);
    /* Missing or altered: extract, then open what was published. Only this user (or root) can
     * change the file in between, and then a second round still gives a checked file. */
    for (int round = 0; fd == -ESTALE && round < 2; round++) {
        struct timespec ts = stamp_of(a);
        int r = smk__extract_at(a, dirfd, a->file_name, &ts);
        fd = r != 0 ? r : open_cached(a, dirfd);
    }
    close(dirfd);
    return fd == -ESTALE ? -EAGAIN : fd;
}
