/*
 * Reliability under hostile users and scarce resources (Check): the cache's parent directories
 * judged as OpenSSH judges them, attacked by a second user; setuid callers ignoring the
 * environment; smk_extract_all with 8 file descriptors and on a 32 KiB stack; a directory of
 * 200,000 temporary-like names. Runs as root (CI does): the second user is a throwaway uid set
 * in a forked child. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
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
#include "../run-suite.h"

/* Throwaway ids no account uses: the victim and the attacker. */
#define VICTIM 61001
#define ATTACKER 61002

static void setup(void)
{
    scratch_make("rel");
    ck_assert_int_eq(chmod(tmp, 0755), 0); /* other users must reach what is inside */
}

static void teardown(void)
{
    scratch_remove();
}

static void need_root(void)
{
    ck_assert_msg(geteuid() == 0,
                  "this test runs a second user (uid %d) in a child: it needs "
                  "root, as CI has; run it as root",
                  ATTACKER);
}

static void mkdir_as(const char *path, mode_t mode, uid_t uid)
{
    ck_assert_msg(mkdir(path, mode) == 0, "mkdir %s: %s", path, strerror(errno));
    ck_assert_int_eq(chmod(path, mode), 0);
    ck_assert_int_eq(chown(path, uid, uid), 0);
}

static void become(uid_t uid)
{
    if (setgroups(0, NULL) != 0 || setgid(uid) != 0 || setuid(uid) != 0)
        _exit(90);
}

static int wait_exit(pid_t pid)
{
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status), "child killed by signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

/* smk_asset_path / smk_asset_open as uid with the cache at root; the results, in the parent. */
struct as_result {
    int path, open;
};

static struct as_result cache_as(uid_t uid, const char *root)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pipefd[0]);
        if (uid != geteuid())
            become(uid);
        setenv("SMKERNEL_CACHE_DIR", root, 1);
        char p[PATH_MAX];
        struct as_result r = {smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p),
                              smk_asset_open(SMK_ASSET_KERNEL)};
        if (r.open >= 0) {
            r.open = smk_verify_file(SMK_ASSET_KERNEL, p) == 0 ? 0 : -1000;
        }
        if (write(pipefd[1], &r, sizeof r) != sizeof r)
            _exit(91);
        _exit(0);
    }
    close(pipefd[1]);
    struct as_result r = {1, 1};
    ck_assert_int_eq(read(pipefd[0], &r, sizeof r), (ssize_t)sizeof r);
    close(pipefd[0]);
    ck_assert_int_eq(wait_exit(pid), 0);
    return r;
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n - 2;
}

/*
 * The cache root's parents, each case as the victim (uid VICTIM) with a root it owns (0700):
 * only the directories above it differ.
 */
START_TEST(test_cache_parents)
{
    need_root();
    struct as_result r;
    /* Writable by others, not sticky: anyone could rename our root away and put theirs. */
    mkdir_as(at("pub"), 0777, 0);
    mkdir_as(at("pub/cache"), 0700, VICTIM);
    r = cache_as(VICTIM, at("pub/cache"));
    ck_assert_int_eq(r.path, -EPERM);
    ck_assert_int_eq(r.open, -EPERM);
    ck_assert_int_eq(entries(at("pub/cache")), 0); /* refused, and nothing written there */
    /* Missing below such a parent: refused before anything is created in it. */
    r = cache_as(VICTIM, at("pub/new/cache"));
    ck_assert_int_eq(r.path, -EPERM);
    ck_assert_int_eq(entries(at("pub")), 1);
    /* Group-writable is as bad. */
    mkdir_as(at("grp"), 0775, 0);
    mkdir_as(at("grp/cache"), 0700, VICTIM);
    ck_assert_int_eq(cache_as(VICTIM, at("grp/cache")).path, -EPERM);
    /* Owned by another user (not root), even if only they can write it. */
    mkdir_as(at("theirs"), 0755, ATTACKER);
    mkdir_as(at("theirs/cache"), 0700, VICTIM);
    ck_assert_int_eq(cache_as(VICTIM, at("theirs/cache")).path, -EPERM);
    /* Sticky and world-writable (like /tmp) with our directory next: fine. */
    mkdir_as(at("sticky"), 01777, 0);
    mkdir_as(at("sticky/mine"), 0700, VICTIM);
    r = cache_as(VICTIM, at("sticky/mine"));
    ck_assert_int_eq(r.path, 0);
    ck_assert_int_eq(r.open, 0);
    /* A root created fresh in a sticky directory: it will be ours, so fine too. */
    r = cache_as(VICTIM, at("sticky/fresh/cache"));
    ck_assert_int_eq(r.path, 0);
    /* Sticky, but the next level is the attacker's: they could swap what is under it. */
    mkdir_as(at("sticky/att"), 0755, ATTACKER);
    mkdir_as(at("sticky/att/cache"), 0700, VICTIM);
    ck_assert_int_eq(cache_as(VICTIM, at("sticky/att/cache")).path, -EPERM);
    /* A symlink the attacker planted in the sticky directory, to their own tree: the resolved
     * path is judged, so it is refused. */
    ck_assert_int_eq(symlink(at("sticky/att"), at("sticky/link")), 0);
    ck_assert_int_eq(lchown(at("sticky/link"), ATTACKER, ATTACKER), 0);
    ck_assert_int_eq(cache_as(VICTIM, at("sticky/link/cache")).path, -EPERM);
    /* A symlink to the victim's own, trusted tree is fine: the path returned is resolved. */
    ck_assert_int_eq(symlink(at("sticky/mine"), at("sticky/link2")), 0);
    ck_assert_int_eq(cache_as(VICTIM, at("sticky/link2")).path, 0);
}
END_TEST

