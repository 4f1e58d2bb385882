/*
 * init-oci: PID 1 of the guest, on x86_64 and aarch64 alike.
 *
 * Implements the guest contract in assets/GUEST.md: builds the container root
 * (an overlayfs whose lower layer is the initramfs or the smk.root image,
 * read-only and never modified, with a tmpfs upper layer), API file systems,
 * /dev links, cgroup2, lo up, the hostname; switches into it, starts the agent
 * (or smk.entrypoint) with a clean environment and stays PID 1 to reap orphans.
 * When the main child exits the machine stops: on arm64 virt a power-off (PSCI
 * SYSTEM_OFF, which ends qemu with status 0); on x86_64, whose microVMs have no
 * ACPI to power off with, a reboot, which reboot=t on the command line and the
 * VMM's -no-reboot turn into the end of the machine.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <ftw.h>
#include <net/if.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INIT_OCI_VERSION "1.2.0"

#define AGENT_PATH "/sbin/supermachine-agent"
#define SMPARK_PATH "/lib/modules/smpark.ko"
/* The x86_64 initramfs's toolset; none on aarch64. */
#define BUSYBOX_PATH "/bin/busybox"

/* Staging area on its own tmpfs, so nothing but the /run mountpoint is added to
 * the initramfs (which may itself become the lower layer). */
#define STAGE "/run"
#define UPPER STAGE "/upper"
#define WORK STAGE "/work"
#define NEWROOT STAGE "/root"
#define LOWER_DEV STAGE "/lower"

#define MAX_ARGS 32
#define MAX_EXTRA 256 /* files the caller added to the initramfs */

#define DEFAULT_HOSTNAME "supermachine"
/* The workload's whole environment (assets/GUEST.md). */
static char *const workload_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=linux",
    NULL};

static volatile pid_t main_pid = -1;

/* Messages go to /dev/kmsg when we can: that reaches every console, survives in
 * dmesg and is not hidden by "quiet" at the levels used here. */
static void say(int level, const char *fmt, ...)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "<%d>smk-init: ", level);
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
#if defined(__x86_64__)
        /* Without ACPI, RB_POWER_OFF only halts the CPU and leaves the VMM running. */
        reboot(RB_AUTOBOOT);
#endif
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
    say(2, "fatal: %s; shutting down", msg);
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

/* Writes TEXT to a file that must exist (sysfs, procfs); returns 0 or -errno. */
static int write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, text, strlen(text));
    int r = n == (ssize_t)strlen(text) ? 0 : n < 0 ? -errno : -EIO;
    close(fd);
    return r;
}

/* Reads the first line of a small file into buf (newline removed); returns 0 or -errno. */
static int read_line(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, size - 1);
    int r = n < 0 ? -errno : 0;
    close(fd);
    if (r)
        return r;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

/* ---- kernel command line ---------------------------------------------------- */

static char cmdline[4096];

struct knobs {
    char *entrypoint; /* smk.entrypoint: program (and space-separated args) to run */
    char *root;       /* smk.root: /dev/NAME, LABEL=, UUID= or SERIAL= of a read-only image */
    char *rootfstype; /* smk.rootfstype */
    char *hostname;   /* smk.hostname */
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
        else if (!strncmp(word, "smk.hostname=", 13))
            k->hostname = word + 13;
    }
    if (k->entrypoint && !*k->entrypoint)
        k->entrypoint = NULL;
    if (k->root && !*k->root)
        k->root = NULL;
    if (k->rootfstype && !*k->rootfstype)
        k->rootfstype = NULL;
    if (!k->hostname || !*k->hostname)
        k->hostname = DEFAULT_HOSTNAME;
}

/* ---- the machine: hostname, loopback -------------------------------------------- */

