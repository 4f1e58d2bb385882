/*
 * snap-host: the VMM's side of the post-restore steps, through the library's agent client
 * (smk_agent_after_restore, smkernel-agent-restore.h). Prints key=value lines and exits 0, or
 * prints "snap-host: ..." and exits 1.
 *
 *   snap-host ADDR restore [--hostname NAME] [--ifname IF] [--old-addr CIDR] [--addr CIDR]
 *             [--entropy HEX]   one smk_agent_after_restore() call (clock: the host's now)
 *   snap-host ADDR spawn -- ARGV...  starts ARGV, prints "proc=N pid=P" at once, then waits
 *             for its exit: "exit=CODE" (or "signal=N"); exits 1 if the connection ends first
 *   snap-host ADDR attach PROC  takes over process PROC (spawned by an earlier client on
 *             this virtio-serial port) and waits for its exit: "pid=P exit=CODE"
 *   snap-host check [AGENT]     smk_agent_after_restore's argument checks, no guest needed;
 *             with AGENT (the host-built supermachine-agent): against `AGENT serve --listen`,
 *             which refuses guest control, the call stops at its first step with that step's
 *             error and the agent's message, and a spent budget sends nothing (-ETIMEDOUT)
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "smkernel-agent-restore.h"

#define T 60000

static int fail(struct smk_agent *ag, const char *what, int r)
{
    const char *msg = ag ? smk_agent_error(ag) : "";
    fprintf(stderr, "snap-host: %s: %s%s%s%s\n", what, strerror(-r), *msg ? " (agent: " : "", msg,
            *msg ? ")" : "");
    return 1;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int cmd_restore(const char *addr, int argc, char **argv)
{
    struct smk_agent_restore r = {0};
    unsigned char entropy[4096];
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            fprintf(stderr, "snap-host: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(argv[i - 1], "--hostname"))
            r.hostname = v;
        else if (!strcmp(argv[i - 1], "--ifname"))
            r.ifname = v;
        else if (!strcmp(argv[i - 1], "--old-addr"))
            r.old_addr = v;
        else if (!strcmp(argv[i - 1], "--addr"))
            r.addr = v;
        else if (!strcmp(argv[i - 1], "--entropy")) {
            size_t n = strlen(v) / 2;
            if (strlen(v) % 2 || n > sizeof entropy) {
                fprintf(stderr, "snap-host: --entropy: up to 4096 bytes of hex\n");
                return 2;
            }
            for (size_t k = 0; k < n; k++) {
                int hi = hexval(v[2 * k]), lo = hexval(v[2 * k + 1]);
                if (hi < 0 || lo < 0) {
                    fprintf(stderr, "snap-host: --entropy: not lowercase hex\n");
                    return 2;
                }
                entropy[k] = (unsigned char)(hi << 4 | lo);
            }
            r.entropy = entropy;
            r.entropy_len = n;
        } else {
            fprintf(stderr, "snap-host: unknown option %s\n", argv[i - 1]);
            return 2;
        }
    }
    struct smk_agent *ag = NULL;
    int e = smk_agent_connect(addr, T, &ag);
    if (e < 0)
        return fail(NULL, "connect", e);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    e = smk_agent_after_restore(ag, &r, T);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (e < 0) {
        int rc = fail(ag, "smk_agent_after_restore", e);
        smk_agent_close(ag);
        return rc;
    }
    printf("proto=%d after_restore_ms=%.1f\n", smk_agent_proto(ag),
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    smk_agent_close(ag);
    return 0;
}

static int wait_exit(struct smk_agent *ag, uint32_t proc, const char *prefix)
{
    int status, code;
    int e = smk_agent_wait(ag, proc, &status, &code, T);
    if (e < 0)
        return fail(ag, "waiting for the process", e);
    printf("%s%s=%d\n", prefix, status == SMK_AGENT_EXITED ? "exit" : "signal", code);
    return 0;
}

static int cmd_spawn(const char *addr, int argc, char **argv)
{
    if (argc < 1)
        return 2;
    struct smk_agent_cmd cmd = {.argv = (const char *const *)argv, .argc = (size_t)argc};
    struct smk_agent *ag = NULL;
    int e = smk_agent_connect(addr, T, &ag);
    if (e < 0)
        return fail(NULL, "connect", e);
    uint32_t proc, pid;
    e = smk_agent_spawn(ag, &cmd, &proc, &pid, T);
    if (e < 0) {
        int rc = fail(ag, "spawn", e);
        smk_agent_close(ag);
        return rc;
    }
    printf("proc=%u pid=%u\n", proc, pid);
    fflush(stdout);
    int rc = wait_exit(ag, proc, "");
    smk_agent_close(ag);
    return rc;
}

static int cmd_attach(const char *addr, const char *procarg)
{
    char *end;
    errno = 0;
    unsigned long proc = strtoul(procarg, &end, 10);
    if (errno || end == procarg || *end || proc > 0xffffffffUL)
        return 2;
    struct smk_agent *ag = NULL;
    int e = smk_agent_connect(addr, T, &ag);
    if (e < 0)
        return fail(NULL, "connect", e);
    uint32_t pid;
    e = smk_agent_attach(ag, (uint32_t)proc, &pid, T);
    if (e < 0) {
        int rc = fail(ag, "attach", e);
        smk_agent_close(ag);
        return rc;
    }
    char prefix[32];
    snprintf(prefix, sizeof prefix, "pid=%u ", pid);
    int rc = wait_exit(ag, (uint32_t)proc, prefix);
    smk_agent_close(ag);
    return rc;
}

/* The argument checks come before anything is sent: a NULL handle is never dereferenced. */
static int cmd_check(void)
{
    struct smk_agent_restore ok = {0}, no_if = {.addr = "10.0.0.2/24"},
                             no_if_old = {.old_addr = "10.0.0.2/24"},
                             big = {.entropy = "x", .entropy_len = 4097},
                             no_bytes = {.entropy_len = 16};
    struct {
        const char *what;
        const struct smk_agent_restore *r;
    } cases[] = {{"NULL request", NULL},
                 {"addr without ifname", &no_if},
                 {"old_addr without ifname", &no_if_old},
                 {"4097 entropy bytes", &big},
                 {"entropy_len without entropy", &no_bytes}};
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* A non-NULL handle that must not be touched: the checks come first. */
        int r = smk_agent_after_restore((struct smk_agent *)&ok, cases[i].r, 0);
        if (r != -EINVAL) {
            fprintf(stderr, "snap-host: %s: %d, want -EINVAL\n", cases[i].what, r);
            bad = 1;
        }
    }
    int r = smk_agent_after_restore(NULL, &ok, 0);
    if (r != -EINVAL) {
        fprintf(stderr, "snap-host: NULL handle: %d, want -EINVAL\n", r);
        bad = 1;
    }
    if (!bad)
        printf("checks=6 einval=6\n");
    return bad;
}