/*
 * The attack itself, deterministic: the victim's cache root sits in a directory the attacker
 * may write. After the victim's call returns, the attacker renames the root away and puts a
 * tree of their own in its place; the victim then opens the path it was given. Refusing the
 * root (the call fails) is the only safe answer.
 */
START_TEST(test_cache_parent_swap_attack)
{
    need_root();
    mkdir_as(at("shared"), 0777, 0);
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t victim = fork();
    ck_assert_int_ge(victim, 0);
    if (victim == 0) {
        become(VICTIM);
        setenv("SMKERNEL_CACHE_DIR", at("shared/cache"), 1);
        char p[PATH_MAX] = "";
        int r = smk_asset_path(SMK_ASSET_KERNEL, p, sizeof p);
        if (write(pipefd[1], p, sizeof p) != (ssize_t)sizeof p)
            _exit(91);
        /* Wait for the attacker, then use the path as a VMM would. */
        char go;
        if (r == 0 && read(pipefd[0], &go, 1) == 1 && smk_verify_file(SMK_ASSET_KERNEL, p) != 0)
            _exit(66); /* opened the attacker's file */
        _exit(r == -EPERM ? 0 : r == 0 ? 65 : 64);
    }
    char p[PATH_MAX];
    size_t got = 0;
    for (ssize_t k; got < sizeof p && (k = read(pipefd[0], p + got, sizeof p - got)) > 0;)
        got += (size_t)k;
    ck_assert_uint_eq(got, sizeof p);
    if (p[0]) {
        /* The victim got a path: swap the tree under it, as the attacker. */
        pid_t attacker = fork();
        ck_assert_int_ge(attacker, 0);
        if (attacker == 0) {
            become(ATTACKER);
            char cmd[3 * PATH_MAX];
            snprintf(cmd, sizeof cmd,
                     "mv '%s' '%s' && mkdir -p \"$(dirname '%s')\" && echo evil > '%s'",
                     at("shared/cache"), at("shared/old"), p, p);
            _exit(system(cmd) == 0 ? 0 : 1);
        }
        ck_assert_int_eq(wait_exit(attacker), 0);
    }
    ck_assert_int_eq(write(pipefd[1], "g", 1), 1);
    int code = wait_exit(victim);
    ck_assert_msg(code != 66, "the victim was handed the attacker's file");
    ck_assert_msg(code == 0, "smk_asset_path under a world-writable parent: exit %d, want -EPERM",
                  code);
}
END_TEST

