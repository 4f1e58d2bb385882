/*
 * smkernel: the command-line face of libsmkernel — list, extract, verify and cache the guest
 * assets this build ships, and write a bootable initramfs. SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <smkernel.h>

#include "agent-cli.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage[] =
    "usage: smkernel COMMAND [ARGS]\n"
    "\n"
    "The supermachine guest runtime for this host's arch, embedded in libsmkernel.\n"
    "\n"
    "commands:\n"
    "  list [--json]                the assets: name, file, sizes, mode, codec, SHA-256,\n"
    "                               version, license (tab-separated, or JSON)\n"
    "  extract [--parents] ASSET PATH\n"
    "                               write ASSET to PATH atomically (--parents: mkdir -p);\n"
    "                               on x86_64 ASSET may also be 'vmlinux': the kernel as a\n"
    "                               PVH-bootable ELF, derived from the bzImage\n"
    "  extract [--parents] --all DIR\n"
    "                               write every asset into DIR (created if missing)\n"
    "  initramfs [--parents] [--add HOST:GUEST[:MODE]]... PATH\n"
    "                               write a bootable initramfs (cpio newc) for this arch\n"
    "  verify ASSET PATH            check that PATH holds exactly ASSET's bytes\n"
    "  path ASSET                   print ASSET's path in the per-user cache, filling it\n"
    "  cmdline                      print the kernel command line the kernel is tuned for\n"
    "  agent --connect ADDR ping|exec|cp|shutdown ...\n"
    "                               drive the guest agent (smkernel agent --help)\n"
    "  --version, --help            also COMMAND --help\n"
    "\n"
    "ASSET is a name or file name from 'smkernel list'. '--' ends the options. Exit status:\n"
    "0 success, 1 failure, 2 usage error. The cache is $SMKERNEL_CACHE_DIR, else\n"
    "$XDG_CACHE_HOME/smkernel, else ~/.cache/smkernel.\n";

/* Each command's own --help. */
static const char usage_list[] =
    "usage: smkernel list [--json]\n"
    "\n"
    "One line per asset, tab-separated, after a header line: NAME FILE SIZE BLOB MODE CODEC\n"
    "SHA256 VERSION LICENSE. No field holds a blank (a blank inside a version is written '_').\n"
    "--json: one JSON object {\"version\", \"arch\", \"assets\": [...]} with the exact strings.\n";
static const char usage_extract[] =
    "usage: smkernel extract [--parents] ASSET PATH\n"
    "       smkernel extract [--parents] --all DIR\n"
    "\n"
    "Write ASSET (a name or file name from 'smkernel list') to PATH: decompressed, checked,\n"
    "fsynced and published atomically. --parents creates missing parent directories. --all\n"
    "writes every asset into DIR under its file name, creating DIR and its parents.\n"
    "On x86_64, ASSET 'vmlinux' is the kernel as a PVH-bootable ELF.\n";
static const char usage_initramfs[] =
    "usage: smkernel initramfs [--parents] [--add HOST:GUEST[:MODE]]... PATH\n"
    "\n"
    "Write a bootable initramfs (cpio newc) for this arch: the agent and its init, plus each\n"
    "--add: the regular file HOST at the absolute guest path GUEST, with octal MODE (default\n"
    "0644). --parents creates PATH's missing parent directories.\n";
static const char usage_verify[] = "usage: smkernel verify ASSET PATH\n"
                                   "\n"
                                   "Exit 0 if PATH holds exactly ASSET's bytes, 1 if not.\n";
static const char usage_path[] =
    "usage: smkernel path ASSET\n"
    "\n"
    "Print ASSET's path in the per-user cache, extracting it there first if needed.\n";
static const char usage_cmdline[] =
    "usage: smkernel cmdline\n"
    "\n"
    "Print the kernel command line the embedded kernel is tuned for.\n";

__attribute__((format(printf, 2, 3))) static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smkernel: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'smkernel %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
    return EXIT_USAGE;
}