static void setup_machine(const struct knobs *k)
{
    if (sethostname(k->hostname, strlen(k->hostname)) < 0)
        fatal("cannot set the hostname to '%s': %s", k->hostname, strerror(errno));
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    strcpy(ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        fatal("cannot bring lo up: %s", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        fatal("cannot bring lo up: %s", strerror(errno));
    close(s);
}

/* ---- root filesystem ---------------------------------------------------------- */

/* What a superblock says: the type from its magic, and the uuid and label that
 * smk.root=UUID= / LABEL= match. Offsets: ext4 magic 0xEF53 at 1080, uuid at
 * 1128, label at 1144; erofs magic 0xE0F5E1E2 at 1024, uuid at 1072, volume
 * name at 1088; squashfs "hsqs" at 0 and neither uuid nor label. */
struct probe {
    const char *type;
    char uuid[37];  /* 8-4-4-4-12 lowercase hex, "" if none */
    char label[17]; /* "" if none */
};

static int probe_device(const char *dev, struct probe *p)
{
    unsigned char sb[1160];
    memset(p, 0, sizeof *p);
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = pread(fd, sb, sizeof sb, 0);
    close(fd);
    if (n != (ssize_t)sizeof sb)
        return -1;
    size_t u;
    if (!memcmp(sb, "hsqs", 4)) {
        p->type = "squashfs";
        return 0;
    } else if (sb[1024] == 0xe2 && sb[1025] == 0xe1 && sb[1026] == 0xf5 && sb[1027] == 0xe0) {
        p->type = "erofs";
        u = 1072;
    } else if (sb[1080] == 0x53 && sb[1081] == 0xef) {
        p->type = "ext4"; /* also mounts ext2/ext3 */
        u = 1128;
    } else {
        return -1;
    }
    char *o = p->uuid;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        o += sprintf(o, "%02x", sb[u + i]);
    }
    memcpy(p->label, sb + u + 16, 16);
    p->label[16] = '\0';
    return 0;
}

/* Finds the block device that smk.root names; writes /dev/NAME into dev. */
static int find_root(const char *root, char *dev, size_t size)
{
    if (!strncmp(root, "/dev/", 5)) {
        struct stat st;
        if (stat(root, &st) < 0 || !S_ISBLK(st.st_mode))
            return -1;
        snprintf(dev, size, "%s", root);
        return 0;
    }
    DIR *d = opendir("/sys/class/block");
    if (!d)
        return -1;
    int found = -1;
    for (struct dirent *e; found < 0 && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], line[128];
        struct stat st;
        snprintf(path, sizeof path, "/sys/class/block/%s/size", e->d_name);
        if (read_line(path, line, sizeof line) < 0 || !strcmp(line, "0"))
            continue;
        snprintf(dev, size, "/dev/%s", e->d_name);
        if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
            continue;
        struct probe p;
        if (!strncmp(root, "SERIAL=", 7)) {
            snprintf(path, sizeof path, "/sys/class/block/%s/serial", e->d_name);
            if (read_line(path, line, sizeof line) == 0 && !strcmp(line, root + 7))
                found = 0;
        } else if (!strncmp(root, "UUID=", 5)) {
            if (probe_device(dev, &p) == 0 && p.uuid[0] && !strcasecmp(p.uuid, root + 5))
                found = 0;
        } else if (!strncmp(root, "LABEL=", 6)) {
            if (probe_device(dev, &p) == 0 && p.label[0] && !strcmp(p.label, root + 6))
                found = 0;
        }
    }
    closedir(d);
    return found;
}