/* An open descriptor cannot be swapped: replacing the cached file afterwards changes nothing. */
START_TEST(test_asset_open_fd)
{
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    int fd = smk_asset_open(a->id);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    char p[PATH_MAX];
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    ck_assert_int_eq(unlink(p), 0);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs("not the asset", f);
    fclose(f);
    unsigned char *want = malloc(a->size), *got = malloc(a->size + 1);
    ck_assert_int_eq(smk_decompress(a->id, want, a->size), 0);
    size_t n = 0;
    ssize_t k;
    while ((k = read(fd, got + n, a->size + 1 - n)) > 0)
        n += (size_t)k;
    close(fd);
    ck_assert_uint_eq(n, a->size);
    ck_assert(memcmp(want, got, a->size) == 0);
    /* The altered file is repaired by the next open, which hands out the checked file. */
    fd = smk_asset_open(a->id);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_int_eq(smk_verify_file(a->id, p), 0);
    ck_assert_int_eq(smk_asset_open(SMK_ASSET_ID_COUNT), -EINVAL);
    /* Relative roots and ".." are resolved: the path handed out is absolute and canonical. */
    char cwd[PATH_MAX], under[PATH_MAX];
    ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
    ck_assert_int_eq(chdir(tmp), 0);
    ck_assert_int_eq(mkdir("sub", 0755), 0);
    setenv("SMKERNEL_CACHE_DIR", "rel/cache", 1);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    snprintf(under, sizeof under, "%s/rel/cache/", tmp);
    ck_assert_msg(strncmp(p, under, strlen(under)) == 0, "'%s' is not under %s", p, under);
    setenv("SMKERNEL_CACHE_DIR", at("sub/../cache"), 1);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
    snprintf(under, sizeof under, "%s/cache/", tmp);
    ck_assert_msg(strncmp(p, under, strlen(under)) == 0, "'%s' is not under %s", p, under);
    setenv("SMKERNEL_CACHE_DIR", at("missing/../cache"), 1);
    ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), -EINVAL);
    ck_assert_int_eq(chdir(cwd), 0);
    free(want);
    free(got);
    unsetenv("SMKERNEL_CACHE_DIR");
}
END_TEST

/*
 * A setuid program must not take its cache from the environment of whoever runs it. The probe
 * (smk_cache_dir, printed) is copied here, made setuid root, and run as VICTIM with
 * SMKERNEL_CACHE_DIR, XDG_CACHE_HOME and HOME pointing at /evil; without the setuid bit the
 * same run must print /evil (the control).
 */
static void run_probe(const char *probe, char *out, size_t size)
{
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        become(VICTIM);
        char *argv[] = {(char *)probe, NULL};
        char *envp[] = {"SMKERNEL_CACHE_DIR=/evil/a", "XDG_CACHE_HOME=/evil/b", "HOME=/evil/c",
                        NULL};
        execve(probe, argv, envp);
        _exit(127);
    }
    close(pipefd[1]);
    ssize_t n = read(pipefd[0], out, size - 1);
    out[n > 0 ? n : 0] = '\0';
    close(pipefd[0]);
    ck_assert_int_eq(wait_exit(pid), 0);
}

START_TEST(test_setuid_ignores_environment)
{
    need_root();
    const char *src = getenv("SMK_SETUID_PROBE");
    ck_assert_ptr_nonnull(src);
    char cmd[1200], out[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, at("probe"));
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(chown(at("probe"), 0, 0), 0);
    ck_assert_int_eq(chmod(at("probe"), 0755), 0);
    run_probe(at("probe"), out, sizeof out);
    ck_assert_msg(strcmp(out, "0 /evil/a\n") == 0, "control run printed '%s'", out);
    ck_assert_int_eq(chmod(at("probe"), 04755), 0);
    run_probe(at("probe"), out, sizeof out);
    struct passwd *pw = getpwuid(0);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "0 %s/.cache/smkernel\n", pw->pw_dir);
    ck_assert_msg(strcmp(out, want) == 0, "setuid run printed '%s', want '%s'", out, want);
}
END_TEST

/* ---- smk_extract_all under resource limits ---- */

static void check_all_extracted(const char *dir)
{
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, list[i]->file_name);
        ck_assert_msg(smk_verify_file(list[i]->id, p) == 0, "%s missing or wrong", p);
    }
}

/* 8 descriptors allowed (5 free): all assets at once cannot open theirs; one by one can. */
START_TEST(test_extract_all_few_fds)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        struct rlimit rl = {8, 8};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(90);
        int r = smk_extract_all(at("out"), SMK_EXTRACT_PARENTS);
        _exit(r == 0 ? 0 : -r);
    }
    int code = wait_exit(pid);
    ck_assert_msg(code == 0, "smk_extract_all with 8 descriptors: -%d (%s)", code,
                  smk_strerror(-code));
    check_all_extracted(at("out"));
}
END_TEST