/* The nearest missing or non-directory ancestor of path, for "directory X does not exist". */
static int parent_problem(const char *path, char *dir, size_t size)
{
    if (strlen(path) >= size)
        return 0;
    strcpy(dir, path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    return -errno;
}

/* Name the thing at fault: a missing parent directory rather than the file to be written. */
static int fail_write(const char *what, const char *path, int err, int parents)
{
    char dir[PATH_MAX];
    int p = (err == -ENOENT || err == -ENOTDIR) ? parent_problem(path, dir, sizeof dir) : 0;
    if (p == -ENOENT && !parents)
        fprintf(stderr, "smkernel: %s %s: directory %s does not exist (--parents creates it)\n",
                what, path, dir);
    else if (p == -ENOTDIR)
        fprintf(stderr, "smkernel: %s %s: %s is not a directory\n", what, path, dir);
    else
        fprintf(stderr, "smkernel: %s %s: %s\n", what, path, smk_strerror(err));
    return EXIT_FAIL;
}

static int fail(const char *what, const char *arg, int err)
{
    fprintf(stderr, "smkernel: %s %s: %s\n", what, arg, smk_strerror(err));
    return EXIT_FAIL;
}

static const struct smk_asset *asset_arg(const char *name)
{
    const struct smk_asset *a = smk_asset_find(name);
    if (a)
        return a;
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    fprintf(stderr, "smkernel: unknown asset '%s'; this %s build ships:", name, smk_arch());
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %s", list[i]->name);
    fputc('\n', stderr);
    return NULL;
}

/*
 * The options of one command: flags named in `flags` (each sets its bit in *set), and at most
 * one option taking a value, `valopt`, whose values go to vals (as many as argc). Stops at the
 * first operand or after "--". Returns the index of the first operand, or -1 after printing a
 * usage error (or -2 after printing the command's --help).
 */
struct cmd_spec {
    const char *name, *help;
    const char *const *flags; /* NULL-terminated */
    const char *valopt, *valname;
};

static int parse_opts(const struct cmd_spec *c, int argc, char **argv, unsigned int *set,
                      char **vals, size_t *nvals)
{
    int i = 0;
    *set = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0)
            return i + 1;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) {
            fputs(c->help, stdout);
            return -2;
        }
        int known = 0;
        for (unsigned int f = 0; c->flags && c->flags[f]; f++) {
            if (strcmp(o, c->flags[f]) == 0) {
                *set |= 1u << f;
                known = 1;
            }
        }
        if (known)
            continue;
        if (c->valopt && strcmp(o, c->valopt) == 0) {
            if (i + 1 >= argc) {
                usage_error(c->name, "%s %s needs a value (%s)", c->name, o, c->valname);
                return -1;
            }
            vals[(*nvals)++] = argv[++i];
            continue;
        }
        usage_error(c->name, "unknown option '%s' for %s", o, c->name);
        return -1;
    }
    return i;
}

/* The exit status for parse_opts()'s -1 (usage error) and -2 (--help printed). */
static int parse_exit(int i)
{
    return i == -2 ? 0 : EXIT_USAGE;
}

static void tsv_field(const char *s, int last)
{
    for (; *s; s++)
        putchar(*s == ' ' || *s == '\t' || *s == '\n' ? '_' : *s);
    putchar(last ? '\n' : '\t');
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int cmd_list(int argc, char **argv)
{
    static const char *const flags[] = {"--json", NULL};
    static const struct cmd_spec spec = {"list", usage_list, flags, NULL, NULL};
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, NULL, NULL);
    if (i < 0)
        return parse_exit(i);
    if (i != argc)
        return usage_error("list", "list takes no arguments, not '%s'", argv[i]);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    if (set & 1) {
        printf("{\"version\": ");
        json_string(smk_version());
        printf(", \"arch\": ");
        json_string(smk_arch());
        printf(", \"assets\": [");
        for (size_t k = 0; k < n; k++) {
            const struct smk_asset *a = list[k];
            printf("%s\n  {\"name\": ", k ? "," : "");
            json_string(a->name);
            printf(", \"file\": ");
            json_string(a->file_name);
            printf(", \"size\": %llu, \"blob_size\": %llu, \"mode\": \"%04o\", \"codec\": ",
                   (unsigned long long)a->size, (unsigned long long)a->blob_size, a->mode);
            json_string(a->codec);
            printf(", \"sha256\": ");
            json_string(a->sha256_hex);
            printf(", \"version\": ");
            json_string(a->version);
            printf(", \"license\": ");
            json_string(a->license);
            printf("}");
        }
        printf("\n]}\n");
        return 0;
    }
    printf("NAME\tFILE\tSIZE\tBLOB\tMODE\tCODEC\tSHA256\tVERSION\tLICENSE\n");
    for (size_t k = 0; k < n; k++) {
        const struct smk_asset *a = list[k];
        tsv_field(a->name, 0);
        tsv_field(a->file_name, 0);
        printf("%llu\t%llu\t%04o\t", (unsigned long long)a->size, (unsigned long long)a->blob_size,
               a->mode);
        tsv_field(a->codec, 0);
        tsv_field(a->sha256_hex, 0);
        tsv_field(a->version, 0);
        tsv_field(a->license, 1);
    }
    return 0;
}

