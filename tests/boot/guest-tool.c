/*
 * guest-tool: a tiny multi-call helper for boot tests in guests without busybox
 * (the aarch64 initramfs). Dispatch is on basename(argv[0]), or on argv[1] when
 * called as "guest-tool":
 *
 *   uname [-m|-r|-s|-n|-a]   machine (default -m), release, sysname, nodename
 *   insmod FILE [PARAMS...]  finit_module(2)
 *   rmmod NAME               delete_module(2), non-blocking
 *   cat FILE...              copy files to stdout
 *   write FILE TEXT...       one write(2) of TEXT (words joined by spaces, plus "\n")
 *                            to FILE, for sysfs knobs; the errno of a refused write
 *                            becomes the message and exit status 1
 *   nproc                    online CPUs
 *   cpus                     /sys/devices/system/cpu/online, e.g. "0-1"
 *   sleep SECONDS            (fractions allowed)
 *   echo WORDS...
 *
 * Builds with "aarch64-linux-gnu-gcc -static" and with plain "gcc".
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "guest-tool";

static int fail(const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s%s%s: %s\n", prog, what, arg ? " " : "", arg ? arg : "",
            strerror(errno));
    return 1;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: guest-tool uname [-m|-r|-s|-n|-a] | insmod FILE [PARAMS...] | rmmod NAME |\n"
            "       cat FILE... | write FILE TEXT... | nproc | cpus | sleep SECONDS | "
            "echo WORDS...\n");
    return 2;
}

static int cmd_uname(int argc, char **argv)
{
    struct utsname u;
    if (uname(&u) < 0)
        return fail("uname", NULL);
    const char *opt = argc > 1 ? argv[1] : "-m";
    if (!strcmp(opt, "-m"))
        puts(u.machine);
    else if (!strcmp(opt, "-r"))
        puts(u.release);
    else if (!strcmp(opt, "-s"))
        puts(u.sysname);
    else if (!strcmp(opt, "-n"))
        puts(u.nodename);
    else if (!strcmp(opt, "-a"))
        printf("%s %s %s %s %s\n", u.sysname, u.nodename, u.release, u.version, u.machine);
    else
        return usage();
    return 0;
}

/* Joins argv[from..] with spaces into a malloc'd string. */
static char *join(int argc, char **argv, int from, const char *end)
{
    size_t len = strlen(end) + 1;
    for (int i = from; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = malloc(len), *p = s;
    if (!s)
        return NULL;
    for (int i = from; i < argc; i++)
        p += sprintf(p, "%s%s", i > from ? " " : "", argv[i]);
    strcpy(p, end);
    return s;
}

static int cmd_insmod(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", argv[1]);
    char *params = join(argc, argv, 2, "");
    if (!params)
        return fail("malloc", NULL);
    if (syscall(SYS_finit_module, fd, params, 0) != 0)
        return fail("insmod", argv[1]);
    close(fd);
    free(params);
    return 0;
}

static int cmd_rmmod(int argc, char **argv)
{
    if (argc != 2)
        return usage();
    if (syscall(SYS_delete_module, argv[1], O_NONBLOCK) != 0)
        return fail("rmmod", argv[1]);
    return 0;
}

static int copy_out(int fd, const char *name)
{
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail("read", name);
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(1, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return fail("write", "stdout");
            }
            off += w;
        }
    }
}

static int cmd_cat(int argc, char **argv)
{
    int rc = 0;
    if (argc < 2)
        return copy_out(0, "stdin");
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc |= fail("open", argv[i]);
            continue;
        }
        rc |= copy_out(fd, argv[i]);
        close(fd);
    }
    return rc;
}

static int cmd_write(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    char *text = join(argc, argv, 2, "\n");
    if (!text)
        return fail("malloc", NULL);
    /* Same flags as a shell redirection, so it also works on plain files. */
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail("open", argv[1]);
    /* sysfs takes one write per value: never split it. */
    ssize_t n = write(fd, text, strlen(text));
    if (n < 0)
        return fail("write", argv[1]);
    if ((size_t)n != strlen(text)) {
        errno = EIO;
        return fail("short write", argv[1]);
    }
    if (close(fd) < 0)
        return fail("close", argv[1]);
    free(text);
    return 0;
}

static int cmd_sleep(int argc, char **argv)
{
    if (argc != 2)
        return usage();
    double s = strtod(argv[1], NULL);
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
    return 0;
}

typedef int (*cmd_fn)(int, char **);

static int cmd_nproc(int argc, char **argv)
{
    (void)argc, (void)argv;
    printf("%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
    return 0;
}

static int cmd_cpus(int argc, char **argv)
{
    (void)argc, (void)argv;
    char *a[] = {"cat", "/sys/devices/system/cpu/online", NULL};
    return cmd_cat(2, a);
}

static int cmd_echo(int argc, char **argv)
{
    char *s = join(argc, argv, 1, "\n");
    if (!s)
        return fail("malloc", NULL);
    fputs(s, stdout);
    free(s);
    return 0;
}

static const struct {
    const char *name;
    cmd_fn fn;
} cmds[] = {
    {"uname", cmd_uname}, {"insmod", cmd_insmod}, {"rmmod", cmd_rmmod},
    {"cat", cmd_cat},     {"write", cmd_write},   {"nproc", cmd_nproc},
    {"cpus", cmd_cpus},   {"sleep", cmd_sleep},   {"echo", cmd_echo},
};

static cmd_fn lookup(const char *name)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(cmds[i].name, name))
            return cmds[i].fn;
    return NULL;
}

int main(int argc, char **argv)
{
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    cmd_fn fn = lookup(base);
    /* Not called through a command's name (e.g. as "guest-tool"): argv[1] is it. */
    if (!fn && argc >= 2) {
        argv++;
        argc--;
        base = argv[0];
        fn = lookup(base);
    }
    if (!fn)
        return usage();
    prog = base;
    return fn(argc, argv);
}
