/*
 * See interpose.h. No <fcntl.h> or <unistd.h> here: their prototypes (and, with
 * _FILE_OFFSET_BITS=64, their renaming of openat to openat64) would clash with the definitions
 * below. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include "interpose.h"

#define TMP_PREFIX ".smk-tmp-"
/* O_CREAT and O_TMPFILE differ between arches (O_DIRECTORY is 040000 on aarch64): test_faults.c,
 * which may include <fcntl.h>, provides them. */
extern const int fault_o_creat, fault_o_tmpfile;
#define O_CREAT_ fault_o_creat
#define O_TMPFILE_ fault_o_tmpfile

struct fault_plan fault;

void fault_arm(enum fault_op op, int err, long long offset)
{
    int no_tmpfile = fault.no_tmpfile;
    memset(&fault, 0, sizeof fault);
    fault.no_tmpfile = no_tmpfile; /* a mode, set by the test around its cases */
    fault.op = op;
    fault.err = err;
    fault.offset = offset;
}

void fault_disarm(void)
{
    fault.op = FAULT_NONE;
    fault.kill = 0;
}

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        raise(SIGABRT);
    return f;
}

static const char *base(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int is_temp(const char *path)
{
    return strncmp(base(path), TMP_PREFIX, sizeof TMP_PREFIX - 1) == 0;
}

static int fail(int err)
{
    if (fault.kill)
        raise(SIGKILL);
    fault.hits++;
    errno = err;
    return -1;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    ssize_t (*w)(int, const void *, size_t) = real("write");
    if (fault.op == FAULT_WRITE) {
        if (fault.written + (long long)len > fault.offset) {
            size_t part = (size_t)(fault.offset - fault.written);
            if (part == 0)
                return fail(fault.err);
            len = part; /* a short write up to the fault; the next call fails */
        }
    } else if (fault.op == FAULT_RECORD) {
        fault.calls++;
        fault.small_writes += len < 65536;
        fault.last_write = (long long)len;
    } else if (fault.op == FAULT_SHORT) {
        if (++fault.calls % 7 == 0)
            return fail(EINTR);
        if (len > 4093)
            len = 4093;
    }
    ssize_t n = w(fd, buf, len);
    if (n > 0 && fault.op != FAULT_NONE)
        fault.written += n;
    return n;
}

int fsync(int fd)
{
    int (*f)(int) = real("fsync");
    return fault.op == FAULT_FSYNC ? fail(fault.err) : f(fd);
}

int fchmod(int fd, mode_t mode)
{
    int (*f)(int, mode_t) = real("fchmod");
    return fault.op == FAULT_FCHMOD ? fail(fault.err) : f(fd, mode);
}

int symlinkat(const char *target, int dirfd, const char *path);

static void plant(int dirfd, const char *name)
{
    if (fault.op == FAULT_PLANT && fault.hits == 0 && is_temp(name)) {
        fault.hits++;
        symlinkat(fault.victim, dirfd, name);
    }
}

int linkat(int olddirfd, const char *old, int newdirfd, const char *new, int flags)
{
    int (*f)(int, const char *, int, const char *, int) = real("linkat");
    if (fault.op == FAULT_LINK && fault.calls++ == fault.nth)
        return fail(fault.err);
    plant(newdirfd, new);
    return f(olddirfd, old, newdirfd, new, flags);
}

int renameat(int olddirfd, const char *old, int newdirfd, const char *new)
{
    int (*f)(int, const char *, int, const char *) = real("renameat");
    if (fault.op == FAULT_RENAME)
        return fail(fault.err);
    return f(olddirfd, old, newdirfd, new);
}

static int open_common(const char *sym, int dirfd, const char *path, int flags, mode_t mode)
{
    int (*f)(int, const char *, int, ...) = real(sym);
    if ((flags & O_TMPFILE_) == O_TMPFILE_) {
        if (fault.op == FAULT_TMPFILE)
            return fail(fault.err);
        if (fault.no_tmpfile) {
            errno = EOPNOTSUPP;
            return -1;
        }
    }
    if (fault.op == FAULT_OPEN_NAMED && (flags & O_CREAT_) && is_temp(path))
        return fail(fault.err);
    if (flags & O_CREAT_)
        plant(dirfd, path);
    return f(dirfd, path, flags, mode);
}

/* The mode argument exists only with O_CREAT or O_TMPFILE; reading it otherwise is harmless. */
int openat(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT_ | O_TMPFILE_)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("openat", dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    va_list ap;
    va_start(ap, flags);
    mode_t mode = (flags & (O_CREAT_ | O_TMPFILE_)) ? va_arg(ap, mode_t) : 0;
    va_end(ap);
    return open_common("openat64", dirfd, path, flags, mode);
}

int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    int (*f)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        real("pthread_create");
    if (fault.op == FAULT_THREAD) {
        fault.hits++;
        return fault.err;
    }
    return f(thread, attr, fn, arg);
}
