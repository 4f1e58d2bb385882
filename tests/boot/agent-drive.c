/*
 * agent-drive: the host side of the agent boot tests, through the library's client
 * (smk_agent_*, <smkernel.h>). One scenario per run; prints key=value lines and exits 0,
 * or prints "agent-drive: ..." and exits 1.
 *
 *   agent-drive ADDR ping-during -- ARGV...      spawn ARGV (a 20 s command), ping while it
 *                                                runs, then SIGTERM it: latency, exit signal
 *   agent-drive ADDR ping-during-exec -- ARGV... the same beside a batch EXEC of ARGV (sent as a
 *                                                raw frame on the client's connection)
 *   agent-drive ADDR stream BYTES -- ARGV...     spawn ARGV, take all its output: bytes, peak
 *                                                memory of this client and of the agent
 *   agent-drive ADDR stdin FILE -- ARGV...       spawn ARGV, stream FILE into it, print its
 *                                                output
 *   agent-drive ADDR pty SIZECMD -- ARGV...      ARGV on a 24x80 terminal: prompt, a line and
 *                                                its answer, SIZECMD, resize to 40x100, SIZECMD
 *   agent-drive ADDR control -- NOWARGV...       set the clock and read it back with NOWARGV,
 *                                                reseed, configure lo, host name, DNS, hosts
 *   agent-drive ADDR detach -- ARGV...           spawn ARGV, print its proc id, hang up
 *   agent-drive ADDR attach PROC                 take PROC over, print its output and exit
 *   agent-drive ADDR v1                          a protocol-1 PING frame, answered in v1
 *   agent-drive ADDR bench N                     N pings and N spawns of a trivial command
 *                                                ("supermachine-agent --version"): latencies
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
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "smkernel-agent.h" /* <smkernel.h> includes it */

#define T 30000

static struct smk_agent *ag;

