/* GENERATED from smkernel-x86_64/src/common/cache.c by sync-shared sha256:645454729ee7 */
/* The per-user asset cache behind smk_asset_path(). SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int put(char *buf, size_t size, const char *a, const char *b)
{
    int n = snprintf(buf, size, "%s%s", a, b);
    return n < 0 || (size_t)n >= size ? -ERANGE : 0;
}

int smk_cache_dir(char *buf, size_t buf_size)
{
    if (!buf || buf_size == 0)
        return -EINVAL;
    const char *v = getenv("SMKERNEL_CACHE_DIR");
    if (v && *v)
        return put(buf, buf_size, v, "");
    v = getenv("XDG_CACHE_HOME");
    if (v && v[0] == '/')
        return put(buf, buf_size, v, "/smkernel");
    v = getenv("HOME");
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

/* Another user's directory, or one others may write, could hand us a file of their choosing. */
static int trusted(const struct stat *st)
{
    if (!S_ISDIR(st->st_mode))
        return -ENOTDIR;
    if (st->st_uid != geteuid() || (st->st_mode & (S_IWGRP | S_IWOTH)))
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

/* Open (creating 0700 if missing) the subdirectory name of dirfd, refusing untrusted ones. */
static int open_subdir(int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0700) != 0 && errno != EEXIST)
        return -errno;
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        /* A symlink planted where our directory belongs is refused, never followed. */
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
            return -EPERM;
        return -e;
    }
    struct stat st;
    int r = fstat(fd, &st) == 0 ? trusted(&st) : -errno;
    if (r != 0) {
        close(fd);
        return r;
    }
    return fd;
}

static int populate(const struct smk_asset *a, const char *root, const char *sub1,
                    const char *sub2)
{
    int r = smk__mkdir_parents(root, 0700);
    if (r != 0)
        return r;
    int rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        return -errno;
    struct stat st;
    r = fstat(rootfd, &st) == 0 ? trusted(&st) : -errno;
    int d1 = r == 0 ? open_subdir(rootfd, sub1) : r;
    close(rootfd);
    if (d1 < 0)
        return d1;
    int d2 = open_subdir(d1, sub2);
    close(d1);
    if (d2 < 0)
        return d2;
    struct timespec ts = stamp_of(a);
    r = smk__extract_at(a, d2, a->file_name, &ts);
    close(d2);
    return r;
}

int smk_asset_path(enum smk_asset_id id, char *buf, size_t buf_size)
{
    int err;
    const struct smk_asset *a = smk__lookup(id, &err);
    if (!a)
        return err;
    if (!buf || buf_size == 0)
        return -EINVAL;

    char root[PATH_MAX], sub1[96], sub2[24], full[PATH_MAX];
    int r = smk_cache_dir(root, sizeof root);
    if (r != 0)
        return r == -ERANGE ? -ENAMETOOLONG : r;
    snprintf(sub1, sizeof sub1, "%s-%s", SMK_VERSION_STRING, smk__arch);
    snprintf(sub2, sizeof sub2, "%.16s", a->sha256_hex);
    int n = snprintf(full, sizeof full, "%s/%s/%s/%s", root, sub1, sub2, a->file_name);
    if (n < 0 || (size_t)n >= sizeof full)
        return -ENAMETOOLONG;
    if ((size_t)n >= buf_size)
        return -ERANGE;

    /* Warm path: the file and the directories above it, checked with one stat each. */
    struct stat st;
    bool warm = lstat(full, &st) == 0 && cached_ok(a, &st);
    if (warm) {
        char dir[PATH_MAX];
        memcpy(dir, full, (size_t)n + 1);
        for (int level = 0; warm && level < 3; level++) {
            *strrchr(dir, '/') = '\0';
            /* The root may be a symlink (a relocated ~/.cache); the levels below may not. */
            warm = (level == 2 ? stat(dir, &st) : lstat(dir, &st)) == 0 && trusted(&st) == 0;
        }
    }
    if (!warm) {
        r = populate(a, root, sub1, sub2);
        if (r != 0)
            return r;
    }
    memcpy(buf, full, (size_t)n + 1);
    return 0;
}
