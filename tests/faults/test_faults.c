/*
 * Fault injection (Check): write errors at random offsets, failing fsync/fchmod/link/rename/
 * open, EFBIG from RLIMIT_FSIZE, and SIGKILL at chosen and at random moments. After every
 * fault the target is absent or old (never partial), the error is the specific negative errno,
 * and no temporary file remains (a killed writer's is removed by the next extraction).
 *
 * Loop tests run twice: _i = 0 with O_TMPFILE, _i = 1 with the named-temporary fallback that
 * file systems without O_TMPFILE (and other OSes) use. Offsets come from a seeded generator:
 * SMK_FAULT_SEED picks the seed (printed on failure), SMK_FAULT_OFFSETS how many per errno,
 * SMK_KILL_ROUNDS how many random SIGKILLs. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include <smkernel.h>

#include "../scratch.h"

#include "interpose.h"
#include "../run-suite.h"

const int fault_o_creat = O_CREAT;
#ifdef O_TMPFILE
const int fault_o_tmpfile = O_TMPFILE;
#else
const int fault_o_tmpfile = -1; /* matches no open(): only the named temporary exists here */
#endif

static unsigned long long rng_state;
static unsigned long long seed;

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

static unsigned long long rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void setup(void)
{
    scratch_make("faults");
    const char *s = getenv("SMK_FAULT_SEED");
    seed = s && *s ? strtoull(s, NULL, 0) : 0x5eedf00dull;
    rng_state = seed | 1;
    fault_disarm();
    fault.no_tmpfile = 0;
}

static void teardown(void)
{
    fault_disarm();
    scratch_remove();
}

static const char old_bytes[] = "the previous complete file\n";

static void write_old(const char *path)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(old_bytes, f);
    ck_assert_int_eq(fclose(f), 0);
}

enum state { ABSENT, OLD, ASSET };

static enum state state_of(enum smk_asset_id id, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return ABSENT;
    if (smk_verify_file(id, path) == 0)
        return ASSET;
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    ck_assert_msg(n == strlen(old_bytes) && memcmp(buf, old_bytes, n) == 0,
                  "%s is neither absent, the old file nor the asset: a partial or wrong file",
                  path);
    return OLD;
}

/* Regular files that look like our temporaries (planted symlinks are not ours). */
static int temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[1024];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        n += strncmp(e->d_name, ".smk-tmp-", 9) == 0 && lstat(p, &st) == 0 && S_ISREG(st.st_mode);
    }
    if (d)
        closedir(d);
    return n;
}

/* Run op (armed) against a target that is absent or old; it must fail with want, cleanly. */
static void expect_fault(enum fault_op op, int err, long long offset, bool target_exists, int want)
{
    const char *target = at("target");
    unlink(target);
    if (target_exists)
        write_old(target);
    fault_arm(op, err, offset);
    int r = smk_extract(SMK_ASSET_KERNEL, target, 0);
    int hits = fault.hits;
    fault_disarm();
    ck_assert_msg(r == want,
                  "op %d err %d offset %lld exists %d: got %d (%s), want %d (seed %#llx)", op, err,
                  offset, target_exists, r, smk_strerror(r), want, seed);
    ck_assert_int_gt(hits, 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, target), target_exists ? OLD : ABSENT);
    ck_assert_int_eq(temps(tmp), 0);
}

START_TEST(test_write_errors_at_random_offsets)
{
    fault.no_tmpfile = _i;
    const struct smk_asset *k = smk_asset_get(SMK_ASSET_KERNEL);
    const int errs[] = {ENOSPC, EIO, EDQUOT};
    int per = env_int("SMK_FAULT_OFFSETS", 6);
    for (size_t e = 0; e < sizeof errs / sizeof errs[0]; e++) {
        for (int i = 0; i < per + 2; i++) {
            /* Always the first byte and the last one, then random offsets. */
            long long off = i == 0   ? 0
                            : i == 1 ? (long long)k->size - 1
                                     : (long long)(rnd() % k->size);
            expect_fault(FAULT_WRITE, errs[e], off, i % 2 == 0, -errs[e]);
        }
    }
}
END_TEST

/* Short writes and EINTR are not errors: the asset is complete. */
START_TEST(test_short_writes_and_eintr)
{
    fault.no_tmpfile = _i;
    fault_arm(FAULT_SHORT, 0, 0);
    int r = smk_extract(SMK_ASSET_KERNEL, at("k"), 0);
    int calls = fault.calls;
    fault_disarm();
    ck_assert_int_eq(r, 0);
    ck_assert_int_gt(calls, 100);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("k")), ASSET);
    ck_assert_int_eq(temps(tmp), 0);
}
END_TEST

