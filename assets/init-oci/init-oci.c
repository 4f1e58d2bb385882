/*
 * init-oci: PID 1 of the aarch64 guest.
 *
 * Builds the container root (an overlayfs whose lower layer is the initramfs or
 * the smk.root device, with a tmpfs upper layer), switches into it, starts the
 * agent (or smk.entrypoint) and stays PID 1 to reap orphans. When the main
 * child exits the machine powers off; on arm64 virt that is a PSCI SYSTEM_OFF,
 * which ends qemu with status 0.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define INIT_OCI_VERSION "1.0.0"

#define AGENT_PATH "/sbin/supermachine-agent"
#define SMPARK_PATH "/lib/modules/smpark.ko"

/* Staging area on its own tmpfs, so nothing but the /run mountpoint is added to
 * the initramfs (which may itself become the lower layer). */
#define STAGE "/run"
#define UPPER STAGE "/upper"
#define WORK STAGE "/work"
#define NEWROOT STAGE "/root"
#define LOWER_DEV STAGE "/lower"

#define MAX_ARGS 32

static volatile pid_t main_pid = -1;

/* Messages go to /dev/kmsg when we can: that reaches every console, survives in
 * dmesg and is not hidden by "quiet" at the levels used here. */
static void say(int level, const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "<%d>init-oci: ", level);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(msg + n, sizeof msg - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof msg - 2)
        n = (int)sizeof msg - 2;
    msg[n++] = '\n';

    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t w = write(fd, msg, (size_t)n);
        close(fd);
        if (w == n)
            return;
    }
    /* No kmsg (early failure or not PID 1): the console, without the level prefix. */
    const char *p = strchr(msg, '>') + 1;
    if (write(2, p, (size_t)(msg + n - p)) < 0) {
        /* nowhere left to report to */
    }
}

static void power_off(void)
{
    sync();
    if (getpid() == 1) {
        reboot(RB_POWER_OFF);
        /* Returning from PID 1 would panic with a less useful message; if the
         * kernel refused to power off, the best remaining option is to halt. */
        reboot(RB_HALT_SYSTEM);
        for (;;)
            pause();
    }
    exit(1);
}

__attribute__((noreturn, format(printf, 1, 2))) static void fatal(const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say(2, "fatal: %s; powering off", msg);
    power_off();
    __builtin_unreachable();
}

static void mkdir_p(const char *path, mode_t mode)
{
    char buf[256];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        fatal("path too long: %s", path);
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            fatal("mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        fatal("mkdir %s: %s", buf, strerror(errno));
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    mkdir_p(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0)
        fatal("mount %s on %s (%s): %s", src, dst, type ? type : "move/bind", strerror(errno));
}

/* Extras that the agent's children may want; a kernel without them still boots. */
static void try_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                      const char *data)
{
    if (mkdir(dst, 0755) < 0 && errno != EEXIST)
        return;
    if (mount(src, dst, type, flags, data) < 0)
        say(4, "optional mount %s on %s: %s", type, dst, strerror(errno));
}

/* ---- kernel command line ---------------------------------------------------- */

static char cmdline[4096];

struct knobs {
    char *entrypoint; /* smk.entrypoint: program (and space-separated args) to run */
    char *root;       /* smk.root: block device for a read-only lower layer */
    char *rootfstype; /* smk.rootfstype */
};

/* Split /proc/cmdline in place the way the kernel does: spaces separate words,
 * double quotes group (and are removed), so smk.entrypoint="/bin/x -y" works. */
