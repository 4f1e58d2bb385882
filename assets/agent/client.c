/*
 * Client mode: one request over one connection, through the library's client
 * (smkernel-agent.h, src/common/agent-client.c), the one the host links.
 */
#define _GNU_SOURCE
#include "agent.h"
#include "smkernel-agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define REPLY_MS 60000      /* wait for a reply, unless the command says otherwise */
#define PING_MS 10000       /* a ping without --wait */
#define RETRY_MS 100        /* --wait: pause before connecting again */
#define EXEC_GRACE_MS 30000 /* on top of the command's own timeout */

/* Exit statuses of exec that are not the command's own, as in env(1). */
#define EXIT_CANNOT_RUN 125
#define EXIT_NOT_EXECUTABLE 126
#define EXIT_NOT_FOUND 127
#define EXIT_TIMED_OUT 124
#define EXIT_USAGE 2

struct client {
    const char *addr;
    const char *cmd; /* for messages */
    struct smk_agent *ag;
};

static int usage_error(const char *cmd, const char *what)
{
    smka_log("%s: %s (see --help)", cmd, what);
    return EXIT_USAGE;
}

/* Connects (once) for the commands other than ping --wait. */
static int client_connect(struct client *c, int timeout_ms)
{
    if (c->ag)
        return 0;
    int r = smk_agent_connect(c->addr, timeout_ms, &c->ag);
    if (r < 0)
        smka_log("%s: connect %s: %s", c->cmd, c->addr, strerror(-r));
    return r;
}

/* Reports a failed request: the agent's message, or what went wrong locally. */
static int failed(struct client *c, int r)
{
    const char *msg = smk_agent_error(c->ag);
    if (msg && *msg)
        smka_log("%s: %s", c->cmd, msg);
    else
        smka_log("%s: %s: %s", c->cmd, c->addr, strerror(-r));
    return 1;
}

/* SECONDS as a duration in ms: >= 0, fractions allowed. */
static int parse_seconds(const char *s, int64_t *ms)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* The comparisons are written so that NaN fails them. */
    if (errno || end == s || *end || !(v >= 0 && v <= 4294967.0))
        return -1;
    double m = v * 1000.0;
    *ms = (int64_t)m;
    if ((double)*ms < m)
        ++*ms;
    return 0;
}

/* Matches "--name VALUE" and "--name=VALUE"; advances *i past what it used. */
static int option_value(char **args, int n, int *i, const char *name, const char **value)
{
    size_t len = strlen(name);
    if (strncmp(args[*i], name, len) != 0)
        return 0;
    if (args[*i][len] == '=') {
        *value = args[*i] + len + 1;
        return 1;
    }
    if (args[*i][len] != '\0')
        return 0;
    if (*i + 1 >= n) {
        *value = NULL;
        return 1;
    }
    *value = args[++*i];
    return 1;
}

