/*
 * In-process fault injection for the library's file-system calls. interpose.c defines write,
 * fsync, fchmod, linkat, renameat, openat and pthread_create in the test executable, so the library's calls
 * (through its PLT, or resolved at static link time) reach them first; each passes through to
 * the C library's function unless the plan says to fail. Works with ASan/UBSan and under
 * qemu-user, where an LD_PRELOAD interposer would not. SPDX-License-Identifier: MIT
 */
#ifndef SMK_TEST_INTERPOSE_H
#define SMK_TEST_INTERPOSE_H

enum fault_op {
    FAULT_NONE,
    FAULT_WRITE,      /* write(): fail with err once `offset` bytes have been written */
    FAULT_SHORT,      /* write(): write at most 4093 bytes per call, EINTR every 7th call */
    FAULT_FSYNC,      /* fsync() fails with err */
    FAULT_FCHMOD,     /* fchmod() fails with err */
    FAULT_TMPFILE,    /* openat(O_TMPFILE) fails with err (EOPNOTSUPP: the named fallback) */
    FAULT_OPEN_NAMED, /* openat(".smk-tmp-*", O_CREAT) fails with err */
    FAULT_LINK,       /* linkat() fails with err on its `nth` call (0 = first) */
    FAULT_RENAME,     /* renameat() fails with err */
    FAULT_PLANT,      /* plant a symlink to `victim` at the first temporary name tried */
    FAULT_RECORD,     /* fail nothing; count write() calls and those under 64 KiB */
    FAULT_THREAD      /* pthread_create() fails with err */
};

struct fault_plan {
    enum fault_op op;
    int err;
    long long offset;
    int nth;
    const char *victim;
    int no_tmpfile; /* also fail every O_TMPFILE open with EOPNOTSUPP: the named fallback */
    int kill;       /* SIGKILL ourselves instead of failing */
    /* What happened (reset by fault_arm). */
    int hits;
    long long written;
    int calls;
    long long small_writes; /* write() calls of fewer than 65536 bytes */
    long long last_write;   /* the length of the last write() call */
};

extern struct fault_plan fault;

/* Arm a plan: the next calls obey it until fault_disarm(). */
void fault_arm(enum fault_op op, int err, long long offset);
void fault_disarm(void);

#endif