static void parse_cmdline(struct knobs *k)
{
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fatal("open /proc/cmdline: %s", strerror(errno));
    ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
    close(fd);
    if (n < 0)
        fatal("read /proc/cmdline: %s", strerror(errno));
    cmdline[n] = '\0';

    char *r = cmdline, *w;
    while (*r) {
        while (*r == ' ' || *r == '\n' || *r == '\t')
            r++;
        if (!*r)
            break;
        char *word = w = r;
        int quoted = 0;
        for (; *r; r++) {
            if (*r == '"') {
                quoted = !quoted;
                continue;
            }
            if (!quoted && (*r == ' ' || *r == '\n' || *r == '\t'))
                break;
            *w++ = *r;
        }
        if (*r)
            r++;
        *w = '\0';
        if (!strncmp(word, "smk.entrypoint=", 15))
            k->entrypoint = word + 15;
        else if (!strncmp(word, "smk.root=", 9))
            k->root = word + 9;
        else if (!strncmp(word, "smk.rootfstype=", 15))
            k->rootfstype = word + 15;
    }
    if (k->entrypoint && !*k->entrypoint)
        k->entrypoint = NULL;
    if (k->root && !*k->root)
        k->root = NULL;
}

/* ---- root filesystem ---------------------------------------------------------- */

/* Names the filesystem on DEV from its superblock magic, so that a wrong guess
 * does not leave "Can't find ext4 filesystem" noise in the kernel log. */
static const char *detect_fstype(const char *dev)
{
    unsigned char sb[2048];
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = pread(fd, sb, sizeof sb, 0);
    close(fd);
    if (n != (ssize_t)sizeof sb)
        return NULL;
    if (!memcmp(sb, "hsqs", 4))
        return "squashfs";
    if (sb[1024] == 0xe2 && sb[1025] == 0xe1 && sb[1026] == 0xf5 && sb[1027] == 0xe0)
        return "erofs";
    if (sb[1080] == 0x53 && sb[1081] == 0xef)
        return "ext4"; /* also mounts ext2/ext3 */
    return NULL;
}

static void mount_lower_device(const struct knobs *k)
{
    /* virtio-blk normally probes before init runs, but give a slow host 3 s. */
    struct stat st;
    for (int tries = 0; stat(k->root, &st) < 0 || !S_ISBLK(st.st_mode); tries++) {
        if (tries >= 300)
            fatal("smk.root=%s: no such block device", k->root);
        usleep(10000);
    }
    const char *type = k->rootfstype && *k->rootfstype ? k->rootfstype : detect_fstype(k->root);
    if (!type)
        fatal("smk.root=%s: unknown filesystem (set smk.rootfstype=)", k->root);
    mkdir_p(LOWER_DEV, 0755);
    if (mount(k->root, LOWER_DEV, type, MS_RDONLY, NULL) < 0)
        fatal("mount smk.root=%s (%s) read-only: %s", k->root, type, strerror(errno));
}

static void setup_root(const struct knobs *k)
{
    do_mount("tmpfs", STAGE, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    mkdir_p(UPPER, 0755);
    mkdir_p(WORK, 0755);
    mkdir_p(NEWROOT, 0755);

    /* overlayfs reads its lower layer from the underlying filesystem and never
     * descends into mounts, so "/" itself serves as the initramfs lower layer:
     * /proc, /sys, /dev and /run show up as the plain directories they are in
     * the archive. No bind mount is needed. */
    const char *lower = "/";
    if (k->root) {
        mount_lower_device(k);
        lower = LOWER_DEV;
    }
    char opts[256];
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=" UPPER ",workdir=" WORK, lower);
    do_mount("overlay", NEWROOT, "overlay", 0, opts);
}

/* Makes a file of the initramfs visible at the same path in the new root when
 * the lower layer is a separate device: the agent and the module ship in the
 * initramfs, not in the container image. Runs inside the new root, so symlinks
 * in the image (e.g. /sbin -> usr/sbin) resolve as the container will see them. */
static void carry_file(int fd, const char *path)
{
    if (fd < 0)
        return;
    char dir[256], src[64];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    mkdir_p(dir, 0755);
    int t = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0755);
    if (t < 0)
        fatal("create %s in the new root: %s", path, strerror(errno));
    close(t);
    snprintf(src, sizeof src, "/proc/self/fd/%d", fd);
    if (mount(src, path, NULL, MS_BIND, NULL) < 0)
        fatal("bind %s into the new root: %s", path, strerror(errno));
    close(fd);
}