static int extract_all(const char *dir)
{
    int r = smk_extract_all(dir, SMK_EXTRACT_PARENTS);
    if (r != 0)
        return fail_write("cannot write into", dir, r, 1);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++)
        printf("%s/%s\t%llu\t%s\n", dir, list[i]->file_name, (unsigned long long)list[i]->size,
               list[i]->name);
    return 0;
}

static int cmd_extract(int argc, char **argv)
{
    static const char *const flags[] = {"--parents", "--all", NULL};
    static const struct cmd_spec spec = {"extract", usage_extract, flags, NULL, NULL};
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, NULL, NULL);
    if (i < 0)
        return parse_exit(i);
    argc -= i, argv += i;
    if (set & 2) {
        if (argc != 1)
            return usage_error("extract", "extract --all takes one DIR, not %d arguments", argc);
        return extract_all(argv[0]);
    }
    unsigned int flags_set = (set & 1) ? SMK_EXTRACT_PARENTS : 0;
    if (argc != 2)
        return usage_error("extract", "extract takes ASSET PATH (%d argument%s given)", argc,
                           argc == 1 ? "" : "s");
#if defined(SMK_HAVE_VMLINUX)
    if (strcmp(argv[0], "vmlinux") == 0) {
        int r = flags_set ? smk_extract_vmlinux_to_with_parents(argv[1])
                          : smk_extract_vmlinux_to(argv[1]);
        if (r != 0)
            return fail_write("cannot write", argv[1], r, flags_set != 0);
        printf("%s\tvmlinux\n", argv[1]);
        return 0;
    }
#endif
    const struct smk_asset *a = asset_arg(argv[0]);
    if (!a)
        return EXIT_USAGE;
    int r = smk_extract(a->id, argv[1], flags_set);
    if (r != 0)
        return fail_write("cannot write", argv[1], r, flags_set != 0);
    printf("%s\t%llu\t%s\n", argv[1], (unsigned long long)a->size, a->name);
    return 0;
}

/*
 * HOST:GUEST[:MODE]; GUEST must be absolute, so the first ':' before a '/' splits. spec is a
 * copy the entry points into; orig is the argument as given, for the messages.
 */
static int parse_add(char *spec, const char *orig, struct smk_initramfs_file *f)
{
    char *guest = strstr(spec, ":/");
    if (!guest || guest == spec)
        return usage_error("initramfs",
                           "--add %s: wants HOST:GUEST[:MODE] with an absolute GUEST path", orig);
    *guest++ = '\0';
    f->host_path = spec;
    f->guest_path = guest;
    f->data = NULL;
    f->size = 0;
    f->mode = 0644;
    char *mode = strrchr(guest, ':');
    if (mode) {
        *mode++ = '\0';
        char *end;
        unsigned long m = strtoul(mode, &end, 8);
        if (!*mode || *end || m > 07777)
            return usage_error("initramfs", "--add %s: MODE '%s' is not an octal mode (0 to 7777)",
                               orig, mode);
        f->mode = (unsigned int)m;
    }
    return 0;
}

/* A HOST that is missing, unreadable or not a regular file, named before anything is written. */
static int check_host(const struct smk_initramfs_file *f, const char *orig)
{
    struct stat st;
    if (stat(f->host_path, &st) != 0) {
        fprintf(stderr, "smkernel: --add %s: cannot read %s: %s\n", orig, f->host_path,
                strerror(errno));
        return EXIT_FAIL;
    }
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "smkernel: --add %s: %s is a directory (--add takes regular files)\n", orig,
                f->host_path);
        return EXIT_FAIL;
    }
    if (!S_ISREG(st.st_mode)) {
        fprintf(stderr, "smkernel: --add %s: %s is not a regular file\n", orig, f->host_path);
        return EXIT_FAIL;
    }
    if (access(f->host_path, R_OK) != 0) {
        fprintf(stderr, "smkernel: --add %s: cannot read %s: %s\n", orig, f->host_path,
                strerror(errno));
        return EXIT_FAIL;
    }
    return 0;
}

