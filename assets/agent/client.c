#define _GNU_SOURCE
#include "agent.h"
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#define REPLY_MS 60000      /* wait for a reply, unless the command says otherwise */
#define PING_MS 10000       /* a ping without --wait */
#define RESEND_MS 2000      /* --wait: ping again on the same connection */
#define RETRY_MS 100        /* --wait: pause before connecting again */
#define EXEC_GRACE_MS 30000 /* on top of the command's own timeout */

/* Exit statuses of exec that are not the command's own, as in env(1). */
#define EXIT_CANNOT_RUN 125
#define EXIT_NOT_EXECUTABLE 126
#define EXIT_NOT_FOUND 127
#define EXIT_TIMED_OUT 124
#define EXIT_USAGE 2

struct target {
    struct sockaddr_storage sa;
    socklen_t len;
};

struct client {
    const char *addr;
    const char *cmd; /* for messages */
    struct target target;
    int fd;
    uint32_t id;
    struct smk_stream st;
    /* An error reply not tied to any request (id 0), kept in case ours
     * never comes: it probably explains why. */
    char stray[SMK_MAX_TEXT + 1];
};

static int usage_error(const char *cmd, const char *what)
{
    smk_log("%s: %s (see --help)", cmd, what);
    return EXIT_USAGE;
}

static int parse_target(const char *addr, struct target *t)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(addr, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&t->sa;
        size_t n = strlen(addr + 5);
        if (n == 0 || n >= sizeof(un->sun_path))
            return -1;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, addr + 5, n + 1);
        t->len = sizeof(*un);
        return 0;
    }
    if (strncmp(addr, "vsock:", 6) == 0) {
        struct sockaddr_vm *vm = (struct sockaddr_vm *)&t->sa;
        char *end;
        errno = 0;
        unsigned long cid = strtoul(addr + 6, &end, 10);
        if (errno || end == addr + 6 || *end != ':' || cid > 0xffffffffu)
            return -1;
        const char *p = end + 1;
        unsigned long port = strtoul(p, &end, 10);
        if (errno || end == p || *end || port > 0xffffffffu)
            return -1;
        vm->svm_family = AF_VSOCK;
        vm->svm_cid = (unsigned)cid;
        vm->svm_port = (unsigned)port;
        t->len = sizeof(*vm);
        return 0;
    }
    return -1;
}

static int client_connect(struct client *c)
{
    int fd = socket(c->target.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&c->target.sa, c->target.len) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    fcntl(fd, F_SETFL, O_NONBLOCK);
    c->fd = fd;
    /* Resync: over virtio-serial the stream may begin with the tail of a
     * reply meant for an earlier client. */
    smk_stream_init(&c->st, 1);
    return 0;
}

static void client_close(struct client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    smk_stream_free(&c->st);
}

static uint32_t new_id(void)
{
    uint32_t id = 0;
    if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t)sizeof(id))
        id = (uint32_t)(smk_boottime_ns() ^ ((uint64_t)getpid() << 16));
    return id ? id : 1;
}

static int64_t deadline_in(int64_t ms)
{
    return ms < 0 ? -1 : smk_now_ms() + ms;
}

/*
 * Reads frames until the reply to our request: 1 with *m set, 0 on timeout,
 * or a negative errno (-ECONNRESET when the agent closed the connection,
 * -EPROTO for a reply of ours that makes no sense).
 */
static int wait_reply(struct client *c, uint16_t request, struct smk_msg *m, int64_t deadline)
{
    for (;;) {
        size_t n;
        uint8_t *p = smk_stream_want(&c->st, &n);
        int64_t left = deadline < 0 ? -1 : deadline - smk_now_ms();
        if (deadline >= 0 && left <= 0)
            return 0;
        ssize_t r = smk_read_some(c->fd, p, n, left > 0x7fffffff ? 0x7fffffff : (int)left);
        if (r == -ETIMEDOUT)
            return 0;
        if (r == 0)
            return -ECONNRESET;
        if (r < 0)
            return (int)r;
        int k = smk_stream_advance(&c->st, (size_t)r, m);
        if (k == 0)
            continue;
        if (k < 0 || m->hdr.id != c->id) {
            if (k > 0 && m->hdr.type == SMK_ERROR && m->hdr.id == 0)
                snprintf(c->stray, sizeof(c->stray), "%.*s", (int)m->u.error.message.len,
                         (const char *)m->u.error.message.ptr);
            if (k < 0 && m->frame_len && m->hdr.id == c->id)
                return -EPROTO;
            continue;
        }
        if (m->hdr.type != (SMK_REPLY | request) && m->hdr.type != SMK_ERROR)
            return -EPROTO;
        return 1;
    }
}

static int send_request(struct client *c, struct smk_buf *req)
{
    int r = smk_write_all(c->fd, req->data, req->len, REPLY_MS);
    return r;
}