START_TEST(test_fsync_fchmod_rename_fail)
{
    fault.no_tmpfile = _i;
    for (int exists = 0; exists < 2; exists++) {
        expect_fault(FAULT_FSYNC, EIO, 0, exists, -EIO);
        expect_fault(FAULT_FSYNC, ENOSPC, 0, exists, -ENOSPC);
        expect_fault(FAULT_FCHMOD, EPERM, 0, exists, -EPERM);
    }
    /* rename() only runs to replace an existing target (or always, without O_TMPFILE). */
    expect_fault(FAULT_RENAME, EIO, 0, true, -EIO);
    expect_fault(FAULT_RENAME, EDQUOT, 0, true, -EDQUOT);
    if (_i)
        expect_fault(FAULT_RENAME, ENOSPC, 0, false, -ENOSPC);
}
END_TEST

START_TEST(test_link_and_open_fail)
{
    /* O_TMPFILE: the direct link of a new target, or the temporary name of a replacement. */
    expect_fault(FAULT_LINK, ENOSPC, 0, false, -ENOSPC);
    expect_fault(FAULT_LINK, EDQUOT, 0, true, -EDQUOT); /* the first linkat, to the target */
    fault_arm(FAULT_LINK, EMLINK, 0);
    fault.nth = 1; /* the target exists (EEXIST), then the temporary name fails */
    write_old(at("target"));
    int r = smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
    fault_disarm();
    ck_assert_int_eq(r, -EMLINK);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), OLD);
    ck_assert_int_eq(temps(tmp), 0);
    /* A real error from O_TMPFILE is final; "not supported" falls back to a named temporary. */
    expect_fault(FAULT_TMPFILE, EMFILE, 0, true, -EMFILE);
    expect_fault(FAULT_TMPFILE, ENOSPC, 0, false, -ENOSPC);
    fault_arm(FAULT_TMPFILE, EOPNOTSUPP, 0);
    r = smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
    fault_disarm();
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), ASSET);
    ck_assert_int_eq(temps(tmp), 0);
    fault.no_tmpfile = 1;
    expect_fault(FAULT_OPEN_NAMED, ENOSPC, 0, true, -ENOSPC);
    expect_fault(FAULT_OPEN_NAMED, EACCES, 0, false, -EACCES);
}
END_TEST

/* A symlink planted at the temporary name the library tries is neither followed nor removed. */
START_TEST(test_symlink_planted_at_temp_name)
{
    fault.no_tmpfile = _i;
    write_old(at("victim"));
    write_old(at("target")); /* with O_TMPFILE only a replacement uses a temporary name */
    fault_arm(FAULT_PLANT, 0, 0);
    fault.victim = at("victim");
    int r = smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
    int hits = fault.hits;
    fault_disarm();
    ck_assert_int_eq(hits, 1);
    ck_assert_int_eq(r, 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), ASSET);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("victim")), OLD);
    DIR *d = opendir(tmp);
    int links = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        links += strncmp(e->d_name, ".smk-tmp-", 9) == 0;
    closedir(d);
    ck_assert_int_eq(links, 1); /* the planted symlink: not ours, so left alone */
    ck_assert_int_eq(temps(tmp), 0);
}
END_TEST

/* A real kernel fault: RLIMIT_FSIZE makes write() fail with EFBIG (SIGXFSZ ignored), at the
 * first byte, the second, the last and at random offsets between. */
START_TEST(test_rlimit_fsize_efbig)
{
    fault.no_tmpfile = _i;
    const struct smk_asset *k = smk_asset_get(SMK_ASSET_KERNEL);
    const long long edges[] = {0, 1, (long long)k->size - 1};
    const int n_edges = (int)(sizeof edges / sizeof *edges);
    for (int i = 0; i < n_edges + 4; i++) {
        long long limit = i < n_edges ? edges[i] : (long long)(rnd() % k->size);
        bool exists = i % 2;
        unlink(at("target"));
        if (exists)
            write_old(at("target"));
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            signal(SIGXFSZ, SIG_IGN);
            struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
            if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(90);
            _exit(smk_extract(SMK_ASSET_KERNEL, at("target"), 0) == -EFBIG ? 0 : 91);
        }
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "limit %lld: status %#x", limit, st);
        ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), exists ? OLD : ABSENT);
        ck_assert_int_eq(temps(tmp), 0);
    }
}
END_TEST