/* Against a real agent that refuses guest control (serve --listen). */
static int check_agent(const char *agent)
{
    char dir[] = "/tmp/smk-snap-host-XXXXXX", path[64], listen[80], addr[80];
    if (!mkdtemp(dir)) {
        perror("snap-host: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/agent.sock", dir);
    snprintf(listen, sizeof listen, "unix:%s", path);
    snprintf(addr, sizeof addr, "unix:%s", path);
    pid_t pid = fork();
    if (pid < 0) {
        perror("snap-host: fork");
        rmdir(dir);
        return 1;
    }
    if (pid == 0) {
        execl(agent, agent, "serve", "--listen", listen, (char *)NULL);
        perror("snap-host: exec agent");
        _exit(127);
    }
    int bad = 0;
    struct smk_agent *ag = NULL;
    int e = -ETIMEDOUT;
    for (int i = 0; i < 200 && e < 0; i++) { /* the agent needs a moment to listen */
        e = smk_agent_connect(addr, 1000, &ag);
        if (e < 0)
            usleep(50 * 1000);
    }
    if (e < 0) {
        fail(NULL, "connect to the agent", e);
        bad = 1;
    } else {
        struct smk_agent_restore r = {.hostname = "x", .ifname = "lo", .addr = "10.9.9.9/32"};
        e = smk_agent_after_restore(ag, &r, 0);
        if (e != -ETIMEDOUT) {
            fprintf(stderr, "snap-host: timeout 0: %d, want -ETIMEDOUT\n", e);
            bad = 1;
        }
        e = smk_agent_after_restore(ag, &r, T);
        char msg[256];
        snprintf(msg, sizeof msg, "%s", smk_agent_error(ag));
        if (e != -EPERM || !*msg) {
            fprintf(stderr,
                    "snap-host: refused guest control: %d (%s), want -EPERM with a message\n", e,
                    msg);
            bad = 1;
        }
        /* The handle still works: the refusal was an answer, not a broken connection. */
        struct smk_agent_info info;
        if (!bad && (e = smk_agent_ping(ag, &info, T)) < 0)
            bad = fail(ag, "ping after the refusal", e);
        if (!bad)
            printf("proto=%d timeout0=ETIMEDOUT refused=EPERM message=\"%s\"\n",
                   smk_agent_proto(ag), msg);
        smk_agent_close(ag);
    }
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(path);
    rmdir(dir);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "check"))
        return cmd_check();
    if (argc == 3 && !strcmp(argv[1], "check")) {
        int r = cmd_check();
        return check_agent(argv[2]) || r;
    }
    if (argc >= 3 && !strcmp(argv[2], "restore"))
        return cmd_restore(argv[1], argc - 3, argv + 3);
    if (argc >= 5 && !strcmp(argv[2], "spawn") && !strcmp(argv[3], "--"))
        return cmd_spawn(argv[1], argc - 4, argv + 4);
    if (argc == 4 && !strcmp(argv[2], "attach"))
        return cmd_attach(argv[1], argv[3]);
    fprintf(stderr, "usage: snap-host ADDR restore [--hostname N] [--ifname IF] [--old-addr CIDR] "
                    "[--addr CIDR] [--entropy HEX] |\n       snap-host ADDR spawn -- ARGV... | "
                    "snap-host ADDR attach PROC | snap-host check [AGENT]\n");
    return 2;
}