/* One request on a fresh connection; returns 0 with the reply in *m, or an
 * exit status after reporting the failure. */
static int transact(struct client *c, struct smk_buf *req, uint16_t type, struct smk_msg *m,
                    int64_t timeout_ms)
{
    int r = client_connect(c);
    if (r < 0) {
        smk_log("%s: connect %s: %s", c->cmd, c->addr, strerror(-r));
        return 1;
    }
    r = send_request(c, req);
    if (r < 0) {
        smk_log("%s: send to %s: %s", c->cmd, c->addr, strerror(-r));
        return 1;
    }
    r = wait_reply(c, type, m, deadline_in(timeout_ms));
    if (r > 0)
        return 0;
    const char *why = r == 0 ? "no reply in time" : strerror(-r);
    if (c->stray[0])
        smk_log("%s: %s: %s (agent said: %s)", c->cmd, c->addr, why, c->stray);
    else
        smk_log("%s: %s: %s", c->cmd, c->addr, why);
    return 1;
}

static void report_error(const struct client *c, const struct smk_msg *m)
{
    smk_log("%s: %.*s", c->cmd, (int)m->u.error.message.len, (const char *)m->u.error.message.ptr);
}

/* Send req (freed here) and wait for its reply: 0 with the reply in *m, the
 * transport's status, or 1 after reporting an error reply. */