/* The cache and the initramfs writer go through the same path and fail the same way. */
START_TEST(test_cache_and_initramfs_faults)
{
    fault.no_tmpfile = _i;
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    char p[1024];
    fault_arm(FAULT_WRITE, ENOSPC, 12345);
    int r = smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
    fault_disarm();
    ck_assert_int_eq(r, -ENOSPC);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, p), ASSET);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", p);
    *strrchr(dir, '/') = '\0';
    ck_assert_int_eq(temps(dir), 0);
    unsetenv("SMKERNEL_CACHE_DIR");

    write_old(at("initrd"));
    fault_arm(FAULT_WRITE, EIO, 1000000);
    r = smk_write_initramfs(at("initrd"), NULL, 0, 0);
    fault_disarm();
    ck_assert_int_eq(r, -EIO);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("initrd")), OLD);
    ck_assert_int_eq(temps(tmp), 0);
}
END_TEST

static int wait_killed(pid_t pid)
{
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? 0 : st;
}

/*
 * SIGKILL exactly where a named temporary exists (at rename, or mid-write without O_TMPFILE):
 * it stays behind, the target is still the old file, and the next extraction into that
 * directory, of any asset, removes it.
 */
START_TEST(test_kill_leaves_temp_that_next_write_removes)
{
    fault.no_tmpfile = _i;
    write_old(at("target"));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (_i)
            fault_arm(FAULT_WRITE, EIO, 100000); /* mid-write */
        else
            fault_arm(FAULT_RENAME, EIO, 0); /* between linkat and rename */
        fault.kill = 1;
        smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
        _exit(1);
    }
    ck_assert_int_eq(wait_killed(pid), 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), OLD);
    ck_assert_int_eq(temps(tmp), 1);
    ck_assert_int_eq(smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, at("other"), 0), 0);
    ck_assert_int_eq(temps(tmp), 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, at("target")), OLD);

    /* The same in the cache: a cached file repaired by a process that is killed mid-way. */
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    char p[1024], dir[1024];
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), 0);
    ck_assert_int_eq(chmod(p, 0600), 0); /* off: the next call re-extracts */
    snprintf(dir, sizeof dir, "%s", p);
    *strrchr(dir, '/') = '\0';
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fault_arm(_i ? FAULT_WRITE : FAULT_RENAME, EIO, 100000);
        fault.kill = 1;
        smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
        _exit(1);
    }
    ck_assert_int_eq(wait_killed(pid), 0);
    ck_assert_int_eq(temps(dir), 1);
    ck_assert_int_eq(smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p), 0);
    ck_assert_int_eq(state_of(SMK_ASSET_KERNEL, p), ASSET);
    ck_assert_int_eq(temps(dir), 0);
    unsetenv("SMKERNEL_CACHE_DIR");
}
END_TEST

/*
 * The sweep removes only what it can prove is a stale temporary of ours. A real one (its writer
 * killed between linkat and rename) is removed; beside it, files of this user whose names only
 * look like temporaries of the same host and a dead writer are all kept: a well-formed name
 * whose tag does not match its directory (a caller's file), and malformed variants of the name.
 */
START_TEST(test_sweep_removes_only_provable_temps)
{
    fault.no_tmpfile = _i;
    write_old(at("target"));
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        fault_arm(_i ? FAULT_WRITE : FAULT_RENAME, EIO, 100000);
        fault.kill = 1;
        smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
        _exit(1);
    }
    ck_assert_int_eq(wait_killed(pid), 0);
    char real[256] = "";
    DIR *d = opendir(tmp);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, ".smk-tmp-", 9) == 0)
            snprintf(real, sizeof real, "%s", e->d_name);
    closedir(d);
    ck_assert_msg(real[0], "the killed writer left no temporary");
    unsigned host;
    long dead;
    ck_assert_int_eq(sscanf(real, ".smk-tmp-%8x-%ld-", &host, &dead), 2);
    ck_assert_int_eq((long)pid, dead);
    const char *fmt[] = {
        ".smk-tmp-%08x-%ld-0123456789abcdef",  /* well-formed, tag not of this directory */
        ".smk-tmp-%08x- %ld-0123456789abcdef", /* a space before the pid */
        ".smk-tmp-%08x-%ld-a",                 /* a one-character suffix */
        ".smk-tmp-%08x-%ld-0123456789ABCDEF",  /* upper case */
        ".smk-tmp-%08x-0%ld-0123456789abcdef", /* a leading zero */
        ".smk-tmp-%08x-+%ld-0123456789abcdef", /* a sign */
        ".smk-tmp-%08x-%ld-0123456789abcdef0", /* 17 digits */
        ".smk-tmp-%08x-%ld-0123456789abcdef ", /* trailing space */
    };
    const int n = (int)(sizeof fmt / sizeof fmt[0]);
    char names[8][128];
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], fmt[i], host, dead);
        char p[1024];
        snprintf(p, sizeof p, "%.255s/%.127s", tmp, names[i]);
        FILE *f = fopen(p, "w");
        ck_assert_ptr_nonnull(f);
        fputs("a caller's file\n", f);
        fclose(f);
    }
    ck_assert_int_eq(smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, at("other"), 0), 0);
    char p[1024];
    snprintf(p, sizeof p, "%.255s/%.300s", tmp, real);
    struct stat st;
    ck_assert_msg(lstat(p, &st) != 0, "the real stale temporary %s was not removed", real);
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "%.255s/%.127s", tmp, names[i]);
        ck_assert_msg(lstat(p, &st) == 0, "'%s' (not provably ours) was deleted", names[i]);
    }
}
END_TEST

