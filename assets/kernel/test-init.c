/* Test /init: prints a marker as early as possible, optionally runs smoke
 * checks (argument "smoke"), optionally prints the kernel log (argument
 * "dmesg"), then reboots (qemu -no-reboot exits). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/klog.h>
#include <sys/utsname.h>
#include <time.h>
#include <linux/vm_sockets.h>

static int fails;
static void w(const char *s)
{
    write(1, s, strlen(s));
}
static void check(const char *what, int ok)
{
    char b[256];
    snprintf(b, sizeof b, "SMOKE %s %s (errno %d %s)\n", ok ? "ok  " : "FAIL", what, ok ? 0 : errno,
             ok ? "" : strerror(errno));
    w(b);
    if (!ok)
        fails++;
}
static void cat(const char *p)
{
    char b[4096];
    int fd = open(p, O_RDONLY);
    ssize_t n;
    if (fd < 0) {
        w("cannot open ");
        w(p);
        w("\n");
        return;
    }
    w(p);
    w(": ");
    while ((n = read(fd, b, sizeof b)) > 0)
        write(1, b, n);
    close(fd);
}

static void vsock_loopback(void)
{
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    check("socket(AF_VSOCK)", l >= 0);
    if (l < 0)
        return;
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = 1234};
    check("vsock bind", bind(l, (void *)&a, sizeof a) == 0);
    check("vsock listen", listen(l, 1) == 0);
    int c = socket(AF_VSOCK, SOCK_STREAM, 0);
    struct sockaddr_vm d = {
        .svm_family = AF_VSOCK, .svm_cid = 1 /* VMADDR_CID_LOCAL */, .svm_port = 1234};
    check("vsock connect CID 1", connect(c, (void *)&d, sizeof d) == 0);
    int s = accept(l, NULL, NULL);
    check("vsock accept", s >= 0);
    char buf[8] = {0};
    write(c, "ping", 4);
    check("vsock ping through CID 1", read(s, buf, 4) == 4 && !memcmp(buf, "ping", 4));
    close(s);
    close(c);
    close(l);
}

static void smoke(void)
{
    struct utsname u;
    uname(&u);
    w("uname: ");
    w(u.release);
    w(" ");
    w(u.version);
    w(" ");
    w(u.machine);
    w("\n");
    mkdir("/sys", 0755);
    mkdir("/tmp", 0755);
    mkdir("/dev", 0755);
    check("mount sysfs", mount("sysfs", "/sys", "sysfs", 0, 0) == 0);
    check("mount tmpfs", mount("tmpfs", "/tmp", "tmpfs", 0, 0) == 0);
    check("/dev/console (devtmpfs)", access("/dev/console", F_OK) == 0);
    check("mount cgroup2", mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, 0) == 0);
    cat("/sys/fs/cgroup/cgroup.controllers");
    int fd = open("/sys/fs/cgroup/cgroup.subtree_control", O_WRONLY);
    const char *ctl = "+cpu +memory +pids +io +cpuset";
    check("enable cgroup controllers",
          fd >= 0 && write(fd, ctl, strlen(ctl)) == (ssize_t)strlen(ctl));
    close(fd);
    check("mkdir cgroup", mkdir("/sys/fs/cgroup/t", 0755) == 0);
    check("cgroup cpu.max", access("/sys/fs/cgroup/t/cpu.max", F_OK) == 0);
    check("cgroup io.max", access("/sys/fs/cgroup/t/io.max", F_OK) == 0);
    check("cgroup memory.max", access("/sys/fs/cgroup/t/memory.max", F_OK) == 0);
    check("cgroup cgroup.freeze", access("/sys/fs/cgroup/t/cgroup.freeze", F_OK) == 0);
    mkdir("/tmp/l", 0755);
    mkdir("/tmp/u", 0755);
    mkdir("/tmp/w", 0755);
    mkdir("/tmp/m", 0755);
    check("mount overlay", mount("overlay", "/tmp/m", "overlay", 0,
                                 "lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w") == 0);
    check("unshare namespaces",
          unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS |
                  CLONE_NEWCGROUP | 0x80 /* CLONE_NEWTIME */) == 0);
    check("unshare user ns", unshare(CLONE_NEWUSER) == 0);
    cat("/proc/filesystems");
    vsock_loopback();
    check("seccomp available", access("/proc/sys/kernel/seccomp/actions_avail", F_OK) == 0);
    cat("/proc/cmdline");
    cat("/proc/cpuinfo");
    w(fails ? "SMOKE RESULT: FAIL\n" : "SMOKE RESULT: PASS\n");
}

/* The CPU's free-running counter, read right after the clock: it runs from the
 * machine's reset, so it also counts what ran before the kernel's clock started
 * (the bzImage decompressor, early setup). Under qemu -icount shift=0 the x86
 * TSC advances one tick per guest nanosecond (= instruction); 0 Hz means "not
 * known from inside the guest" (x86: the kernel's calibration is not exported). */
static unsigned long long counter(void)
{
#if defined(__x86_64__)
    unsigned lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (unsigned long long)hi << 32 | lo;
#elif defined(__aarch64__)
    unsigned long long c;
    __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(c));
    return c;
#else
    return 0;
#endif
}
static unsigned long long counter_hz(void)
{
#if defined(__aarch64__)
    unsigned long long f;
    __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(f));
    return f;
#else
    return 0;
#endif
}

/* The kernel log (with its timestamps: under icount, guest nanoseconds) after
 * the marker, framed so a benchmark can cut it out of the console. */
static void dmesg(void)
{
    static char log[1 << 20];
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, log, sizeof log);
    w("SMK-DMESG-BEGIN\n");
    if (n > 0)
        write(1, log, n);
    w("SMK-DMESG-END\n");
}

int main(int argc, char **argv)
{
    /* CLOCK_BOOTTIME is what /proc/uptime shows (and what the agent's
	 * ready_ns is), here with nanoseconds instead of /proc/uptime's 10 ms. */
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    unsigned long long cnt = counter(), freq = counter_hz();
    char b[160];
    snprintf(b, sizeof b, "SMK-INIT-MARKER uptime %lld.%09ld counter %llu counter_hz %llu\n",
             (long long)ts.tv_sec, ts.tv_nsec, cnt, freq);
    w(b);
    mkdir("/proc", 0755);
    mount("proc", "/proc", "proc", 0, 0);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "smoke"))
            smoke();
        if (!strcmp(argv[i], "dmesg"))
            dmesg();
    }
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