static int cmd_initramfs(int argc, char **argv)
{
    static const char *const flags[] = {"--parents", NULL};
    static const struct cmd_spec spec = {"initramfs", usage_initramfs, flags, "--add",
                                         "HOST:GUEST[:MODE]"};
    struct smk_initramfs_file *extra = calloc((size_t)argc + 1, sizeof *extra);
    char **adds = calloc((size_t)argc + 1, sizeof *adds);
    char **copies = calloc((size_t)argc + 1, sizeof *copies);
    size_t n = 0;
    int ret = EXIT_USAGE;
    if (!extra || !adds || !copies) {
        ret = fail("cannot", "allocate", -ENOMEM);
        goto out;
    }
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, adds, &n);
    if (i < 0) {
        ret = parse_exit(i);
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        copies[k] = strdup(adds[k]);
        if (!copies[k]) {
            ret = fail("cannot", "allocate", -ENOMEM);
            goto out;
        }
        if (parse_add(copies[k], adds[k], &extra[k]) != 0)
            goto out;
    }
    if (i != argc - 1) {
        usage_error("initramfs", "initramfs takes one PATH (%d given)", argc - i);
        goto out;
    }
    for (size_t k = 0; k < n; k++) {
        ret = check_host(&extra[k], adds[k]);
        if (ret != 0)
            goto out;
    }
    const char *path = argv[i];
    int r = smk_write_initramfs(path, extra, n, set & 1 ? SMK_EXTRACT_PARENTS : 0);
    ret = r == 0 ? 0 : fail_write("cannot write initramfs", path, r, set & 1);
    if (r == 0)
        printf("%s\n", path);
out:
    for (size_t k = 0; copies && k < n; k++)
        free(copies[k]);
    free(copies);
    free(adds);
    free(extra);
    return ret;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct cmd_spec spec = {"verify", usage_verify, NULL, NULL, NULL};
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, NULL, NULL);
    if (i < 0)
        return parse_exit(i);
    argc -= i, argv += i;
    if (argc != 2)
        return usage_error("verify", "verify takes ASSET PATH (%d argument%s given)", argc,
                           argc == 1 ? "" : "s");
    const struct smk_asset *a = asset_arg(argv[0]);
    if (!a)
        return EXIT_USAGE;
    int r = smk_verify_file(a->id, argv[1]);
    if (r == -EBADMSG) {
        fprintf(stderr, "smkernel: %s does not hold %s %s (sha256 %s)\n", argv[1], a->name,
                a->version, a->sha256_hex);
        return EXIT_FAIL;
    }
    if (r != 0)
        return fail("cannot read", argv[1], r);
    printf("%s: OK (%s, sha256 %s)\n", argv[1], a->name, a->sha256_hex);
    return 0;
}

static int cmd_path(int argc, char **argv)
{
    static const struct cmd_spec spec = {"path", usage_path, NULL, NULL, NULL};
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, NULL, NULL);
    if (i < 0)
        return parse_exit(i);
    argc -= i, argv += i;
    if (argc != 1)
        return usage_error("path", "path takes one ASSET (%d given)", argc);
    const struct smk_asset *a = asset_arg(argv[0]);
    if (!a)
        return EXIT_USAGE;
    char path[PATH_MAX];
    int r = smk_asset_path(a->id, path, sizeof path);
    if (r != 0)
        return fail("cannot cache", a->name, r);
    puts(path);
    return 0;
}

static int cmd_cmdline(int argc, char **argv)
{
    static const struct cmd_spec spec = {"cmdline", usage_cmdline, NULL, NULL, NULL};
    unsigned int set;
    int i = parse_opts(&spec, argc, argv, &set, NULL, NULL);
    if (i < 0)
        return parse_exit(i);
    if (i != argc)
        return usage_error("cmdline", "cmdline takes no arguments, not '%s'", argv[i]);
    return puts(smk_kernel_cmdline()) < 0 ? EXIT_FAIL : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(NULL, "missing command");
    const char *cmd = argv[1];
    int n = argc - 2;
    char **rest = argv + 2;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return fflush(stdout) == 0 ? 0 : EXIT_FAIL;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("smkernel %s (%s guest assets)\n", smk_version(), smk_arch());
        return fflush(stdout) == 0 ? 0 : EXIT_FAIL;
    }
    int r;
    if (strcmp(cmd, "agent") == 0)
        return smk_cli_agent(argc - 2, argv + 2);
    if (strcmp(cmd, "list") == 0)
        r = cmd_list(n, rest);
    else if (strcmp(cmd, "extract") == 0)
        r = cmd_extract(n, rest);
    else if (strcmp(cmd, "initramfs") == 0)
        r = cmd_initramfs(n, rest);
    else if (strcmp(cmd, "verify") == 0)
        r = cmd_verify(n, rest);
    else if (strcmp(cmd, "path") == 0)
        r = cmd_path(n, rest);
    else if (strcmp(cmd, "cmdline") == 0)
        r = cmd_cmdline(n, rest);
    else
        return usage_error(NULL, "unknown command '%s'", cmd);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "smkernel: cannot write output: %s\n", strerror(errno));
        return EXIT_FAIL;
    }
    return r;
}
