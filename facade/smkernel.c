/*
 * smkernel: the command-line face of libsmkernel — list, extract, verify and cache the guest
 * assets this build ships, and write a bootable initramfs. SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <smkernel.h>

#include "agent-cli.h"

enum { EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage[] =
    "usage: smkernel COMMAND [ARGS]\n"
    "\n"
    "The supermachine guest runtime for this host's arch, embedded in libsmkernel.\n"
    "\n"
    "commands:\n"
    "  list                         the assets: name, file, sizes, SHA-256, version, license\n"
    "  extract [--parents] ASSET PATH\n"
    "                               write ASSET to PATH atomically (--parents: mkdir -p);\n"
    "                               on x86_64 ASSET may also be 'vmlinux': the kernel as a\n"
    "                               PVH-bootable ELF, derived from the bzImage\n"
    "  extract --all DIR            write every asset into DIR (created if missing)\n"
    "  initramfs [--parents] [--add HOST:GUEST[:MODE]]... PATH\n"
    "                               write a bootable initramfs (cpio newc) for this arch\n"
    "  verify ASSET PATH            check that PATH holds exactly ASSET's bytes\n"
    "  path ASSET                   print ASSET's path in the per-user cache, filling it\n"
    "  cmdline                      print the kernel command line the kernel is tuned for\n"
    "  agent --connect ADDR ping|exec|cp|shutdown ...\n"
    "                               drive the guest agent (smkernel agent --help)\n"
    "  --version, --help\n"
    "\n"
    "ASSET is a name or file name from 'smkernel list'. Exit status: 0 success, 1 failure,\n"
    "2 usage error. The cache is $SMKERNEL_CACHE_DIR, else $XDG_CACHE_HOME/smkernel, else\n"
    "~/.cache/smkernel.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fputs("smkernel: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'smkernel --help'.\n", stderr);
    return EXIT_USAGE;
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

static int cmd_list(int argc, char **argv)
{
    (void)argv;
    if (argc != 0)
        return usage_error("list takes no arguments%s", "");
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    printf("%-19s %-19s %10s %10s %-4s %-5s %-64s %-24s %s\n", "NAME", "FILE", "SIZE", "BLOB",
           "MODE", "CODEC", "SHA256", "VERSION", "LICENSE");
    for (size_t i = 0; i < n; i++) {
        const struct smk_asset *a = list[i];
        printf("%-19s %-19s %10llu %10llu %04o %-5s %-64s %-24s %s\n", a->name, a->file_name,
               (unsigned long long)a->size, (unsigned long long)a->blob_size, a->mode, a->codec,
               a->sha256_hex, a->version, a->license);
    }
    return 0;
}

static int extract_all(const char *dir)
{
    int r = smk_extract_all(dir, SMK_EXTRACT_PARENTS);
    if (r != 0)
        return fail("cannot write into", dir, r);
    size_t n;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++)
        printf("%s/%s\t%llu\t%s\n", dir, list[i]->file_name, (unsigned long long)list[i]->size,
               list[i]->name);
    return 0;
}

static int cmd_extract(int argc, char **argv)
{
    unsigned int flags = 0;
    if (argc >= 1 && strcmp(argv[0], "--all") == 0) {
        if (argc != 2)
            return usage_error("extract --all takes one directory%s", "");
        return extract_all(argv[1]);
    }
    if (argc >= 1 && strcmp(argv[0], "--parents") == 0) {
        flags |= SMK_EXTRACT_PARENTS;
        argc--, argv++;
    }
    if (argc != 2)
        return usage_error("extract takes ASSET PATH%s", "");
#if defined(SMK_HAVE_VMLINUX)
    if (strcmp(argv[0], "vmlinux") == 0) {
        int r = flags ? smk_extract_vmlinux_to_with_parents(argv[1])
                      : smk_extract_vmlinux_to(argv[1]);
        if (r != 0)
            return fail("cannot write", argv[1], r);
        printf("%s\tvmlinux\n", argv[1]);
        return 0;
    }
#endif
    const struct smk_asset *a = asset_arg(argv[0]);
    if (!a)
        return EXIT_USAGE;
    int r = smk_extract(a->id, argv[1], flags);
    if (r != 0)
        return fail("cannot write", argv[1], r);
    printf("%s\t%llu\t%s\n", argv[1], (unsigned long long)a->size, a->name);
    return 0;
}

/* HOST:GUEST[:MODE]; GUEST must be absolute, so the first ':' before a '/' splits. */
static int parse_add(char *spec, struct smk_initramfs_file *f)
{
    char *guest = strstr(spec, ":/");
    if (!guest || guest == spec)
        return -1;
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
            return -1;
        f->mode = (unsigned int)m;
    }
    return 0;
}

static int cmd_initramfs(int argc, char **argv)
{
    unsigned int flags = 0;
    struct smk_initramfs_file *extra = calloc((size_t)argc + 1, sizeof *extra);
    size_t n = 0;
    int ret = EXIT_USAGE;
    if (!extra)
        return fail("cannot", "allocate", -ENOMEM);
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--parents") == 0) {
            flags |= SMK_EXTRACT_PARENTS;
        } else if (strcmp(argv[i], "--add") == 0 && i + 1 < argc) {
            if (parse_add(argv[++i], &extra[n++]) != 0) {
                usage_error("--add wants HOST:GUEST[:MODE] with an absolute GUEST, not '%s'",
                            argv[i]);
                goto out;
            }
        } else {
            usage_error("unknown option '%s' for initramfs", argv[i]);
            goto out;
        }
    }
    if (i != argc - 1) {
        usage_error("initramfs takes one PATH%s", "");
        goto out;
    }
    int r = smk_write_initramfs(argv[i], extra, n, flags);
    ret = r == 0 ? 0 : fail("cannot write initramfs", argv[i], r);
    if (r == 0)
        printf("%s\n", argv[i]);
out:
    free(extra);
    return ret;
}

static int cmd_verify(int argc, char **argv)
{
    if (argc != 2)
        return usage_error("verify takes ASSET PATH%s", "");
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
    if (argc != 1)
        return usage_error("path takes one ASSET%s", "");
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

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command%s", "");
    const char *cmd = argv[1];
    int n = argc - 2;
    char **rest = argv + 2;
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("smkernel %s (%s guest assets)\n", smk_version(), smk_arch());
        return 0;
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
    else if (strcmp(cmd, "cmdline") == 0 && n == 0)
        r = puts(smk_kernel_cmdline()) < 0 ? EXIT_FAIL : 0;
    else
        return usage_error("unknown command '%s'", cmd);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "smkernel: cannot write output: %s\n", strerror(errno));
        return EXIT_FAIL;
    }
    return r;
}
