/*
 * CLI tests (Check): run the smkernel binary ($SMKERNEL_CLI, through $SMK_TEST_WRAPPER when
 * cross-built) and check exit codes, output and the files it writes. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include <smkernel.h>

#include "scratch.h"
#include "run-suite.h"

static char out[1 << 16], err[1 << 16];

static void slurp(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, size - 1, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
}

/* Run the CLI with the given arguments (NULL-terminated); returns its exit status. */
static int run(const char *first, ...)
{
    char *argv[64];
    int n = 0;
    char *wrapper = getenv("SMK_TEST_WRAPPER") ? strdup(getenv("SMK_TEST_WRAPPER")) : NULL;
    for (char *w = wrapper ? strtok(wrapper, " ") : NULL; w; w = strtok(NULL, " "))
        argv[n++] = w;
    argv[n++] = getenv("SMKERNEL_CLI");
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 62; a = va_arg(ap, const char *))
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;

    char o[300], e[300];
    snprintf(o, sizeof o, "%s/.out", tmp);
    snprintf(e, sizeof e, "%s/.err", tmp);
    pid_t p = fork();
    ck_assert_int_ge(p, 0);
    if (p == 0) {
        int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    ck_assert_int_eq(waitpid(p, &st, 0), p);
    free(wrapper);
    slurp(o, out, sizeof out);
    slurp(e, err, sizeof err);
    ck_assert(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void setup(void)
{
    scratch_make("cli");
    ck_assert_ptr_nonnull(getenv("SMKERNEL_CLI"));
}

static void teardown(void)
{
    ck_assert_int_eq(scratch_remove(), 0);
}

START_TEST(test_help_and_version)
{
    ck_assert_int_eq(run("--help", (char *)NULL), 0);
    ck_assert(strstr(out, "usage: smkernel") != NULL);
    ck_assert_int_eq(run("--version", (char *)NULL), 0);
    ck_assert(strstr(out, smk_version()) != NULL);
    ck_assert(strstr(out, smk_arch()) != NULL);
    ck_assert_int_eq(run(NULL), 2);
    ck_assert(strstr(err, "missing command") != NULL);
    ck_assert_int_eq(run("frobnicate", (char *)NULL), 2);
    ck_assert(strstr(err, "unknown command 'frobnicate'") != NULL);
}
END_TEST

START_TEST(test_list)
{
    ck_assert_int_eq(run("list", (char *)NULL), 0);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(strstr(out, list[i]->name) && strstr(out, list[i]->sha256_hex) &&
                          strstr(out, list[i]->license),
                      "list lacks %s", list[i]->name);
    }
    ck_assert_int_eq(run("list", "extra", (char *)NULL), 2);
}
END_TEST

START_TEST(test_extract_and_verify)
{
    ck_assert_int_eq(run("extract", "kernel", at("k"), (char *)NULL), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("k")), 0);
    ck_assert_int_eq(run("verify", "kernel", at("k"), (char *)NULL), 0);
    ck_assert(strstr(out, "OK") != NULL);
    /* By file name too. */
    const char *file = smk_asset_get(SMK_ASSET_KERNEL)->file_name;
    ck_assert_int_eq(run("verify", file, at("k"), (char *)NULL), 0);
    ck_assert_int_eq(run("verify", "supermachine-agent", at("k"), (char *)NULL), 1);
    ck_assert(strstr(err, "does not hold supermachine-agent") != NULL);
    ck_assert_int_eq(run("verify", "kernel", at("none"), (char *)NULL), 1);
    ck_assert_int_eq(run("extract", "kernel", at("a/b/k"), (char *)NULL), 1);
    ck_assert(strstr(err, "cannot write") != NULL);
    ck_assert_int_eq(run("extract", "--parents", "kernel", at("a/b/k"), (char *)NULL), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("a/b/k")), 0);
    ck_assert_int_eq(run("extract", "no-such", at("x"), (char *)NULL), 2);
    ck_assert(strstr(err, "unknown asset 'no-such'") != NULL);
    ck_assert_int_eq(run("extract", "kernel", (char *)NULL), 2);
    ck_assert_int_eq(run("extract", "kernel", tmp, (char *)NULL), 1);
    ck_assert(strstr(err, "directory") != NULL);
}
END_TEST

START_TEST(test_extract_all)
{
    ck_assert_int_eq(run("extract", "--all", at("all/dir"), (char *)NULL), 0);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/all/dir/%s", tmp, list[i]->file_name);
        ck_assert_int_eq(smk_verify_file(list[i]->id, p), 0);
        ck_assert(strstr(out, p) != NULL);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, list[i]->mode);
    }
    ck_assert_int_eq(run("extract", "--all", (char *)NULL), 2);
}
END_TEST