static int cmd_ping(struct client *c, int n, char **args)
{
    int64_t wait_ms = -1;
    for (int i = 0; i < n; i++) {
        const char *v;
        if (option_value(args, n, &i, "--wait", &v)) {
            if (!v || parse_seconds(v, &wait_ms) < 0)
                return usage_error(c->cmd, "--wait needs a number of seconds");
        } else {
            return usage_error(c->cmd, "unexpected argument");
        }
    }
    struct smk_agent_info info;
    if (wait_ms < 0) {
        if (client_connect(c, PING_MS) < 0)
            return 1;
        int r = smk_agent_ping(c->ag, &info, PING_MS);
        if (r < 0)
            return failed(c, r);
    } else {
        /* The guest may still be booting: the socket may not exist yet, and
         * over virtio-serial a request can sit unread until the agent opens
         * its port (the library repeats its HELLO meanwhile). */
        int64_t deadline = smka_now_ms() + wait_ms;
        int r = -ETIMEDOUT;
        while (smka_now_ms() < deadline) {
            int left = (int)(deadline - smka_now_ms());
            r = smk_agent_connect(c->addr, left, &c->ag);
            if (r == 0) {
                r = smk_agent_ping(c->ag, &info, (int)(deadline - smka_now_ms()));
                if (r == 0)
                    break;
                smk_agent_close(c->ag);
                c->ag = NULL;
            }
            smka_sleep_ms(RETRY_MS);
        }
        if (r < 0) {
            smka_log("ping: %s: %s within %.3g s", c->addr, strerror(-r), (double)wait_ms / 1000);
            return 1;
        }
    }
    printf("version=%s proto=%u uptime_ns=%llu ready_ns=%llu\n", info.version, info.proto,
           (unsigned long long)info.uptime_ns, (unsigned long long)info.ready_ns);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int write_out(int fd, const uint8_t *p, size_t len)
{
    int r = smka_write_all(fd, p, len, -1);
    return r == -EPIPE ? 0 : r;
}

static int exec_failure_status(uint32_t code)
{
    switch (code) {
    case ENOENT:
    case ENOTDIR:
        return EXIT_NOT_FOUND;
    case EACCES:
    case EPERM:
    case ENOEXEC:
    case EISDIR:
    case ELOOP:
    case ENAMETOOLONG:
    case E2BIG:
    case ETXTBSY:
        return EXIT_NOT_EXECUTABLE;
    default:
        return EXIT_CANNOT_RUN;
    }
}

/* A usage error of exec must not look like an exit status of the command. */
static int exec_usage(const struct client *c, const char *what)
{
    usage_error(c->cmd, what);
    return EXIT_CANNOT_RUN;
}

static int cmd_exec(struct client *c, int n, char **args)
{
    const char **env = calloc((size_t)n + 1, sizeof(char *));
    size_t envc = 0;
    struct smk_agent_cmd cmd = {.env = env};
    const char *stdin_path = NULL;
    int i = 0;
    if (!env)
        return EXIT_CANNOT_RUN;
    for (; i < n; i++) {
        const char *v = NULL;
        if (strcmp(args[i], "--") == 0) {
            i++;
            break;
        }
        if (strncmp(args[i], "--", 2) != 0)
            break;
        if (option_value(args, n, &i, "--env", &v)) {
            if (!v || !strchr(v, '=') || v[0] == '=') {
                free(env);
                return exec_usage(c, "--env needs NAME=VALUE");
            }
            env[envc++] = v;
        } else if (option_value(args, n, &i, "--cwd", &v)) {
            cmd.cwd = v;
        } else if (option_value(args, n, &i, "--stdin", &v)) {
            stdin_path = v;
        } else if (option_value(args, n, &i, "--timeout", &v)) {
            int64_t ms;
            if (!v || parse_seconds(v, &ms) < 0 || ms > 0xffffffff) {
                free(env);
                return exec_usage(c, "--timeout needs a number of seconds");
            }
            cmd.cmd_timeout_ms = (uint32_t)ms;
        } else {
            free(env);
            return exec_usage(c, "unknown option");
        }
        if (!v) {
            free(env);
            return exec_usage(c, "option needs a value");
        }
    }
    if (i >= n) {
        free(env);
        return exec_usage(c, "no command given");
    }
    cmd.argv = (const char *const *)args + i;
    cmd.argc = (size_t)(n - i);
    cmd.envc = envc;
    uint8_t *in = NULL;
    size_t in_len = 0;
    if (stdin_path) {
        int r = smka_slurp(stdin_path, SMK_MAX_DATA, &in, &in_len);
        if (r < 0) {
            smka_log("exec: stdin %s: %s", stdin_path,
                     r == -EFBIG ? "larger than the 15 MiB limit" : strerror(-r));
            free(env);
            return EXIT_CANNOT_RUN;
        }
        cmd.stdin_data = in;
        cmd.stdin_len = in_len;
    }
    int timeout = cmd.cmd_timeout_ms
                      ? (int)((int64_t)cmd.cmd_timeout_ms + EXEC_GRACE_MS > 0x7fffffff
                                  ? 0x7fffffff
                                  : (int64_t)cmd.cmd_timeout_ms + EXEC_GRACE_MS)
                      : -1;
    struct smk_agent_exec_result res;
    int r = client_connect(c, REPLY_MS);
    if (r == 0)
        r = smk_agent_exec(c->ag, &cmd, &res, timeout);
    free(in);
    free(env);
    if (r < 0 && c->ag && smk_agent_error(c->ag)[0]) {
        smka_log("%s: %s", c->cmd, smk_agent_error(c->ag));
        return exec_failure_status((uint32_t)-r);
    }
    if (r < 0) {
        if (c->ag)
            smka_log("exec: %s: %s", c->addr, strerror(-r));
        return EXIT_CANNOT_RUN;
    }
    write_out(1, res.out, res.out_len);
    write_out(2, res.err, res.err_len);
    if (res.flags & SMK_AGENT_STDOUT_TRUNCATED)
        smka_log("exec: stdout truncated to %u bytes", SMK_MAX_OUTPUT);
    if (res.flags & SMK_AGENT_STDERR_TRUNCATED)
        smka_log("exec: stderr truncated to %u bytes", SMK_MAX_OUTPUT);
    int status = res.status, code = res.code;
    smk_agent_exec_result_free(&res);
    switch (status) {
    case SMK_AGENT_EXITED:
        return code & 0xff;
    case SMK_AGENT_SIGNALED:
        return 128 + (code & 0x7f);
    default:
        smka_log("exec: timed out after %.3g s; process group killed",
                 (double)cmd.cmd_timeout_ms / 1000);
        return EXIT_TIMED_OUT;
    }
}

static int cmd_write(struct client *c, int n, char **args)
{
    const char *pos[2] = {NULL, NULL};
    int npos = 0;
    uint32_t mode = 0644;
    for (int i = 0; i < n; i++) {
        const char *v;
        if (option_value(args, n, &i, "--mode", &v)) {
            char *end;
            unsigned long m = v ? strtoul(v, &end, 8) : 0;
            if (!v || !*v || *end || m > 07777)
                return usage_error(c->cmd, "--mode needs an octal mode");
            mode = (uint32_t)m;
        } else if (strncmp(args[i], "--", 2) == 0 || npos == 2) {
            return usage_error(c->cmd, "unexpected argument");
        } else {
            pos[npos++] = args[i];
        }
    }
    if (npos == 0)
        return usage_error(c->cmd, "no guest path given");
    if (pos[0][0] != '/')
        return usage_error(c->cmd, "the guest path must be absolute");
    const char *local = pos[1] ? pos[1] : "-";
    uint8_t *data;
    size_t len;
    int r = smka_slurp(local, SMK_MAX_DATA, &data, &len);
    if (r < 0) {
        smka_log("write: %s: %s", local,
                 r == -EFBIG ? "larger than the 15 MiB limit" : strerror(-r));
        return 1;
    }
    r = client_connect(c, REPLY_MS);
    if (r == 0)
        r = smk_agent_write_file(c->ag, pos[0], mode, data, len, REPLY_MS);
    free(data);
    if (r < 0)
        return c->ag ? failed(c, r) : 1;
    return 0;
}

static int cmd_read(struct client *c, int n, char **args)
{
    if (n != 1 || strncmp(args[0], "--", 2) == 0)
        return usage_error(c->cmd, "expected exactly one guest path");
    if (args[0][0] != '/')
        return usage_error(c->cmd, "the guest path must be absolute");
    void *data = NULL;
    size_t len = 0;
    int truncated = 0;
    int r = client_connect(c, REPLY_MS);
    if (r < 0)
        return 1;
    r = smk_agent_read_file(c->ag, args[0], 0, &data, &len, &truncated, REPLY_MS);
    if (r < 0)
        return failed(c, r);
    r = smka_write_all(1, data, len, -1);
    free(data);
    if (r < 0) {
        smka_log("read: writing to stdout: %s", strerror(-r));
        return 1;
    }
    if (truncated) {
        smka_log("read: %s: truncated to %u bytes", args[0], SMK_MAX_DATA);
        return 1;
    }
    return 0;
}

static int cmd_shutdown(struct client *c, int n, char **args)
{
    int poweroff = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(args[i], "--poweroff") == 0)
            poweroff = 1;
        else
            return usage_error(c->cmd, "unexpected argument");
    }
    int r = client_connect(c, REPLY_MS);
    if (r < 0)
        return 1;
    r = smk_agent_shutdown(c->ag, poweroff, REPLY_MS);
    return r < 0 ? failed(c, r) : 0;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* bench N [-- ARGV...]: N pings, N spawns of a trivial static command (this binary's
 * --version, at /proc/self/exe), then ARGV's output taken whole;
 * medians and totals in this machine's CLOCK_MONOTONIC ns (under qemu -icount shift=0 a
 * guest's nanosecond is one instruction). */