__attribute__((noreturn, format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("agent-drive: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (ag && *smk_agent_error(ag))
        fprintf(stderr, " (agent: %s)", smk_agent_error(ag));
    fputc('\n', stderr);
    exit(1);
}

static void check(int r, const char *what)
{
    if (r < 0)
        die("%s: %s", what, strerror(-r));
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t spawn(char **argv, int argc, uint32_t flags, uint32_t *pid)
{
    const char *env[] = {"PS1=smk$ ", "ENV=/dev/null"};
    struct smk_agent_cmd cmd = {.argv = (const char *const *)argv,
                                .argc = (size_t)argc,
                                .env = env,
                                .envc = 2,
                                .flags = flags,
                                .rows = 24,
                                .cols = 80};
    uint32_t proc, p;
    check(smk_agent_spawn(ag, &cmd, &proc, &p, T), "spawn");
    if (pid)
        *pid = p;
    return proc;
}

static char *read_guest(const char *path)
{
    void *data;
    size_t len;
    int trunc;
    check(smk_agent_read_file(ag, path, 0, &data, &len, &trunc, T), path);
    return data;
}

static long kib_field(const char *status, const char *key)
{
    const char *p = strstr(status, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

/* This process's peak RSS. Not getrusage(): Linux folds the peak of the image before
 * execve into ru_maxrss, so a child of a big parent (python) would report the parent's. */
static long self_hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static int ping_during(char **argv, int argc)
{
    uint32_t proc = spawn(argv, argc, 0, NULL);
    double t0 = now_s();
    usleep(1000000);
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        double t = now_s();
        struct smk_agent_info info;
        check(smk_agent_ping(ag, &info, 5000), "ping while the command runs");
        double dt = now_s() - t;
        worst = dt > worst ? dt : worst;
    }
    struct smk_agent_event ev;
    int k;
    while ((k = smk_agent_poll_event(ag, &ev)) == 1)
        if (ev.type == SMK_AGENT_EXIT)
            die("the command ended before it was signalled");
    check(k, "poll_event");
    double ran = now_s() - t0;
    check(smk_agent_signal(ag, proc, SIGTERM, 0, T), "signal");
    int status, code;
    check(smk_agent_wait(ag, proc, &status, &code, T), "wait");
    printf("ping_max_ms=%.1f command_ran_s=%.2f exit=%s:%d after_s=%.2f\n", worst * 1000, ran,
           status == SMK_AGENT_SIGNALED ? "signal" : "exit", code, now_s() - t0);
    return status == SMK_AGENT_SIGNALED && code == SIGTERM ? 0 : 1;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* A batch EXEC occupies nothing but a worker: pings on the same connection are answered while
 * it runs. The frame is written by hand from PROTOCOL.md (the library has no asynchronous
 * EXEC); its reply, if any, is skipped by the client as another request's. */
static int ping_during_exec(const char *addr, char **argv, int argc)
{
    if (strncmp(addr, "unix:", 5) != 0)
        die("ping-during-exec needs a unix: address");
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", addr + 5);
    if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
        die("connect %s: %s", addr, strerror(errno));
    check(smk_agent_from_fd(fd, T, &ag), "hello");
    static unsigned char f[65536];
    size_t n = 16;
    put32(f + n, 0); /* timeout_ms */
    n += 4;
    put32(f + n, (uint32_t)argc);
    n += 4;
    for (int i = 0; i < argc; i++) {
        size_t l = strlen(argv[i]);
        if (n + 4 + l + 12 > sizeof(f))
            die("command too long");
        put32(f + n, (uint32_t)l);
        memcpy(f + n + 4, argv[i], l);
        n += 4 + l;
    }
    put32(f + n, 0);     /* env */
    put32(f + n + 4, 0); /* cwd */
    put32(f + n + 8, 0); /* stdin */
    n += 12;
    memcpy(f, "SMKA\x02\x00\x02\x00", 8); /* version 2, EXEC */
    put32(f + 8, 0x7e7e7e7e);
    put32(f + 12, (uint32_t)(n - 16));
    if (write(fd, f, n) != (ssize_t)n)
        die("write: %s", strerror(errno));
    usleep(1000000);
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        double t = now_s();
        struct smk_agent_info info;
        check(smk_agent_ping(ag, &info, 5000), "ping while the EXEC runs");
        double dt = now_s() - t;
        worst = dt > worst ? dt : worst;
    }
    printf("ping_max_ms=%.1f\n", worst * 1000);
    return 0;
}

static int stream(unsigned long long want, char **argv, int argc)
{
    uint32_t pid;
    spawn(argv, argc, 0, &pid);
    /* The agent's connection process is the command's parent. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%u/stat", pid);
    char *stat = read_guest(path);
    const char *rp = strrchr(stat, ')');
    int ppid = 0;
    if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1)
        die("cannot parse %s", path);
    free(stat);
    struct smk_agent_info info;
    check(smk_agent_ping(ag, &info, T), "ping");
    uint64_t g0 = info.uptime_ns;
    long before_kib = self_hwm_kib();
    double t0 = now_s();
    unsigned long long got = 0;
    for (;;) {
        struct smk_agent_event ev;
        check(smk_agent_next_event(ag, &ev, T), "next_event");
        if (ev.type == SMK_AGENT_EXIT) {
            if (ev.status != SMK_AGENT_EXITED || ev.code != 0)
                die("the producer ended with %d/%d", ev.status, ev.code);
            break;
        }
        got += ev.len;
    }
    double dt = now_s() - t0;
    check(smk_agent_ping(ag, &info, T), "ping");
    uint64_t guest_ns = info.uptime_ns - g0;
    snprintf(path, sizeof(path), "/proc/%d/status", ppid);
    char *st = read_guest(path);
    printf("bytes=%llu seconds=%.2f mib_per_s=%.2f guest_ns=%llu agent_pid=%d agent_hwm_kib=%ld "
           "client_maxrss_kib=%ld client_before_kib=%ld\n",
           got, dt, (double)got / (1 << 20) / dt, (unsigned long long)guest_ns, ppid,
           kib_field(st, "VmHWM:"), self_hwm_kib(), before_kib);
    free(st);
    return got == want ? 0 : 1;
}

static int feed(const char *file, char **argv, int argc)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die("%s: %s", file, strerror(errno));
    uint32_t proc = spawn(argv, argc, 0, NULL);
    static char buf[1 << 20];
    char *out = NULL;
    size_t out_len = 0;
    int status = -1, code = 0, done_in = 0;
    double t0 = now_s();
    size_t sent = 0;
    while (status < 0) {
        if (!done_in) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n < 0)
                die("%s: %s", file, strerror(errno));
            check(smk_agent_stdin(ag, proc, buf, (size_t)n, n == 0, T), "stdin");
            sent += (size_t)n;
            done_in = n == 0;
        }
        struct smk_agent_event ev;
        int k;
        while (status < 0 && (k = done_in ? (smk_agent_next_event(ag, &ev, T) == 0)
                                          : smk_agent_poll_event(ag, &ev)) == 1) {
            if (ev.type == SMK_AGENT_EXIT) {
                status = ev.status;
                code = ev.code;
            } else if (ev.stream == 1) {
                char *grown = realloc(out, out_len + ev.len + 1);
                if (!grown)
                    die("out of memory");
                out = grown;
                memcpy(out + out_len, ev.data, ev.len);
                out_len += ev.len;
                out[out_len] = '\0';
            }
        }
    }
    close(fd);
    printf("sent=%zu seconds=%.2f exit=%d:%d\nout=%s", sent, now_s() - t0, status, code,
           out ? out : "\n");
    free(out);
    return status == SMK_AGENT_EXITED && code == 0 ? 0 : 1;
}

static char term[1 << 16];
static size_t term_len;

static void expect(const char *want, const char *step)
{
    double until = now_s() + 30;
    while (!memmem(term, term_len, want, strlen(want))) {
        if (now_s() > until)
            die("%s: no \"%s\" in the terminal's output: \"%.*s\"", step, want, (int)term_len,
                term);
        struct smk_agent_event ev;
        check(smk_agent_next_event(ag, &ev, T), step);
        if (ev.type == SMK_AGENT_EXIT)
            die("%s: the shell exited (%d)", step, ev.code);
        size_t n = ev.len < sizeof(term) - term_len ? ev.len : sizeof(term) - term_len;
        memcpy(term + term_len, ev.data, n);
        term_len += n;
    }
}

static void say(uint32_t proc, const char *line)
{
    term_len = 0;
    check(smk_agent_stdin(ag, proc, line, strlen(line), 0, T), "stdin");
}

static int pty(const char *sizecmd, char **argv, int argc)
{
    uint32_t proc = spawn(argv, argc, SMK_AGENT_TTY, NULL);
    expect("smk$ ", "prompt");
    say(proc, "echo smk-answer\n");
    expect("\nsmk-answer", "answer");
    char line[256];
    snprintf(line, sizeof(line), "%s\n", sizecmd);
    say(proc, line);
    expect("24 80", "initial size");
    check(smk_agent_resize(ag, proc, 40, 100, T), "resize");
    say(proc, line);
    expect("40 100", "size after resize");
    say(proc, "exit 3\n");
    int status, code;
    check(smk_agent_wait(ag, proc, &status, &code, T), "wait");
    printf("prompt=ok answer=ok size=24x80 resized=40x100 exit=%d:%d\n", status, code);
    return status == SMK_AGENT_EXITED && code == 3 ? 0 : 1;
}

static int contains(const char *path, const char *needle)
{
    char *s = read_guest(path);
    int r = strstr(s, needle) != NULL;
    if (!r)
        fprintf(stderr, "agent-drive: %s has no \"%s\":\n%s\n", path, needle, s);
    free(s);
    return r;
}

static int control(char **argv, int argc)
{
    const uint64_t when = 1893456000ull; /* 2030-01-01T00:00:00Z */
    check(smk_agent_set_time(ag, when * 1000000000ull, T), "set time");
    struct smk_agent_cmd cmd = {.argv = (const char *const *)argv, .argc = (size_t)argc};
    struct smk_agent_exec_result res;
    check(smk_agent_exec(ag, &cmd, &res, T), "reading the clock");
    long long back = strtoll((char *)res.out, NULL, 10);
    smk_agent_exec_result_free(&res);
    if (back < (long long)when || back > (long long)when + 60)
        die("clock set to %llu, read back %lld", (unsigned long long)when, back);
    uint8_t seed[64];
    for (size_t i = 0; i < sizeof(seed); i++)
        seed[i] = (uint8_t)(rand() ^ (int)i);
    check(smk_agent_reseed(ag, seed, sizeof(seed), 1, T), "reseed");
    check(smk_agent_link(ag, "lo", 1, 0, T), "link lo up");
    check(smk_agent_addr(ag, 0, "lo", "10.123.0.2/24", T), "address 10.123.0.2/24");
    check(smk_agent_addr(ag, 0, "lo", "fd00:123::2/64", T), "address fd00:123::2/64");
    check(smk_agent_route(ag, 0, "10.124.0.0/16", "10.123.0.1", NULL, 0, T), "route");
    check(smk_agent_route(ag, 0, "default", "10.123.0.1", "lo", 0, T), "default route");
    check(smk_agent_route(ag, 0, "fd00:124::/64", NULL, "lo", 0, T), "IPv6 route");
    check(smk_agent_link(ag, "lo", -1, 60000, T), "MTU of lo");
    check(smk_agent_hostname(ag, "smk-guest", T), "host name");
    const char *servers[] = {"10.123.0.53"}, *search[] = {"smk.test"};
    check(smk_agent_dns(ag, servers, 1, search, 1, NULL, 0, T), "dns");
    const char *hosts[] = {"10.123.0.9 db.smk.test db"};
    check(smk_agent_hosts_add(ag, hosts, 1, T), "hosts");
    int ok = 1;
    ok &= contains("/proc/net/fib_trie", "10.123.0.2");
    ok &= contains("/proc/net/if_inet6", "fd000123000000000000000000000002");
    /* /proc/net/route: destination and gateway in hex, in the kernel's byte order. */
    ok &= contains("/proc/net/route", "00007C0A\t01007B0A");
    ok &= contains("/proc/net/route", "lo\t00000000\t01007B0A");
    ok &= contains("/proc/net/ipv6_route", "fd000124000000000000000000000000 40");
    ok &= contains("/sys/class/net/lo/mtu", "60000");
    ok &= contains("/proc/sys/kernel/hostname", "smk-guest");
    ok &= contains("/etc/resolv.conf", "nameserver 10.123.0.53");
    ok &= contains("/etc/resolv.conf", "search smk.test");
    ok &= contains("/etc/hosts", "10.123.0.9");
    printf("clock=%lld reseed=ok addr=10.123.0.2/24,fd00:123::2/64 route=10.124.0.0/16,default "
           "route6=fd00:124::/64 mtu=60000 hostname=smk-guest dns=ok hosts=ok verified=%s\n",
           back, ok ? "yes" : "no");
    return ok ? 0 : 1;
}

/* A protocol-1 client: the 16-byte PING of PROTOCOL.md, answered in version 1. */
static int v1(const char *addr)
{
    if (strncmp(addr, "unix:", 5) != 0)
        die("v1 needs a unix: address");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof(un.sun_path), "%s", addr + 5);
    if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
        die("connect %s: %s", addr, strerror(errno));
    static const unsigned char ping[16] = {'S', 'M', 'K', 'A', 1, 0, 1, 0, 0x5a, 0xa5, 0, 0};
    if (write(fd, ping, sizeof(ping)) != (ssize_t)sizeof(ping))
        die("write: %s", strerror(errno));
    /* Find our reply: a virtio-serial line may hold bytes of earlier clients. */
    unsigned char buf[4096];
    size_t have = 0;
    double until = now_s() + 30;
    while (now_s() < until) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        if (n <= 0)
            die("read: %s", n ? strerror(errno) : "connection closed");
        have += (size_t)n;
        for (size_t i = 0; i + 16 <= have; i++) {
            if (memcmp(buf + i, "SMKA", 4) || buf[i + 8] != 0x5a || buf[i + 9] != 0xa5)
                continue;
            unsigned version = buf[i + 4] | buf[i + 5] << 8, type = buf[i + 6] | buf[i + 7] << 8;
            printf("v1_reply_version=%u type=0x%04x\n", version, type);
            close(fd);
            return version == 1 && type == 0x8001 ? 0 : 1;
        }
        if (have == sizeof(buf))
            have = 0;
    }
    die("no reply to the version-1 PING");
}

static int detach(char **argv, int argc)
{
    uint32_t pid;
    uint32_t proc = spawn(argv, argc, 0, &pid);
    printf("proc=%u pid=%u\n", proc, pid);
    return 0;
}

static int attach(uint32_t proc)
{
    uint32_t pid;
    check(smk_agent_attach(ag, proc, &pid, T), "attach");
    char out[4096];
    size_t len = 0;
    for (;;) {
        struct smk_agent_event ev;
        check(smk_agent_next_event(ag, &ev, T), "next_event");
        if (ev.type == SMK_AGENT_EXIT) {
            printf("pid=%u exit=%d:%d\nout=%.*s\n", pid, ev.status, ev.code, (int)len, out);
            return ev.status == SMK_AGENT_EXITED && ev.code == 0 ? 0 : 1;
        }
        size_t n = ev.len < sizeof(out) - len ? ev.len : sizeof(out) - len;
        memcpy(out + len, ev.data, n);
        len += n;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int bench(int n)
{
    double *v = calloc((size_t)n, sizeof(double));
    struct smk_agent_info info;
    uint64_t g0 = 0;
    check(smk_agent_ping(ag, &info, T), "ping");
    g0 = info.uptime_ns;
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        double t = now_s();
        check(smk_agent_ping(ag, &info, T), "ping");
        v[i] = now_s() - t;
    }
    uint64_t g1 = info.uptime_ns;
    double host_ping = now_s() - t0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    printf("ping_median_ms=%.3f ping_guest_ns_per_op=%llu ping_host_ms_per_op=%.3f\n",
           v[n / 2] * 1000, (unsigned long long)((g1 - g0) / (uint64_t)n), host_ping * 1000 / n);
    /* A trivial static command on every guest: the agent binary itself. */
    const char *argv[] = {"/sbin/supermachine-agent", "--version"};
    t0 = now_s();
    g0 = g1;
    for (int i = 0; i < n; i++) {
        double t = now_s();
        uint32_t proc;
        check(smk_agent_spawn(ag, &(struct smk_agent_cmd){.argv = argv, .argc = 2}, &proc, NULL, T),
              "spawn");
        int status, code;
        check(smk_agent_wait(ag, proc, &status, &code, T), "wait");
        v[i] = now_s() - t;
    }
    check(smk_agent_ping(ag, &info, T), "ping");
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    printf("true_median_ms=%.3f true_guest_ns_per_op=%llu\n", v[n / 2] * 1000,
           (unsigned long long)((info.uptime_ns - g0) / (uint64_t)n));
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fputs("usage: agent-drive ADDR SCENARIO ... (see the source's header)\n", stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const char *addr = argv[1], *what = argv[2];
    if (strcmp(what, "v1") == 0)
        return v1(addr);
    if (strcmp(what, "ping-during-exec") == 0 && argc > 4 && strcmp(argv[3], "--") == 0) {
        int r = ping_during_exec(addr, argv + 4, argc - 4);
        smk_agent_close(ag);
        return r;
    }
    check(smk_agent_connect(addr, T, &ag), "connect");
    int dd = 3;
    while (dd < argc && strcmp(argv[dd], "--") != 0)
        dd++;
    char **cmd = argv + dd + 1;
    int ncmd = argc - dd - 1;
    int r;
    if (strcmp(what, "ping-during") == 0 && ncmd > 0)
        r = ping_during(cmd, ncmd);
    else if (strcmp(what, "stream") == 0 && dd == 4 && ncmd > 0)
        r = stream(strtoull(argv[3], NULL, 10), cmd, ncmd);
    else if (strcmp(what, "stdin") == 0 && dd == 4 && ncmd > 0)
        r = feed(argv[3], cmd, ncmd);
    else if (strcmp(what, "pty") == 0 && dd == 4 && ncmd > 0)
        r = pty(argv[3], cmd, ncmd);
    else if (strcmp(what, "control") == 0 && ncmd > 0)
        r = control(cmd, ncmd);
    else if (strcmp(what, "detach") == 0 && ncmd > 0)
        r = detach(cmd, ncmd);
    else if (strcmp(what, "attach") == 0 && argc == 4)
        r = attach((uint32_t)strtoul(argv[3], NULL, 10));
    else if (strcmp(what, "bench") == 0 && argc == 4)
        r = bench(atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
    else
        die("bad arguments for %s", what);
    smk_agent_close(ag);
    return r;
}