START_TEST(test_path)
{
    setenv("SMKERNEL_CACHE_DIR", at("cache"), 1);
    ck_assert_int_eq(run("path", "supermachine-agent", (char *)NULL), 0);
    out[strcspn(out, "\n")] = '\0';
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_SUPERMACHINE_AGENT, out), 0);
    static char first[sizeof out];
    memcpy(first, out, sizeof out);
    ck_assert_int_eq(run("path", "supermachine-agent", (char *)NULL), 0);
    out[strcspn(out, "\n")] = '\0';
    ck_assert_str_eq(out, first);
    ck_assert_int_eq(chmod(at("cache"), 0777), 0);
    ck_assert_int_eq(run("path", "kernel", (char *)NULL), 1);
    ck_assert(strstr(err, "not permitted") != NULL);
    unsetenv("SMKERNEL_CACHE_DIR");
}
END_TEST

START_TEST(test_initramfs)
{
    FILE *f = fopen(at("hello"), "w");
    fputs("hello\n", f);
    fclose(f);
    char add[700];
    snprintf(add, sizeof add, "%s:/opt/hello:0755", at("hello"));
    ck_assert_int_eq(run("initramfs", "--add", add, at("initrd"), (char *)NULL), 0);
    struct stat st;
    ck_assert_int_eq(stat(at("initrd"), &st), 0);
    ck_assert_int_gt(st.st_size, (off_t)smk_asset_get(SMK_ASSET_SUPERMACHINE_AGENT)->size);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cpio -it < '%s' 2>/dev/null | grep -qx opt/hello", at("initrd"));
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(run("initramfs", "--add", "nocolon", at("i2"), (char *)NULL), 2);
    ck_assert_int_eq(run("initramfs", "--add", "/x:relative", at("i2"), (char *)NULL), 2);
    ck_assert_int_eq(run("initramfs", "--add", "/nonexistent:/x", at("i2"), (char *)NULL), 1);
    ck_assert_int_eq(access(at("i2"), F_OK), -1);
    ck_assert_int_eq(run("initramfs", (char *)NULL), 2);
}
END_TEST

START_TEST(test_cmdline)
{
    ck_assert_int_eq(run("cmdline", (char *)NULL), 0);
    ck_assert(strstr(out, smk_kernel_cmdline()) != NULL);
}
END_TEST

/* Every usage and input error names the argument at fault, and writes nothing. */
START_TEST(test_errors_name_the_fault)
{
    FILE *f = fopen(at("hello"), "w");
    fputs("hello\n", f);
    fclose(f);
    char add[700];

    ck_assert_int_eq(
        run("initramfs", "--add", "/nonexistent-host-file:/x", at("o.cpio"), (char *)NULL), 1);
    ck_assert_msg(strstr(err, "cannot read /nonexistent-host-file") != NULL, "%s", err);
    ck_assert(strstr(err, "o.cpio") == NULL);
    ck_assert_int_eq(access(at("o.cpio"), F_OK), -1);

    snprintf(add, sizeof add, "%s:/etc2", tmp);
    ck_assert_int_eq(run("initramfs", "--add", add, at("o.cpio"), (char *)NULL), 1);
    ck_assert_msg(strstr(err, tmp) && strstr(err, "is a directory"), "%s", err);
    ck_assert(strstr(err, "o.cpio") == NULL);

    snprintf(add, sizeof add, "%s:/x:999", at("hello"));
    ck_assert_int_eq(run("initramfs", "--add", add, at("o.cpio"), (char *)NULL), 2);
    ck_assert_msg(strstr(err, "MODE '999'") && strstr(err, add), "%s", err);

    ck_assert_int_eq(run("initramfs", "--add", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "--add needs a value") != NULL, "%s", err);

    ck_assert_int_eq(run("cmdline", "x", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "cmdline takes no arguments, not 'x'") != NULL, "%s", err);

    /* A missing parent is named as such, not as a missing file or asset. */
    ck_assert_int_eq(run("extract", "kernel", at("nod/sub/k"), (char *)NULL), 1);
    ck_assert_msg(strstr(err, "directory") && strstr(err, "nod/sub does not exist") &&
                      strstr(err, "--parents"),
                  "%s", err);
    ck_assert_int_eq(run("initramfs", at("nod/x.cpio"), (char *)NULL), 1);
    ck_assert_msg(strstr(err, "nod does not exist") != NULL, "%s", err);
    ck_assert_int_eq(run("extract", "kernel", at("hello/k"), (char *)NULL), 1);
    ck_assert_msg(strstr(err, "hello is not a directory") != NULL, "%s", err);

    ck_assert_int_eq(run("extract", "--bogus", "kernel", at("k"), (char *)NULL), 2);
    ck_assert_msg(strstr(err, "unknown option '--bogus' for extract") != NULL, "%s", err);
    ck_assert_int_eq(run("list", "extra", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "list takes no arguments, not 'extra'") != NULL, "%s", err);

    ck_assert_int_eq(run("agent", "--connect", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "--connect needs a value") != NULL, "%s", err);
    ck_assert_int_eq(run("agent", "--timeout", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "--timeout needs a value") != NULL, "%s", err);
    ck_assert_int_eq(run("agent", "--bogus", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "unknown option '--bogus'") != NULL, "%s", err);
    ck_assert_int_eq(run("agent", "--connect", "unix:/nonexistent", "frob", (char *)NULL), 2);
    ck_assert_msg(strstr(err, "unknown command 'frob'") != NULL, "%s", err);
}
END_TEST