struct small_stack {
    const char *dir;
    int result;
};

static void *extract_all_thread(void *arg)
{
    struct small_stack *s = arg;
    s->result = smk_extract_all(s->dir, SMK_EXTRACT_PARENTS);
    return NULL;
}

/*
 * The caller on a 32 KiB stack (ASan's redzones need 4 times that for the same frames; some
 * arches' PTHREAD_STACK_MIN is larger). A crash kills the child, which the parent reports.
 */
START_TEST(test_extract_all_small_stack)
{
    size_t stack = 32 * 1024;
#if defined(__SANITIZE_ADDRESS__)
    stack *= 4;
#endif
    if (stack < (size_t)PTHREAD_STACK_MIN)
        stack = (size_t)PTHREAD_STACK_MIN;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        pthread_attr_t attr;
        pthread_t th;
        struct small_stack s = {at("small"), 1};
        if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, stack) != 0 ||
            pthread_create(&th, &attr, extract_all_thread, &s) != 0)
            _exit(90);
        pthread_join(th, NULL);
        _exit(s.result == 0 ? 0 : 91);
    }
    ck_assert_int_eq(wait_exit(pid), 0);
    check_all_extracted(at("small"));
}
END_TEST

/* ---- the stale-temporary sweep in a crowded directory ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fastest of 5 replacing extractions into dir (the sweep runs after each). */
static double replace_time(const char *dir)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/agent", dir);
    ck_assert_int_eq(smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, p, 0), 0);
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double t0 = now();
        ck_assert_int_eq(smk_extract(SMK_ASSET_SUPERMACHINE_AGENT, p, 0), 0);
        double t = now() - t0;
        best = t < best ? t : best;
    }
    return best;
}

/*
 * SMK_SWEEP_NAMES (200,000; fewer under qemu-user) names shaped like temporaries of writers on
 * other hosts, in a directory shared with the extraction: each extraction must cost about what
 * it costs in an empty directory, not one more name read per name there.
 */
START_TEST(test_sweep_bounded)
{
    const char *v = getenv("SMK_SWEEP_NAMES");
    int names = v && *v ? atoi(v) : 200000;
    ck_assert_int_eq(mkdir(at("empty"), 0755), 0);
    ck_assert_int_eq(mkdir(at("crowded"), 0755), 0);
    int dfd = open(at("crowded"), O_RDONLY | O_DIRECTORY);
    ck_assert_int_ge(dfd, 0);
    for (int i = 0; i < names; i++) {
        char name[64];
        snprintf(name, sizeof name, ".smk-tmp-%08x-%d-%016llx", 0x1000u + (unsigned)i % 7, 100 + i,
                 (unsigned long long)i * 0x9E3779B97F4A7C15ull);
        int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL, 0600);
        ck_assert_int_ge(fd, 0);
        close(fd);
    }
    close(dfd);
    double empty = replace_time(at("empty"));
    double crowded = replace_time(at("crowded"));
    printf("sweep: replacing extraction, best of 5: %.4f s in an empty directory, %.4f s among "
           "%d temporary-like names\n",
           empty, crowded, names);
    ck_assert_msg(crowded < 2 * empty + 0.05,
                  "%d names cost each extraction %.4f s more: the sweep is not bounded", names,
                  crowded - empty);
    /* And none of those names (other hosts' temporaries) was touched. */
    ck_assert_int_eq(entries(at("crowded")), names + 1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("reliability");
    TCase *tc = tcase_create("cache");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_cache_parents);
    tcase_add_test(tc, test_cache_parent_swap_attack);
    tcase_add_test(tc, test_asset_open_fd);
    /* Native builds only: the probe is set up by meson there (a setuid binary cannot be run
     * through qemu-user). */
    if (getenv("SMK_SETUID_PROBE"))
        tcase_add_test(tc, test_setuid_ignores_environment);
    suite_add_tcase(s, tc);
    tc = tcase_create("limits");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_extract_all_few_fds);
    tcase_add_test(tc, test_extract_all_small_stack);
    tcase_add_test(tc, test_sweep_bounded);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(suite(), CK_NORMAL);
}
