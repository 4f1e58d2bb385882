/*
 * Facade tests (Check): the arch-agnostic header, and extraction racing across processes
 * while readers hash the target. The stress defaults are the full run, 64 processes x 100
 * rounds; SMK_STRESS_WRITERS, SMK_STRESS_ROUNDS and SMK_STRESS_READERS change them (the cross
 * build under qemu-user runs a shorter variant). SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <nettle/sha2.h>

#include <smkernel.h>

#include "scratch.h"
#include "run-suite.h"

static int env_int(const char *name, int dflt)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

START_TEST(test_header_dispatch)
{
#if defined(__x86_64__)
    ck_assert_str_eq(smk_arch(), "x86_64");
    ck_assert_int_eq(SMK_HAVE_BUSYBOX, 1);
    ck_assert_int_eq(SMK_HAVE_INIT_OCI, 1);
    ck_assert_ptr_nonnull(smk_asset_get(SMK_ASSET_BUSYBOX));
    int (*arch_only)(const char *) = smk_extract_busybox_to;
#elif defined(__aarch64__)
    ck_assert_str_eq(smk_arch(), "aarch64");
    ck_assert_int_eq(SMK_HAVE_INIT_OCI + SMK_HAVE_SMPARK_KO, 2);
    int (*arch_only)(const char *) = smk_extract_smpark_ko_to;
#endif
    ck_assert_ptr_nonnull(arch_only);
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_KERNEL)->size, SMK_KERNEL_LEN);
    ck_assert_uint_eq(smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT)->size,
                      SMK_SUPERMACHINE_AGENT_LEN);
    ck_assert_str_eq(smk_version(), SMK_VERSION_STRING);
}
END_TEST

static bool is_asset(const struct smk_asset *a, const unsigned char *buf, size_t len)
{
    if (len != a->size)
        return false;
    struct sha256_ctx c;
    unsigned char d[32];
    sha256_init(&c);
    sha256_update(&c, len, buf);
    sha256_digest(&c, 32, d);
    return memcmp(d, a->sha256, 32) == 0;
}

static const char old_bytes[] = "the previous complete file";

/* Read the whole file through one descriptor: one inode, whatever renames happen meanwhile. */
static int read_check(const struct smk_asset *a, const char *path, unsigned char *buf)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 1;
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, a->size + 64 - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (len == sizeof old_bytes - 1 && memcmp(buf, old_bytes, len) == 0)
        return 0;
    return is_asset(a, buf, len) ? 0 : 2;
}

static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strncmp(e->d_name, ".smk-tmp-", 9) == 0;
    if (d)
        closedir(d);
    return n;
}

/*
 * Writers extract the same asset to one path over and over while readers keep reading it:
 * every read must be the previous complete file or the complete asset, never a mix.
 */
START_TEST(test_processes_extract_one_path)
{
    scratch_make("facade");
    int writers = env_int("SMK_STRESS_WRITERS", 64), rounds = env_int("SMK_STRESS_ROUNDS", 100);
    int readers = env_int("SMK_STRESS_READERS", 4);
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    char path[300];
    snprintf(path, sizeof path, "%s/agent", tmp);
    FILE *f = fopen(path, "w");
    fputs(old_bytes, f);
    fclose(f);

    pid_t pids[512];
    int np = 0;
    for (int w = 0; w < writers && np < 512; w++) {
        pid_t p = fork();
        ck_assert_int_ge(p, 0);
        if (p == 0) {
            for (int r = 0; r < rounds; r++)
                if (smk_extract(a->id, path, 0) != 0)
                    _exit(3);
            _exit(0);
        }
        pids[np++] = p;
    }
    char stop[320];
    snprintf(stop, sizeof stop, "%s/stop", tmp);
    for (int r = 0; r < readers && np < 512; r++) {
        pid_t p = fork();
        ck_assert_int_ge(p, 0);
        if (p == 0) {
            unsigned char *buf = malloc(a->size + 64);
            int reads = 0;
            while (access(stop, F_OK) != 0 || reads < 10) {
                if (read_check(a, path, buf) == 2)
                    _exit(4);
                reads++;
            }
            _exit(0);
        }
        pids[np++] = p;
    }
    for (int i = 0; i < writers; i++) {
        int st;
        ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d failed: status %d", i, st);
    }
    fclose(fopen(stop, "w"));
    for (int i = writers; i < np; i++) {
        int st;
        ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader saw a partial or wrong file");
    }
    ck_assert_int_eq(smk_verify_file(a->id, path), 0);
    ck_assert_int_eq(count_temps(tmp), 0);
    ck_assert_int_eq(scratch_remove(), 0);
}
END_TEST

/*
 * Round after round, a fresh (cold) cache and many processes released at once to ask for the
 * same asset: every one gets the path of the one correct file, and no temporary remains.
 */
START_TEST(test_processes_cold_cache)
{
    scratch_make("facade");
    int procs = env_int("SMK_STRESS_WRITERS", 64), rounds = env_int("SMK_STRESS_ROUNDS", 100);
    const struct smk_asset *a = smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT);
    unsigned char *buf = malloc(a->size + 64);
    for (int round = 0; round < rounds; round++) {
        char cache[300];
        snprintf(cache, sizeof cache, "%s/cache-%d", tmp, round);
        setenv("SMKERNEL_CACHE_DIR", cache, 1);
        int gate[2];
        ck_assert_int_eq(pipe(gate), 0);
        pid_t pids[512];
        int np = 0;
        for (int i = 0; i < procs && np < 512; i++) {
            pid_t p = fork();
            ck_assert_int_ge(p, 0);
            if (p == 0) {
                char c, path[1024];
                close(gate[1]);
                if (read(gate[0], &c, 1) != 0) /* returns 0 when the parent opens the gate */
                    _exit(2);
                if (smk_asset_path(a->id, path, sizeof path) != 0)
                    _exit(3);
                _exit(read_check(a, path, buf) == 0 ? 0 : 4);
            }
            pids[np++] = p;
        }
        close(gate[0]);
        close(gate[1]); /* all at once */
        for (int i = 0; i < np; i++) {
            int st;
            ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "round %d, process %d: status %d",
                          round, i, st);
        }
        char p[1024];
        ck_assert_int_eq(smk_asset_path(a->id, p, sizeof p), 0);
        ck_assert_int_eq(read_check(a, p, buf), 0);
        *strrchr(p, '/') = '\0';
        ck_assert_int_eq(count_temps(p), 0);
    }
    free(buf);
    unsetenv("SMKERNEL_CACHE_DIR");
    ck_assert_int_eq(scratch_remove(), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smkernel facade");
    TCase *api = tcase_create("header");
    tcase_add_test(api, test_header_dispatch);
    suite_add_tcase(s, api);
    TCase *conc = tcase_create("processes");
    tcase_set_timeout(conc, 600);
    tcase_add_test(conc, test_processes_extract_one_path);
    tcase_add_test(conc, test_processes_cold_cache);
    suite_add_tcase(s, conc);
    return run_suite(s, CK_NORMAL);
}
