/*
 * snap-guest: what the snapshot test needs inside the guest, the same on both arches
 * (the aarch64 guest has no busybox). One static binary, one job per command:
 *
 *   now                    CLOCK_REALTIME and CLOCK_BOOTTIME: "realtime_ns=N boottime_ns=N"
 *   urandom N              N bytes of /dev/urandom, as hex
 *   hostname [NAME]        sethostname(NAME); prints the hostname
 *   addr IFNAME [A.B.C.D/N] sets the interface's IPv4 address and brings it up; prints
 *                          "IFNAME A.B.C.D flags=0x..."
 *   ticker FILE            forks a detached process that rewrites FILE with a counter every
 *                          100 ms (sleeping between); prints its pid
 *   alive PID FILE         "pid=PID state=S count=N": the process exists (not a zombie) and
 *                          FILE's counter
 *   mark FILE              creates FILE holding "boottime_ns=N"
 *
 * It observes what the VMM changed after a restore (through smk_agent_after_restore) and
 * names the source guest before the capture.
 * Builds with "aarch64-linux-gnu-gcc -static" and with plain "gcc".
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fail(const char *what, const char *arg)
{
    fprintf(stderr, "snap-guest: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "",
            strerror(errno));
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: snap-guest now | urandom N | "
                    "hostname [NAME] | addr IFNAME [A.B.C.D/N] | ticker FILE | alive PID FILE |\n"
                    "       mark FILE\n");
    return 2;
}

static int parse_u64(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *v = x;
    return 0;
}

static uint64_t ns_of(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmd_now(void)
{
    printf("realtime_ns=%llu boottime_ns=%llu\n", (unsigned long long)ns_of(CLOCK_REALTIME),
           (unsigned long long)ns_of(CLOCK_BOOTTIME));
    return 0;
}

static int cmd_urandom(const char *arg)
{
    uint64_t n;
    if (parse_u64(arg, &n) < 0 || n == 0 || n > 4096)
        return usage();
    unsigned char buf[4096];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", "/dev/urandom");
    ssize_t got = read(fd, buf, n);
    close(fd);
    if (got != (ssize_t)n)
        return fail("read", "/dev/urandom");
    for (size_t i = 0; i < n; i++)
        printf("%02x", buf[i]);
    putchar('\n');
    return 0;
}

static int cmd_hostname(const char *name)
{
    if (name && sethostname(name, strlen(name)) < 0)
        return fail("sethostname", name);
    char buf[256];
    if (gethostname(buf, sizeof buf) < 0)
        return fail("gethostname", NULL);
    puts(buf);
    return 0;
}

static int cmd_addr(const char *ifname, const char *cidr)
{
    if (strlen(ifname) >= IFNAMSIZ)
        return usage();
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return fail("socket", NULL);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, ifname);
    struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
    if (cidr) {
        char ip[32];
        const char *slash = strchr(cidr, '/');
        uint64_t bits;
        if (!slash || (size_t)(slash - cidr) >= sizeof ip || parse_u64(slash + 1, &bits) < 0 ||
            bits > 32) {
            close(s);
            return usage();
        }
        memcpy(ip, cidr, (size_t)(slash - cidr));
        ip[slash - cidr] = '\0';
        sin->sin_family = AF_INET;
        if (inet_pton(AF_INET, ip, &sin->sin_addr) != 1) {
            close(s);
            return usage();
        }
        if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
            close(s);
            return fail("SIOCSIFADDR", ifname);
        }
        sin->sin_addr.s_addr = bits ? htonl(~0u << (32 - bits)) : 0;
        if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
            close(s);
            return fail("SIOCSIFNETMASK", ifname);
        }
        if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
            close(s);
            return fail("SIOCGIFFLAGS", ifname);
        }
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
            close(s);
            return fail("SIOCSIFFLAGS", ifname);
        }
    }
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
        close(s);
        return fail("SIOCGIFFLAGS", ifname);
    }
    int flags = ifr.ifr_flags;
    char ip[INET_ADDRSTRLEN] = "none";
    if (ioctl(s, SIOCGIFADDR, &ifr) == 0)
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    else if (errno != EADDRNOTAVAIL) {
        close(s);
        return fail("SIOCGIFADDR", ifname);
    }
    close(s);
    printf("%s %s flags=0x%x\n", ifname, ip, flags);
    return 0;
}

static int cmd_ticker(const char *file)
{
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork", NULL);
    if (pid > 0) {
        printf("%d\n", (int)pid);
        return 0;
    }
    /* Detached: the agent's exec waits for stdout to close, and its process group may be
     * signalled when the request ends. */
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    for (unsigned long long n = 1;; n++) {
        char tmp[4096], buf[32];
        snprintf(tmp, sizeof tmp, "%s.tmp", file);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            int len = snprintf(buf, sizeof buf, "%llu\n", n);
            if (write(fd, buf, (size_t)len) == len)
                rename(tmp, file);
            close(fd);
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int cmd_alive(const char *pidarg, const char *file)
{
    uint64_t pid;
    if (parse_u64(pidarg, &pid) < 0 || pid == 0 || pid > 4194304)
        return usage();
    char path[64], stat[512];
    snprintf(path, sizeof path, "/proc/%llu/stat", (unsigned long long)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", path);
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    if (n <= 0)
        return fail("read", path);
    stat[n] = '\0';
    const char *rp = strrchr(stat, ')');
    char state = rp && rp[1] == ' ' ? rp[2] : '?';
    if (state == 'Z' || state == 'X' || state == '?') {
        fprintf(stderr, "snap-guest: process %s is in state %c\n", pidarg, state);
        return 1;
    }
    fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail("open", file);
    char buf[32];
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return fail("read", file);
    buf[n] = '\0';
    printf("pid=%s state=%c count=%llu\n", pidarg, state, strtoull(buf, NULL, 10));
    return 0;
}

static int cmd_mark(const char *file)
{
    FILE *f = fopen(file, "we");
    if (!f)
        return fail("open", file);
    fprintf(f, "boottime_ns=%llu\n", (unsigned long long)ns_of(CLOCK_BOOTTIME));
    if (fclose(f) != 0)
        return fail("write", file);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *c = argv[1];
    if (!strcmp(c, "now") && argc == 2)
        return cmd_now();
    if (!strcmp(c, "urandom") && argc == 3)
        return cmd_urandom(argv[2]);
    if (!strcmp(c, "hostname") && argc <= 3)
        return cmd_hostname(argc == 3 ? argv[2] : NULL);
    if (!strcmp(c, "addr") && (argc == 3 || argc == 4))
        return cmd_addr(argv[2], argc == 4 ? argv[3] : NULL);
    if (!strcmp(c, "ticker") && argc == 3)
        return cmd_ticker(argv[2]);
    if (!strcmp(c, "alive") && argc == 4)
        return cmd_alive(argv[2], argv[3]);
    if (!strcmp(c, "mark") && argc == 3)
        return cmd_mark(argv[2]);
    return usage();
}