static void switch_root(int agent_fd, int smpark_fd)
{
    static const char *const moves[] = {"/dev", "/proc", "/sys"};
    char dst[64];
    for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++) {
        snprintf(dst, sizeof dst, NEWROOT "%s", moves[i]);
        do_mount(moves[i], dst, NULL, MS_MOVE, NULL);
    }
    /* pivot_root(2) refuses the initramfs root, so do what switch_root(8) does:
     * move the new root over / and chroot into it. The old root stays alive
     * underneath as the lower layer. */
    if (chdir(NEWROOT) < 0)
        fatal("chdir " NEWROOT ": %s", strerror(errno));
    if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
        fatal("move the new root onto /: %s", strerror(errno));
    if (chroot(".") < 0)
        fatal("chroot into the new root: %s", strerror(errno));
    if (chdir("/") < 0)
        fatal("chdir /: %s", strerror(errno));

    carry_file(agent_fd, AGENT_PATH);
    carry_file(smpark_fd, SMPARK_PATH);

    try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
    try_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
}

/* ---- the main child ------------------------------------------------------------ */

static void forward_signal(int sig)
{
    if (main_pid > 0)
        kill(main_pid, sig);
}

static pid_t start_main(char *entrypoint)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    if (entrypoint) {
        for (char *save = NULL, *tok = strtok_r(entrypoint, " ", &save); tok && argc < MAX_ARGS;
             tok = strtok_r(NULL, " ", &save))
            argv[argc++] = tok;
    }
    if (argc == 0)
        argv[argc++] = AGENT_PATH;
    argv[argc] = NULL;

    /* The kernel hands unknown "name=value" boot options to init as its
     * environment; keep them, but give PATH/HOME/TERM sane values. */
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("HOME", "/root", 1);
    setenv("TERM", "linux", 1);

    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        setsid();
        if (chdir("/root") < 0 && chdir("/") < 0) {
            /* cwd stays where it is */
        }
        execv(argv[0], argv);
        say(2, "exec %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

/* PID 1 starts with whatever the kernel could open: nothing at all if the
 * initramfs has no /dev/console node. Fix that once devtmpfs is up. */
static void ensure_stdio(void)
{
    if (fcntl(0, F_GETFD) >= 0 && fcntl(1, F_GETFD) >= 0 && fcntl(2, F_GETFD) >= 0)
        return;
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd < 0)
        fd = open("/dev/null", O_RDWR);
    if (fd < 0)
        return;
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0)
            dup2(fd, i);
    if (fd > 2)
        close(fd);
}

int main(void)
{
    umask(022);
    do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    do_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* CONFIG_DEVTMPFS_MOUNT does not apply to an initramfs root, so /dev is
     * normally empty here; EBUSY means someone mounted it already. */
    mkdir_p("/dev", 0755);
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
        fatal("mount devtmpfs on /dev: %s", strerror(errno));
    ensure_stdio();

    struct knobs k = {0};
    parse_cmdline(&k);

    /* With a device root, the initramfs becomes unreachable after the switch:
     * hold on to what has to be carried over. */
    int agent_fd = -1, smpark_fd = -1;
    if (k.root) {
        agent_fd = open(AGENT_PATH, O_PATH | O_CLOEXEC);
        smpark_fd = open(SMPARK_PATH, O_PATH | O_CLOEXEC);
        if (agent_fd < 0 && !k.entrypoint)
            fatal("open " AGENT_PATH ": %s", strerror(errno));
    }

    setup_root(&k);
    switch_root(agent_fd, smpark_fd);

    static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPWR};
    struct sigaction sa = {.sa_handler = forward_signal};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &sa, NULL);

    main_pid = start_main(k.entrypoint);

    /* Reap everything: orphans of the agent's children get reparented to us. */
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            fatal("wait: %s", strerror(errno));
        }
        if (pid != main_pid)
            continue;
        if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
            say(3, "%s exited with status %d", k.entrypoint ? "entrypoint" : "agent",
                WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            say(3, "%s killed by signal %d", k.entrypoint ? "entrypoint" : "agent",
                WTERMSIG(status));
        power_off();
    }
}