static void mount_lower_device(const struct knobs *k)
{
    if (strncmp(k->root, "/dev/", 5) && strncmp(k->root, "LABEL=", 6) &&
        strncmp(k->root, "UUID=", 5) && strncmp(k->root, "SERIAL=", 7))
        fatal("smk.root=%s: expected /dev/NAME, LABEL=, UUID= or SERIAL=", k->root);
    /* virtio-blk normally probes before init runs, but give a slow host 3 s. */
    char dev[280];
    struct timespec t0, t;
    clock_gettime(CLOCK_BOOTTIME, &t0);
    while (find_root(k->root, dev, sizeof dev) < 0) {
        clock_gettime(CLOCK_BOOTTIME, &t);
        if (t.tv_sec - t0.tv_sec >= 3)
            fatal("smk.root=%s: no such block device", k->root);
        usleep(20000);
    }
    struct probe p;
    const char *type = k->rootfstype;
    if (!type) {
        if (probe_device(dev, &p) < 0)
            fatal("smk.root=%s (%s): not ext4, squashfs or erofs (set smk.rootfstype=)", k->root,
                  dev);
        type = p.type;
    }
    mkdir_p(LOWER_DEV, 0755);
    if (mount(dev, LOWER_DEV, type, MS_RDONLY, NULL) < 0)
        fatal("cannot mount smk.root=%s (%s, %s) read-only: %s", k->root, dev, type,
              strerror(errno));
}

/* The initramfs is the root and has busybox: busybox is its toolset. The applet
 * links go straight into the upper layer's /bin, before the overlay is mounted
 * (far cheaper than ~400 creates through overlayfs); the link named "busybox"
 * would point at itself and hide the real one underneath. */
static void install_applets(void)
{
    mkdir_p(UPPER "/bin", 0755);
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        execl(BUSYBOX_PATH, BUSYBOX_PATH, "--install", "-s", UPPER "/bin", (char *)NULL);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            fatal("wait for busybox --install: %s", strerror(errno));
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fatal("busybox --install -s " UPPER "/bin failed");
    if (unlink(UPPER "/bin/busybox") < 0 && errno != ENOENT)
        fatal("unlink " UPPER "/bin/busybox: %s", strerror(errno));
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
    } else if (access(BUSYBOX_PATH, X_OK) == 0) {
        install_applets();
    }
    char opts[256];
    snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=" UPPER ",workdir=" WORK, lower);
    do_mount("overlay", NEWROOT, "overlay", 0, opts);
}

/* ---- what the initramfs adds to an image root ------------------------------------ */

/* The regular files of the initramfs that are not init-oci's own: the ones the
 * caller added (smk_write_initramfs, smkernel initramfs --add). Collected before
 * the switch, copied after it. */
struct extra_files {
    char *path[MAX_EXTRA];
    size_t n;
};
static struct extra_files *walk_list; /* nftw has no context argument */

static int collect_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    static const char *const own[] = {"/init", AGENT_PATH, SMPARK_PATH, BUSYBOX_PATH};
    static const char *const api[] = {"/proc/", "/sys/", "/dev/", "/run/"};
    if (flag != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (!strcmp(path, own[i]))
            return 0;
    for (size_t i = 0; i < sizeof api / sizeof api[0]; i++)
        if (!strncmp(path, api[i], strlen(api[i])))
            return 0;
    if (walk_list->n == MAX_EXTRA)
        fatal("more than %d files added to the initramfs", MAX_EXTRA);
    if (!(walk_list->path[walk_list->n++] = strdup(path)))
        fatal("out of memory");
    return 0;
}

static void collect_extra(struct extra_files *x)
{
    walk_list = x;
    if (nftw("/", collect_one, 16, FTW_PHYS | FTW_MOUNT) < 0)
        fatal("walk the initramfs: %s", strerror(errno));
    walk_list = NULL;
}

/* Copies one file from the old root (the initramfs, reached through oldroot)
 * to the same path in the new root: the image's symlinks on the way (e.g.
 * /lib -> usr/lib) resolve as the container sees them, and the caller's file
 * replaces the image's. */