static int request(struct client *c, struct smk_buf *req, uint16_t type, struct smk_msg *m)
{
    int r = transact(c, req, type, m, REPLY_MS);
    smk_buf_free(req);
    if (r)
        return r;
    if (m->hdr.type == SMK_ERROR) {
        report_error(c, m);
        return 1;
    }
    return 0;
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
    struct smk_buf req = {0};
    if (smk_encode_empty(&req, SMK_PING, c->id) < 0)
        return 1;

    struct smk_msg m;
    int got = 0, last_err = 0;
    if (wait_ms < 0) {
        int r = transact(c, &req, SMK_PING, &m, PING_MS);
        smk_buf_free(&req);
        if (r)
            return r;
        got = 1;
    } else {
        /* The guest may still be booting: the socket may not exist yet, and
         * over virtio-serial a request can sit unread until the agent opens
         * its port, so keep the connection and repeat the (same) request. */
        int64_t deadline = deadline_in(wait_ms);
        while (!got && smk_now_ms() < deadline) {
            int r = client_connect(c);
            if (r < 0) {
                last_err = r;
                smk_sleep_ms(RETRY_MS);
                continue;
            }
            while (!got && smk_now_ms() < deadline) {
                r = send_request(c, &req);
                if (r < 0)
                    break;
                int64_t resend = smk_now_ms() + RESEND_MS;
                r = wait_reply(c, SMK_PING, &m, resend < deadline ? resend : deadline);
                if (r > 0)
                    got = 1;
                else if (r < 0)
                    break;
            }
            if (!got) {
                last_err = r;
                client_close(c);
                smk_sleep_ms(RETRY_MS);
            }
        }
        smk_buf_free(&req);
        if (!got) {
            const char *why = last_err ? strerror(-last_err) : "no reply";
            smk_log("ping: %s: %s within %.3g s%s%s", c->addr, why, (double)wait_ms / 1000,
                    c->stray[0] ? "; agent said: " : "", c->stray);
            return 1;
        }
    }
    if (m.hdr.type == SMK_ERROR) {
        report_error(c, &m);
        return 1;
    }
    printf("version=%.*s proto=%u uptime_ns=%llu ready_ns=%llu\n", (int)m.u.ping_reply.version.len,
           (const char *)m.u.ping_reply.version.ptr, m.u.ping_reply.proto,
           (unsigned long long)m.u.ping_reply.uptime_ns,
           (unsigned long long)m.u.ping_reply.ready_ns);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int write_out(int fd, const struct smk_bytes *b)
{
    int r = smk_write_all(fd, b->ptr, b->len, -1);
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
    struct smk_exec_args ea = {.env = env};
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
            ea.cwd = v;
        } else if (option_value(args, n, &i, "--stdin", &v)) {
            stdin_path = v;
        } else if (option_value(args, n, &i, "--timeout", &v)) {
            int64_t ms;
            if (!v || parse_seconds(v, &ms) < 0 || ms > 0xffffffff) {
                free(env);
                return exec_usage(c, "--timeout needs a number of seconds");
            }
            ea.timeout_ms = (uint32_t)ms;
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
    ea.argv = (const char *const *)args + i;
    ea.argc = (size_t)(n - i);
    ea.envc = envc;

    uint8_t *in = NULL;
    size_t in_len = 0;
    if (stdin_path) {
        int r = smk_slurp(stdin_path, SMK_MAX_DATA, &in, &in_len);
        if (r < 0) {
            smk_log("exec: stdin %s: %s", stdin_path,
                    r == -EFBIG ? "larger than the 15 MiB limit" : strerror(-r));
            free(env);
            return EXIT_CANNOT_RUN;
        }
        ea.stdin_data = in;
        ea.stdin_len = in_len;
    }
    struct smk_buf req = {0};
    int r = smk_encode_exec(&req, c->id, &ea);
    free(in);
    free(env);
    if (r < 0) {
        smk_log("exec: request not sendable: %s", strerror(-r));
        return EXIT_CANNOT_RUN;
    }
    struct smk_msg m;
    int64_t timeout = ea.timeout_ms ? (int64_t)ea.timeout_ms + EXEC_GRACE_MS : -1;
    r = transact(c, &req, SMK_EXEC, &m, timeout);
    smk_buf_free(&req);
    if (r)
        return EXIT_CANNOT_RUN;
    if (m.hdr.type == SMK_ERROR) {
        report_error(c, &m);
        return exec_failure_status(m.u.error.code);
    }
    write_out(1, &m.u.exec_reply.out);
    write_out(2, &m.u.exec_reply.err);
    if (m.u.exec_reply.flags & SMK_EXEC_STDOUT_TRUNCATED)
        smk_log("exec: stdout truncated to %u bytes", SMK_MAX_OUTPUT);
    if (m.u.exec_reply.flags & SMK_EXEC_STDERR_TRUNCATED)
        smk_log("exec: stderr truncated to %u bytes", SMK_MAX_OUTPUT);
    switch (m.u.exec_reply.status) {
    case SMK_EXITED:
        return (int)(m.u.exec_reply.code & 0xff);
    case SMK_SIGNALED:
        return 128 + (int)(m.u.exec_reply.code & 0x7f);
    default:
        smk_log("exec: timed out after %.3g s; process group killed", (double)ea.timeout_ms / 1000);
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
    int r = smk_slurp(local, SMK_MAX_DATA, &data, &len);
    if (r < 0) {
        smk_log("write: %s: %s", local,
                r == -EFBIG ? "larger than the 15 MiB limit" : strerror(-r));
        return 1;
    }
    struct smk_buf req = {0};
    r = smk_encode_write_file(&req, c->id, pos[0], mode, data, len);
    free(data);
    if (r < 0) {
        smk_log("write: %s: %s", pos[0], strerror(-r));
        return 1;
    }
    struct smk_msg m;
    r = request(c, &req, SMK_WRITE_FILE, &m);
    if (r)
        return r;
    return 0;
}

static int cmd_read(struct client *c, int n, char **args)
{
    if (n != 1 || strncmp(args[0], "--", 2) == 0)
        return usage_error(c->cmd, "expected exactly one guest path");
    if (args[0][0] != '/')
        return usage_error(c->cmd, "the guest path must be absolute");
    struct smk_buf req = {0};
    int r = smk_encode_read_file(&req, c->id, args[0]);
    if (r < 0) {
        smk_log("read: %s: %s", args[0], strerror(-r));
        return 1;
    }
    struct smk_msg m;
    r = request(c, &req, SMK_READ_FILE, &m);
    if (r)
        return r;
    r = smk_write_all(1, m.u.read_reply.data.ptr, m.u.read_reply.data.len, -1);
    if (r < 0) {
        smk_log("read: writing to stdout: %s", strerror(-r));
        return 1;
    }
    if (m.u.read_reply.flags & SMK_READ_TRUNCATED) {
        smk_log("read: %s: truncated to %u bytes", args[0], SMK_MAX_DATA);
        return 1;
    }
    return 0;
}

static int cmd_shutdown(struct client *c, int n, char **args)
{
    uint32_t action = SMK_SHUTDOWN_REBOOT;
    for (int i = 0; i < n; i++) {
        if (strcmp(args[i], "--poweroff") == 0)
            action = SMK_SHUTDOWN_POWEROFF;
        else
            return usage_error(c->cmd, "unexpected argument");
    }
    struct smk_buf req = {0};
    if (smk_encode_shutdown(&req, c->id, action) < 0)
        return 1;
    struct smk_msg m;
    return request(c, &req, SMK_SHUTDOWN, &m);
}

int smk_client_main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("client", "expected ADDR and a command");
    struct client c = {.addr = argv[0], .cmd = argv[1], .fd = -1, .id = new_id()};
    smk_stream_init(&c.st, 1);
    signal(SIGPIPE, SIG_IGN);
    int is_exec = strcmp(c.cmd, "exec") == 0;
    if (parse_target(c.addr, &c.target) < 0) {
        smk_log("%s: bad address (want unix:PATH or vsock:CID:PORT)", c.addr);
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
    else
        r = usage_error(c.cmd, "unknown client command");
    client_close(&c);
    return r;
}