static int cmd_bench(struct client *c, int n, char **args)
{
    int count = n >= 1 ? atoi(args[0]) : 0;
    if (count <= 0 || (n > 1 && strcmp(args[1], "--") != 0))
        return usage_error(c->cmd, "bench needs a count, then optionally -- ARGV");
    if (client_connect(c, REPLY_MS) < 0)
        return 1;
    int64_t *v = calloc((size_t)count, sizeof(int64_t));
    if (!v)
        return 1;
    struct smk_agent_info info;
    int r = 0;
    for (int i = 0; i < count && r == 0; i++) {
        int64_t t = mono_ns();
        r = smk_agent_ping(c->ag, &info, REPLY_MS);
        v[i] = mono_ns() - t;
    }
    if (r < 0) {
        free(v);
        return failed(c, r);
    }
    qsort(v, (size_t)count, sizeof(int64_t), cmp_i64);
    printf("ping_ns_median=%lld\n", (long long)v[count / 2]);
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0) {
        free(v);
        smka_log("bench: /proc/self/exe: %s", strerror(errno));
        return 1;
    }
    self[sl] = '\0';
    const char *truth[] = {self, "--version"};
    for (int i = 0; i < count && r == 0; i++) {
        int64_t t = mono_ns();
        uint32_t proc;
        struct smk_agent_cmd cmd = {.argv = truth, .argc = 2};
        r = smk_agent_spawn(c->ag, &cmd, &proc, NULL, REPLY_MS);
        int status, code;
        if (r == 0)
            r = smk_agent_wait(c->ag, proc, &status, &code, REPLY_MS);
        v[i] = mono_ns() - t;
    }
    if (r < 0) {
        free(v);
        return failed(c, r);
    }
    qsort(v, (size_t)count, sizeof(int64_t), cmp_i64);
    printf("true_ns_median=%lld\n", (long long)v[count / 2]);
    free(v);
    if (n > 2) {
        struct smk_agent_cmd cmd = {.argv = (const char *const *)args + 2, .argc = (size_t)(n - 2)};
        uint32_t proc;
        int64_t t = mono_ns();
        r = smk_agent_spawn(c->ag, &cmd, &proc, NULL, REPLY_MS);
        uint64_t bytes = 0;
        while (r == 0) {
            struct smk_agent_event ev;
            r = smk_agent_next_event(c->ag, &ev, REPLY_MS);
            if (r == 0 && ev.type == SMK_AGENT_EXIT)
                break;
            bytes += ev.len;
        }
        if (r < 0)
            return failed(c, r);
        printf("stream_bytes=%llu stream_ns=%lld\n", (unsigned long long)bytes,
               (long long)(mono_ns() - t));
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

int smka_client_main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("client", "expected ADDR and a command");
    struct client c = {.addr = argv[0], .cmd = argv[1]};
    signal(SIGPIPE, SIG_IGN);
    int is_exec = strcmp(c.cmd, "exec") == 0;
    if (strncmp(c.addr, "unix:", 5) != 0 && strncmp(c.addr, "vsock:", 6) != 0 &&
        strncmp(c.addr, "hvsock:", 7) != 0) {
        smka_log("%s: bad address (want unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT)", c.addr);
        return is_exec ? EXIT_CANNOT_RUN : EXIT_USAGE;
    }
    int n = argc - 2, r;
    char **args = argv + 2;
    if (strcmp(c.cmd, "ping") == 0)
        r = cmd_ping(&c, n, args);
    else if (is_exec)
        r = cmd_exec(&c, n, args);
    else if (strcmp(c.cmd, "write") == 0)
        r = cmd_write(&c, n, args);
    else if (strcmp(c.cmd, "read") == 0)
        r = cmd_read(&c, n, args);
    else if (strcmp(c.cmd, "shutdown") == 0)
        r = cmd_shutdown(&c, n, args);
    else if (strcmp(c.cmd, "bench") == 0)
        r = cmd_bench(&c, n, args);
    else
        r = usage_error(c.cmd, "unknown client command");
    smk_agent_close(c.ag);
    return r;
}