/* The initramfs goes out in writes of at least 64 KiB (the last one excepted). */
START_TEST(test_initramfs_write_sizes)
{
    fault_arm(FAULT_RECORD, 0, 0);
    int r = smk_write_initramfs(at("initrd"), NULL, 0, 0);
    long long calls = fault.calls, small = fault.small_writes, last = fault.last_write;
    fault_disarm();
    ck_assert_int_eq(r, 0);
    struct stat st;
    ck_assert_int_eq(stat(at("initrd"), &st), 0);
    printf("initramfs: %lld bytes in %lld write() calls\n", (long long)st.st_size, calls);
    ck_assert_msg(small - (last < 65536) == 0,
                  "%lld of %lld writes were under 64 KiB (not counting the last)", small, calls);
}
END_TEST

/* No thread can start: every asset is extracted on the calling thread, all of them. */
START_TEST(test_extract_all_without_threads)
{
    fault_arm(FAULT_THREAD, EAGAIN, 0);
    int r = smk_extract_all(at("all"), SMK_EXTRACT_PARENTS);
    int hits = fault.hits;
    fault_disarm();
    ck_assert_int_eq(r, 0);
    ck_assert_int_gt(hits, 0);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        char rel[300];
        snprintf(rel, sizeof rel, "all/%s", list[i]->file_name);
        ck_assert_int_eq(smk_verify_file(list[i]->id, at(rel)), 0);
    }
}
END_TEST

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * SIGKILL at random moments of a writer that extracts over and over (new target, then
 * replacement): after each kill the target is absent, old or the complete asset; a temporary
 * left by a kill in the linkat..rename window is gone after the next extraction.
 */
START_TEST(test_kill_at_random_moments)
{
    fault.no_tmpfile = _i;
    int rounds = env_int("SMK_KILL_ROUNDS", 60);
    double t0 = now();
    ck_assert_int_eq(smk_extract(SMK_ASSET_KERNEL, at("probe"), 0), 0);
    double one = now() - t0; /* one extraction: kills land within about two of them */
    int absent = 0, complete = 0, left = 0;
    for (int i = 0; i < rounds; i++) {
        unlink(at("target"));
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            for (;;) {
                smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
                unlink(at("target"));
                smk_extract(SMK_ASSET_KERNEL, at("target"), 0);
            }
        }
        struct timespec d = {0, (long)((double)(rnd() % 1000) / 1000.0 * 2.5 * one * 1e9)};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        ck_assert_int_eq(wait_killed(pid), 0);
        enum state s = state_of(SMK_ASSET_KERNEL, at("target"));
        ck_assert_int_ne(s, OLD);
        absent += s == ABSENT;
        complete += s == ASSET;
        int t = temps(tmp);
        left += t;
        if (t) {
            ck_assert_int_eq(smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, at("other"), 0), 0);
            ck_assert_int_eq(temps(tmp), 0);
        }
    }
    printf("kill-at-random (%s): %d kills: target absent %d, complete %d, never partial; "
           "temporaries left by a kill: %d, all removed by the next extraction\n",
           _i ? "named temporary" : "O_TMPFILE", rounds, absent, complete, left);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smkernel faults");
    struct {
        const char *name;
        const TTest *test;
        int loops;
    } cases[] = {
        {"write-errors", test_write_errors_at_random_offsets, 2},
        {"short-writes", test_short_writes_and_eintr, 2},
        {"fsync-fchmod-rename", test_fsync_fchmod_rename_fail, 2},
        {"link-open", test_link_and_open_fail, 1},
        {"planted-symlink", test_symlink_planted_at_temp_name, 2},
        {"efbig", test_rlimit_fsize_efbig, 2},
        {"cache-initramfs", test_cache_and_initramfs_faults, 2},
        {"kill-window", test_kill_leaves_temp_that_next_write_removes, 2},
        {"kill-random", test_kill_at_random_moments, 2},
        {"sweep-strict", test_sweep_removes_only_provable_temps, 2},
        {"initramfs-writes", test_initramfs_write_sizes, 1},
        {"no-threads", test_extract_all_without_threads, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 300);
        tcase_add_loop_test(tc, cases[i].test, 0, cases[i].loops);
        suite_add_tcase(s, tc);
    }
    return run_suite(s, CK_NORMAL);
}