/* --parents and --all in either order; "--" ends the options. */
START_TEST(test_options)
{
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    const char *order[2][2] = {{"--parents", "--all"}, {"--all", "--parents"}};
    for (int o = 0; o < 2; o++) {
        char dir[300];
        snprintf(dir, sizeof dir, "p%d/q/r", o);
        ck_assert_int_eq(run("extract", order[o][0], order[o][1], at(dir), (char *)NULL), 0);
        for (size_t i = 0; i < n; i++) {
            char p[700];
            snprintf(p, sizeof p, "%s/%s", at(dir), list[i]->file_name);
            ck_assert_int_eq(smk_verify_file(list[i]->id, p), 0);
        }
    }
    ck_assert_int_eq(run("extract", "--", "kernel", at("dd"), (char *)NULL), 0);
    ck_assert_int_eq(smk_verify_file(SMK_ASSET_KERNEL, at("dd")), 0);
    ck_assert_int_eq(run("extract", "--", "--all", at("x"), (char *)NULL), 2);
    ck_assert_msg(strstr(err, "unknown asset '--all'") != NULL, "%s", err);
    ck_assert_int_eq(run("initramfs", "--parents", "--", at("i/j/-x.cpio"), (char *)NULL), 0);
    ck_assert_int_eq(access(at("i/j/-x.cpio"), F_OK), 0);
    ck_assert_int_eq(run("cmdline", "--", (char *)NULL), 0);

    const char *cmds[] = {"list", "extract", "initramfs", "verify", "path", "cmdline", "agent"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        ck_assert_int_eq(run(cmds[i], "--help", (char *)NULL), 0);
        char want[64];
        snprintf(want, sizeof want, "usage: smkernel %s", cmds[i]);
        ck_assert_msg(strstr(out, want) != NULL, "%s --help: %s", cmds[i], out);
        ck_assert_str_eq(err, "");
    }
}
END_TEST

/* list: tab-separated without blanks inside a field; list --json: valid JSON, same facts. */
START_TEST(test_list_formats)
{
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    ck_assert_int_eq(run("list", (char *)NULL), 0);
    ck_assert_msg(
        strncmp(out, "NAME\tFILE\tSIZE\tBLOB\tMODE\tCODEC\tSHA256\tVERSION\tLICENSE\n",
                strlen("NAME\tFILE\tSIZE\tBLOB\tMODE\tCODEC\tSHA256\tVERSION\tLICENSE\n")) == 0,
        "%s", out);
    ck_assert(strchr(out, ' ') == NULL);
    size_t lines = 0;
    for (char *line = out; *line; lines++) {
        char *end = strchr(line, '\n');
        ck_assert_ptr_nonnull(end);
        int tabs = 0;
        for (char *c = line; c < end; c++)
            tabs += *c == '\t';
        ck_assert_int_eq(tabs, 8);
        line = end + 1;
    }
    ck_assert_uint_eq(lines, n + 1);

    ck_assert_int_eq(run("list", "--json", (char *)NULL), 0);
    char script[2000];
    int len = snprintf(script, sizeof script,
                       "python3 -c 'import json,sys\n"
                       "d = json.load(open(sys.argv[1]))\n"
                       "assert d[\"version\"] == \"%s\" and d[\"arch\"] == \"%s\", d\n"
                       "assert len(d[\"assets\"]) == %zu, d\n",
                       smk_version(), smk_arch(), n);
    for (size_t i = 0; i < n; i++) {
        len += snprintf(script + len, sizeof script - (size_t)len,
                        "a = d[\"assets\"][%zu]\n"
                        "assert (a[\"name\"], a[\"size\"], a[\"sha256\"], a[\"mode\"]) == "
                        "(\"%s\", %llu, \"%s\", \"%04o\"), a\n",
                        i, list[i]->name, (unsigned long long)list[i]->size, list[i]->sha256_hex,
                        list[i]->mode);
    }
    snprintf(script + len, sizeof script - (size_t)len, "' '%s'", at(".out"));
    ck_assert_int_eq(system(script), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("smkernel cli");
    TCase *tc = tcase_create("commands");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_list);
    tcase_add_test(tc, test_extract_and_verify);
    tcase_add_test(tc, test_extract_all);
    tcase_add_test(tc, test_path);
    tcase_add_test(tc, test_initramfs);
    tcase_add_test(tc, test_cmdline);
    tcase_add_test(tc, test_errors_name_the_fault);
    tcase_add_test(tc, test_options);
    tcase_add_test(tc, test_list_formats);
    suite_add_tcase(s, tc);
    return run_suite(s, CK_NORMAL);
}