static void copy_extra(int oldroot, const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    if (dir[0])
        mkdir_p(dir, 0755);
    int in = openat(oldroot, path + 1, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (in < 0 || fstat(in, &st) < 0)
        fatal("open %s in the initramfs: %s", path, strerror(errno));
    if (unlink(path) < 0 && errno != ENOENT)
        fatal("replace %s in the new root: %s", path, strerror(errno));
    int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 07777);
    if (out < 0)
        fatal("create %s in the new root: %s", path, strerror(errno));
    for (off_t left = st.st_size; left > 0;) {
        ssize_t n = sendfile(out, in, NULL, left > (1 << 30) ? (1 << 30) : (size_t)left);
        if (n <= 0)
            fatal("copy %s into the new root: %s", path, n < 0 ? strerror(errno) : "short file");
        left -= n;
    }
    if (fchmod(out, st.st_mode & 07777) < 0)
        fatal("chmod %s: %s", path, strerror(errno));
    close(out);
    close(in);
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

/* /dev/fd and the std links, in devtmpfs before it moves (the same mount). */
static void dev_links(void)
{
    static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                           {"/proc/self/fd/0", "/dev/stdin"},
                                           {"/proc/self/fd/1", "/dev/stdout"},
                                           {"/proc/self/fd/2", "/dev/stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
            fatal("symlink %s: %s", links[i][1], strerror(errno));
}

static void switch_root(void)
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

    do_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
    do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    do_mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    /* Every controller the kernel has, for child cgroups (the root has no
     * no-internal-process rule). One write each: a refused one leaves the rest. */
    char ctl[256];
    if (read_line("/sys/fs/cgroup/cgroup.controllers", ctl, sizeof ctl) == 0) {
        for (char *save = NULL, *c = strtok_r(ctl, " ", &save); c; c = strtok_r(NULL, " ", &save)) {
            char w[64];
            snprintf(w, sizeof w, "+%s", c);
            int r = write_file("/sys/fs/cgroup/cgroup.subtree_control", w);
            if (r < 0)
                say(4, "cgroup controller %s: %s", c, strerror(-r));
        }
    }
}

/* ---- the main child ------------------------------------------------------------ */

static void forward_signal(int sig)
{
    if (main_pid > 0)
        kill(main_pid, sig);
}

/* The program and its arguments: smk.entrypoint split at spaces, or the agent. */
static void split_entrypoint(char *entrypoint, char **argv)
{
    int argc = 0;
    if (entrypoint) {
        for (char *save = NULL, *tok = strtok_r(entrypoint, " ", &save); tok && argc < MAX_ARGS;
             tok = strtok_r(NULL, " ", &save))
            argv[argc++] = tok;
    }
    if (argc == 0)
        argv[argc++] = AGENT_PATH;
    argv[argc] = NULL;
}

static pid_t start_main(char **argv)
{
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        setsid();
        execve(argv[0], argv, workload_env);
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
    dev_links();

    struct knobs k = {0};
    parse_cmdline(&k);
    setup_machine(&k);

    /* With an image root, the initramfs becomes unreachable by path after the
     * switch: hold it open, and note what has to be carried over. */
    static struct extra_files extra;
    int agent_fd = -1, smpark_fd = -1, oldroot = -1;
    if (k.root) {
        collect_extra(&extra);
        agent_fd = open(AGENT_PATH, O_PATH | O_CLOEXEC);
        smpark_fd = open(SMPARK_PATH, O_PATH | O_CLOEXEC);
        oldroot = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (agent_fd < 0 && !k.entrypoint)
            fatal("open " AGENT_PATH ": %s", strerror(errno));
        if (oldroot < 0)
            fatal("open /: %s", strerror(errno));
    }

    setup_root(&k);
    switch_root();
    if (k.root) {
        for (size_t i = 0; i < extra.n; i++)
            copy_extra(oldroot, extra.path[i]);
        carry_file(agent_fd, AGENT_PATH);
        carry_file(smpark_fd, SMPARK_PATH);
        close(oldroot);
    }

    char *argv[MAX_ARGS + 1];
    split_entrypoint(k.entrypoint, argv);
    struct stat st;
    if (argv[0][0] != '/' || lstat(argv[0], &st) < 0)
        fatal("%s does not exist in the new root", argv[0]);

    static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPWR};
    struct sigaction sa = {.sa_handler = forward_signal};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
        sigaction(forwarded[i], &sa, NULL);

    main_pid = start_main(argv);

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
