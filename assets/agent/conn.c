#define _GNU_SOURCE
#include "agent.h"
#include "stream.h"
#include "version.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/*
 * One peer (a socket connection or the virtio-serial port) is served by one
 * process running this event loop. Nothing in it blocks: requests that may
 * take long (EXEC, files, guest control) run in a worker process of their
 * own whose reply frame comes back through a pipe, and processes of SPAWN
 * stream through non-blocking pipes or a pseudo-terminal. So a ping is
 * answered while any number of commands run, over every transport.
 */

#define STALL_MS 10000          /* a frame once started must keep arriving */
#define IDLE_MS (5 * 60 * 1000) /* a socket connection without requests or processes */
#define SEND_MS 30000           /* replies the peer does not take */
#define LINGER_MS 2000          /* after a SHUTDOWN reply, for the peer to hang up */
#define RECONNECT_POLL_MS 100   /* how often a disconnected serial port is checked */
#define SALVAGE_QUIET_MS 1000   /* serial: a stalled frame is checked for a newer request */
#define MAX_WORKERS 16          /* requests in progress in worker processes */
#define OUT_HIGH (16u << 20)    /* queued output past which requests are not read */
#define CHUNK (64u << 10)       /* process output read at once */
#define STDIN_MAX (16u << 20)   /* stdin queued for one process, not yet written */
#define DETACHED_EXIT_MS (5 * 60 * 1000) /* an exit nobody attached to hear is dropped */

struct chunk {
    struct chunk *next;
    uint32_t id; /* the STDIN request, answered once the chunk is written */
    uint16_t version;
    int close_after;
    size_t len, off;
    uint8_t data[];
};

struct proc {
    int used;
    uint32_t id;
    pid_t pid;
    int tty;
    int in, out, err;
    int exited, status;
    int64_t exited_at;
    uint32_t sub; /* request id events go to; 0: detached */
    uint16_t sub_version;
    uint64_t credit; /* output bytes the host will take */
    struct chunk *stdin_head, *stdin_tail;
    size_t stdin_queued;
    int stdin_closing; /* close stdin once the queue is written */
};

struct worker {
    pid_t pid;  /* 0: free slot */
    int fd;     /* the reply frame, then end of file */
    int cancel; /* closed to cancel an EXEC */
    uint32_t id;
    uint16_t version;
    struct smk_buf got;
    int reaped;
    int discard; /* its client is gone: the reply goes nowhere */
};

struct conn {
    int fd;
    int serial;
    int over;
    int peer_gone;
    int64_t hup_since;    /* when a serial hang-up began, or -1 */
    int64_t paused_until; /* serial hang-up: the port is looked at again then */
    int64_t last_rx;
    int64_t last_request;
    int64_t salvage_at; /* serial: next look for a request behind a dead frame */
    int64_t send_since; /* queued output not moving since, or -1 */
    const struct smka_conn_ctx *ctx;
    struct smka_stream st;
    struct smk_buf out; /* frames for the peer */
    size_t out_off;
    int sfd;
    uint32_t next_proc;
    struct proc procs[SMKA_AGENT_MAX_PROCS];
    struct worker workers[MAX_WORKERS];
};

static void queue(struct conn *c, struct smk_buf *b)
{
    if (b->len) {
        struct smk_buf tmp = {0};
        if (c->out.len == c->out_off) {
            smk_buf_free(&c->out);
            c->out_off = 0;
        }
        if (c->out.len == 0) {
            c->out = *b;
            c->out.version = 0;
            *b = tmp;
        } else {
            if (c->out.cap - c->out.len < b->len) {
                size_t live = c->out.len - c->out_off;
                size_t cap = live + b->len;
                cap += cap / 2;
                uint8_t *p = malloc(cap);
                if (!p) {
                    smka_log("dropping a reply: out of memory");
                    smk_buf_free(b);
                    return;
                }
                memcpy(p, c->out.data + c->out_off, live);
                free(c->out.data);
                c->out.data = p;
                c->out.len = live;
                c->out.cap = cap;
                c->out_off = 0;
            }
            memcpy(c->out.data + c->out.len, b->data, b->len);
            c->out.len += b->len;
        }
        if (c->send_since < 0)
            c->send_since = smka_now_ms();
    }
    smk_buf_free(b);
}

static size_t queued(const struct conn *c)
{
    return c->out.len - c->out_off;
}

__attribute__((format(printf, 5, 6))) static void
reply_error(struct conn *c, uint32_t id, uint16_t version, int code, const char *fmt, ...)
{
    char text[SMK_MAX_TEXT + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct smk_buf b = {.version = version};
    if (smk_encode_error(&b, id, (uint32_t)code, text) == 0)
        queue(c, &b);
}

static void reply(struct conn *c, const struct smk_msg *m, struct smk_buf *b, int r)
{
    if (r < 0) {
        smk_buf_free(b);
        reply_error(c, m->hdr.id, m->hdr.version, -r, "encoding the reply: %s", strerror(-r));
    } else {
        queue(c, b);
    }
}

static void reply_empty(struct conn *c, const struct smk_msg *m, uint16_t type)
{
    struct smk_buf b = {.version = m->hdr.version};
    reply(c, m, &b, smk_encode_empty(&b, type, m->hdr.id));
}

/* ---- processes ---- */

static struct proc *find_proc(struct conn *c, uint32_t id)
{
    for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++)
        if (c->procs[i].used && c->procs[i].id == id)
            return &c->procs[i];
    return NULL;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void proc_free(struct proc *p)
{
    close_fd(&p->in);
    close_fd(&p->out);
    close_fd(&p->err);
    while (p->stdin_head) {
        struct chunk *k = p->stdin_head;
        p->stdin_head = k->next;
        free(k);
    }
    memset(p, 0, sizeof(*p));
    p->in = p->out = p->err = -1;
}

static void send_exit_if_done(struct conn *c, struct proc *p)
{
    if (!p->exited || p->out >= 0 || p->err >= 0 || !p->sub)
        return;
    uint32_t status = WIFSIGNALED(p->status) ? SMK_SIGNALED : SMK_EXITED;
    uint32_t code =
        WIFSIGNALED(p->status) ? (uint32_t)WTERMSIG(p->status) : (uint32_t)WEXITSTATUS(p->status);
    struct smk_buf b = {.version = p->sub_version};
    if (smk_encode_proc(&b, SMK_EXIT, p->sub, p->id, status, code, NULL, 0) == 0)
        queue(c, &b);
    else
        smk_buf_free(&b);
    proc_free(p);
}

/* Reads what the host has credit for from one of the process's outputs. */
static void proc_read(struct conn *c, struct proc *p, int *fd, uint32_t stream)
{
    static uint8_t buf[CHUNK];
    size_t want = p->credit < CHUNK ? (size_t)p->credit : CHUNK;
    if (want == 0)
        return;
    ssize_t n = read(*fd, buf, want);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) { /* end of file, or EIO from a terminal nobody holds open */
        close_fd(fd);
        return;
    }
    p->credit -= (uint64_t)n;
    struct smk_buf b = {.version = p->sub_version};
    if (smk_encode_proc(&b, SMK_OUTPUT, p->sub, p->id, stream, 0, buf, (size_t)n) == 0)
        queue(c, &b);
    else
        smk_buf_free(&b);
}

static void stdin_done(struct conn *c, struct chunk *k)
{
    if (k->id) {
        struct smk_buf b = {.version = k->version};
        if (smk_encode_empty(&b, SMK_STDIN_REPLY, k->id) == 0)
            queue(c, &b);
        else
            smk_buf_free(&b);
    }
}

static void proc_write(struct conn *c, struct proc *p)
{
    while (p->stdin_head) {
        struct chunk *k = p->stdin_head;
        if (k->off < k->len) {
            ssize_t w = write(p->in, k->data + k->off, k->len - k->off);
            if (w < 0 && (errno == EAGAIN || errno == EINTR))
                return;
            if (w < 0) {
                /* The process closed its stdin: what is left is dropped,
                 * and each request is still answered. */
                k->off = k->len;
            } else {
                k->off += (size_t)w;
                p->stdin_queued -= (size_t)w;
            }
            if (k->off < k->len)
                return;
        }
        p->stdin_head = k->next;
        if (!p->stdin_head)
            p->stdin_tail = NULL;
        stdin_done(c, k);
        free(k);
    }
    p->stdin_queued = 0;
    if (p->stdin_closing && !p->tty)
        close_fd(&p->in);
}

static void handle_spawn(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = NULL;
    for (int i = 0; i < SMKA_AGENT_MAX_PROCS && !p; i++)
        if (!c->procs[i].used)
            p = &c->procs[i];
    if (!p) {
        reply_error(c, m->hdr.id, m->hdr.version, SMK_EAGAIN,
                    "too many processes: at most %d per connection", SMKA_AGENT_MAX_PROCS);
        return;
    }
    struct smka_spawned sp;
    char why[512];
    int r = smka_spawn(m, &sp, why, sizeof(why));
    if (r < 0) {
        reply_error(c, m->hdr.id, m->hdr.version, -r, "%s", why);
        return;
    }
    memset(p, 0, sizeof(*p));
    p->used = 1;
    p->id = ++c->next_proc ? c->next_proc : ++c->next_proc;
    p->pid = sp.pid;
    p->tty = sp.tty;
    p->in = sp.in;
    p->out = sp.out;
    p->err = sp.err;
    p->sub = m->hdr.id;
    p->sub_version = m->hdr.version;
    p->credit = m->u.exec.window ? m->u.exec.window : SMK_DEFAULT_WINDOW;
    struct smk_buf b = {.version = m->hdr.version};
    reply(c, m, &b,
          smk_encode_spawn_reply(&b, SMK_SPAWN_REPLY, m->hdr.id, p->id, (uint32_t)p->pid));
}

static struct proc *proc_arg(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = find_proc(c, m->u.proc.proc);
    if (!p)
        reply_error(c, m->hdr.id, m->hdr.version, SMK_ESRCH, "no process %u", m->u.proc.proc);
    return p;
}

static void handle_stdin(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = proc_arg(c, m);
    if (!p)
        return;
    if (p->stdin_closing || p->in < 0) {
        reply_error(c, m->hdr.id, m->hdr.version, EPIPE, "stdin of process %u is closed", p->id);
        return;
    }
    size_t n = m->u.proc.data.len;
    int closing = (m->u.proc.a & SMK_STDIN_CLOSE) != 0;
    if (n > STDIN_MAX - p->stdin_queued) {
        reply_error(c, m->hdr.id, m->hdr.version, SMK_ENOBUFS,
                    "stdin of process %u: %zu bytes wait already; wait for replies", p->id,
                    p->stdin_queued);
        return;
    }
    /* A terminal has no end of file of its own: ^D at the start of a line. */
    size_t extra = closing && p->tty ? 1 : 0;
    struct chunk *k = malloc(sizeof(*k) + n + extra);
    if (!k) {
        reply_error(c, m->hdr.id, m->hdr.version, SMK_ENOMEM, "out of memory");
        return;
    }
    k->next = NULL;
    k->id = m->hdr.id;
    k->version = m->hdr.version;
    k->close_after = closing;
    k->len = n + extra;
    k->off = 0;
    if (n)
        memcpy(k->data, m->u.proc.data.ptr, n);
    if (extra)
        k->data[n] = 4;
    if (p->stdin_tail)
        p->stdin_tail->next = k;
    else
        p->stdin_head = k;
    p->stdin_tail = k;
    p->stdin_queued += k->len;
    p->stdin_closing = closing;
    proc_write(c, p);
}

static void handle_ack(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = proc_arg(c, m);
    if (p) {
        p->credit += m->u.proc.a;
        if (p->credit > 2ull * SMK_MAX_WINDOW)
            p->credit = 2ull * SMK_MAX_WINDOW;
    }
}

static void handle_signal(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = proc_arg(c, m);
    if (!p)
        return;
    if (p->exited) {
        reply_error(c, m->hdr.id, m->hdr.version, SMK_ESRCH, "process %u has exited", p->id);
        return;
    }
    pid_t target = (m->u.proc.b & SMK_SIGNAL_GROUP) ? -p->pid : p->pid;
    if (kill(target, (int)m->u.proc.a) < 0) {
        int e = errno;
        reply_error(c, m->hdr.id, m->hdr.version, e, "kill %d: %s", (int)target, strerror(e));
        return;
    }
    reply_empty(c, m, SMK_SIGNAL_REPLY);
}

static void handle_resize(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = proc_arg(c, m);
    if (!p)
        return;
    struct winsize ws = {.ws_row = (unsigned short)m->u.proc.a,
                         .ws_col = (unsigned short)m->u.proc.b};
    if (!p->tty || p->in < 0) {
        reply_error(c, m->hdr.id, m->hdr.version, ENOTTY, "process %u has no terminal", p->id);
        return;
    }
    if (ioctl(p->in, TIOCSWINSZ, &ws) < 0) {
        int e = errno;
        reply_error(c, m->hdr.id, m->hdr.version, e, "TIOCSWINSZ: %s", strerror(e));
        return;
    }
    reply_empty(c, m, SMK_RESIZE_REPLY);
}

static void handle_attach(struct conn *c, const struct smk_msg *m)
{
    struct proc *p = proc_arg(c, m);
    if (!p)
        return;
    p->sub = m->hdr.id;
    p->sub_version = m->hdr.version;
    p->credit = m->u.proc.a ? m->u.proc.a : SMK_DEFAULT_WINDOW;
    struct smk_buf b = {.version = m->hdr.version};
    reply(c, m, &b,
          smk_encode_spawn_reply(&b, SMK_ATTACH_REPLY, m->hdr.id, p->id, (uint32_t)p->pid));
    send_exit_if_done(c, p);
}

/* The peer is gone: processes keep running, detached, for a later ATTACH
 * (serial), or are killed with their connection (sockets). */
static void detach_all(struct conn *c, int kill_them)
{
    for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++) {
        struct proc *p = &c->procs[i];
        if (!p->used)
            continue;
        p->sub = 0;
        p->credit = 0;
        if (kill_them && !p->exited)
            kill(-p->pid, SIGKILL);
    }
}

/* ---- workers ---- */

static void run_worker(const struct smk_msg *m, int cancel, struct smk_buf *b, int test_mode)
{
    char why[SMK_MAX_PATH + 512] = "";
    int r = 0;
    uint32_t id = m->hdr.id;
    switch (m->hdr.type) {
    case SMK_EXEC: {
        struct smka_exec_result res;
        r = smka_exec(m, cancel, 0, &res, why, sizeof(why));
        if (r == 0) {
            r = smk_encode_exec_reply(b, id, res.status, res.code, res.flags, res.out, res.out_len,
                                      res.err, res.err_len);
            smka_exec_result_free(&res);
            if (r < 0)
                snprintf(why, sizeof(why), "encoding the reply: %s", strerror(-r));
        }
        break;
    }
    case SMK_WRITE_FILE: {
        char path[SMK_MAX_PATH + 1];
        memcpy(path, m->u.write_file.path.ptr, m->u.write_file.path.len);
        path[m->u.write_file.path.len] = '\0';
        r = smka_write_file(path, m->u.write_file.mode, m->u.write_file.data.ptr,
                            m->u.write_file.data.len, why, sizeof(why));
        if (r == 0)
            r = smk_encode_empty(b, SMK_WRITE_FILE_REPLY, id);
        break;
    }
    case SMK_READ_FILE: {
        char path[SMK_MAX_PATH + 1];
        memcpy(path, m->u.read_file.path.ptr, m->u.read_file.path.len);
        path[m->u.read_file.path.len] = '\0';
        uint8_t *data = NULL;
        size_t len = 0;
        int truncated = 0;
        r = smka_read_file2(path, m->u.read_file.flags, &data, &len, &truncated, why, sizeof(why));
        if (r == 0)
            r = smk_encode_read_reply(b, id, truncated ? SMK_READ_TRUNCATED : 0, data, len);
        free(data);
        break;
    }
    default:
        r = smka_control(m, test_mode, why, sizeof(why));
        if (r == 0)
            r = smk_encode_empty(b, SMK_CONTROL_REPLY, id);
        break;
    }
    if (r < 0) {
        b->len = 0;
        if (!why[0])
            snprintf(why, sizeof(why), "%s", strerror(-r));
        smk_encode_error(b, id, (uint32_t)-r, why);
    }
}

static void start_worker(struct conn *c, const struct smk_msg *m)
{
    struct worker *w = NULL;
    for (int i = 0; i < MAX_WORKERS && !w; i++)
        if (!c->workers[i].pid)
            w = &c->workers[i];
    if (!w) {
        reply_error(c, m->hdr.id, m->hdr.version, SMK_EAGAIN,
                    "too many requests in progress: at most %d", MAX_WORKERS);
        return;
    }
    int res[2], cancel[2];
    if (pipe2(res, O_CLOEXEC) < 0) {
        int e = errno;
        reply_error(c, m->hdr.id, m->hdr.version, e, "pipe: %s", strerror(e));
        return;
    }
    if (pipe2(cancel, O_CLOEXEC) < 0) {
        int e = errno;
        close(res[0]);
        close(res[1]);
        reply_error(c, m->hdr.id, m->hdr.version, e, "pipe: %s", strerror(e));
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* Hold nothing of the connection's: a process's stdin must see its
         * end of file when the connection closes it, not when this ends. */
        close(res[0]);
        close(cancel[1]);
        close(c->fd);
        close(c->sfd);
        for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++) {
            if (!c->procs[i].used)
                continue;
            close_fd(&c->procs[i].in);
            close_fd(&c->procs[i].out);
            close_fd(&c->procs[i].err);
        }
        for (int i = 0; i < MAX_WORKERS; i++) {
            close_fd(&c->workers[i].fd);
            close_fd(&c->workers[i].cancel);
        }
        struct smk_buf b = {.version = m->hdr.version};
        run_worker(m, cancel[0], &b, c->ctx->test_mode);
        int r = smka_write_all(res[1], b.data, b.len, -1);
        _exit(r < 0 ? 1 : 0);
    }
    int e = errno;
    close(res[1]);
    close(cancel[0]);
    if (pid < 0) {
        close(res[0]);
        close(cancel[1]);
        reply_error(c, m->hdr.id, m->hdr.version, e, "fork: %s", strerror(e));
        return;
    }
    fcntl(res[0], F_SETFL, O_NONBLOCK);
    *w = (struct worker){
        .pid = pid, .fd = res[0], .cancel = cancel[1], .id = m->hdr.id, .version = m->hdr.version};
}

static void worker_free(struct worker *w)
{
    close_fd(&w->fd);
    close_fd(&w->cancel);
    smk_buf_free(&w->got);
    memset(w, 0, sizeof(*w));
    w->fd = w->cancel = -1;
}

static void worker_finish(struct conn *c, struct worker *w)
{
    struct smk_msg m;
    if (w->discard)
        ;
    else if (w->got.len && smk_decode(w->got.data, w->got.len, &m) == (int)w->got.len) {
        queue(c, &w->got);
    } else {
        reply_error(c, w->id, w->version, EIO, "the worker for this request failed");
    }
    worker_free(w);
}

static void worker_read(struct conn *c, struct worker *w)
{
    for (int i = 0; i < 64; i++) {
        if (w->got.cap - w->got.len < 65536) {
            size_t cap = w->got.cap ? w->got.cap * 2 : 65536;
            if (cap > SMK_HEADER_SIZE + SMK_MAX_PAYLOAD + 65536)
                cap = SMK_HEADER_SIZE + SMK_MAX_PAYLOAD + 65536;
            uint8_t *p = cap > w->got.cap ? realloc(w->got.data, cap) : NULL;
            if (!p) {
                kill(w->pid, SIGKILL);
                close_fd(&w->fd);
                return;
            }
            w->got.data = p;
            w->got.cap = cap;
        }
        ssize_t n = read(w->fd, w->got.data + w->got.len, w->got.cap - w->got.len);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (n <= 0) {
            close_fd(&w->fd);
            if (w->reaped)
                worker_finish(c, w);
            return;
        }
        w->got.len += (size_t)n;
    }
}

static void reap(struct conn *c)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_WORKERS; i++) {
            struct worker *w = &c->workers[i];
            if (w->pid == pid) {
                w->reaped = 1;
                if (w->fd < 0)
                    worker_finish(c, w);
            }
        }
        for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++) {
            struct proc *p = &c->procs[i];
            if (p->used && p->pid == pid && !p->exited) {
                p->exited = 1;
                p->status = status;
                p->exited_at = smka_now_ms();
                if (p->stdin_closing || p->stdin_head) {
                    /* Nobody will read what is queued: answer it. */
                    while (p->stdin_head) {
                        struct chunk *k = p->stdin_head;
                        p->stdin_head = k->next;
                        stdin_done(c, k);
                        free(k);
                    }
                    p->stdin_tail = NULL;
                    p->stdin_queued = 0;
                }
                send_exit_if_done(c, p);
            }
        }
    }
}

/* ---- requests ---- */

static void handle_hello(struct conn *c, const struct smk_msg *m)
{
    uint32_t v =
        m->u.hello.max_version < SMK_PROTO_VERSION ? m->u.hello.max_version : SMK_PROTO_VERSION;
    struct smk_buf b = {.version = m->hdr.version};
    reply(c, m, &b,
          smk_encode_hello_reply(&b, m->hdr.id, v, SMKA_AGENT_MAX_PROCS, SMK_DEFAULT_WINDOW,
                                 SMKA_AGENT_VERSION));
}

static void handle_ping(struct conn *c, const struct smk_msg *m)
{
    struct smk_buf b = {.version = m->hdr.version};
    reply(c, m, &b,
          smk_encode_ping_reply(&b, m->hdr.id, smka_boottime_ns(), c->ctx->ready_ns,
                                SMKA_AGENT_VERSION));
}

static void flush_blocking(struct conn *c)
{
    if (queued(c))
        smka_write_all_hup(c->fd, c->out.data + c->out_off, queued(c), SEND_MS,
                           c->serial ? SERIAL_HUP_GRACE_MS : 0);
    c->out_off = c->out.len;
}

static void handle_shutdown(struct conn *c, const struct smk_msg *m)
{
    uint32_t action = m->u.shutdown.action;
    if (!c->ctx->test_mode && geteuid() != 0) {
        reply_error(c, m->hdr.id, m->hdr.version, EPERM, "shutdown: not running as root");
        return;
    }
    reply_empty(c, m, SMK_SHUTDOWN_REPLY);
    flush_blocking(c);
    /* Waits for the client to hang up after it has its reply, so the reply
     * is not lost in a virtqueue when the machine goes down. */
    int64_t deadline = smka_now_ms() + LINGER_MS;
    uint8_t buf[256];
    for (;;) {
        int64_t left = deadline - smka_now_ms();
        if (left <= 0 || smka_read_some(c->fd, buf, sizeof(buf), (int)left) <= 0)
            break;
    }
    const char *what = action == SMK_SHUTDOWN_POWEROFF ? "poweroff" : "reboot";
    if (c->ctx->test_mode) {
        smka_log("%s requested; test mode, so only the agent stops", what);
        detach_all(c, 1);
        kill(getppid(), SIGTERM);
        _exit(0);
    }
    smka_log("%s requested", what);
    smka_power(action);
}

static void handle(struct conn *c, const struct smk_msg *m)
{
    c->last_request = smka_now_ms();
    switch (m->hdr.type) {
    case SMK_PING:
        handle_ping(c, m);
        break;
    case SMK_HELLO:
        handle_hello(c, m);
        break;
    case SMK_EXEC:
    case SMK_WRITE_FILE:
    case SMK_READ_FILE:
    case SMK_SET_TIME:
    case SMK_ENTROPY:
    case SMK_LINK:
    case SMK_ADDR:
    case SMK_ROUTE:
    case SMK_DNS:
    case SMK_HOSTNAME:
    case SMK_HOSTS:
        start_worker(c, m);
        break;
    case SMK_SHUTDOWN:
        handle_shutdown(c, m);
        break;
    case SMK_SPAWN:
        handle_spawn(c, m);
        break;
    case SMK_STDIN:
        handle_stdin(c, m);
        break;
    case SMK_ACK:
        handle_ack(c, m);
        break;
    case SMK_SIGNAL:
        handle_signal(c, m);
        break;
    case SMK_RESIZE:
        handle_resize(c, m);
        break;
    case SMK_ATTACH:
        handle_attach(c, m);
        break;
    default:
        reply_error(c, m->hdr.id, m->hdr.version, SMK_ENOSYS, "%s (0x%04x) is not a request",
                    smk_type_name(m->hdr.type), m->hdr.type);
        break;
    }
}

/* The request id of a partly received frame, for the error reply. */
static uint32_t pending_id(const struct smka_stream *st)
{
    struct smk_msg m;
    smk_decode(st->frame ? st->frame : st->head, st->frame ? SMK_HEADER_SIZE : st->have, &m);
    return m.hdr.id;
}

static void got(struct conn *c, int k, struct smk_msg *m)
{
    if (k > 0) {
        handle(c, m);
    } else if (k < 0) {
        uint16_t v = m->hdr.version >= SMK_PROTO_MIN_VERSION && m->hdr.version <= SMK_PROTO_VERSION
                         ? m->hdr.version
                         : SMK_PROTO_MIN_VERSION;
        reply_error(c, m->hdr.id, v, -k, "bad frame: %s", m->why);
        if (m->frame_len == 0 && !c->serial)
            c->over = 1;
    }
}

/* The host side of the serial port went away (for longer than the grace):
 * what was meant for it is dropped, and the next client starts clean. */
static void serial_host_gone(struct conn *c)
{
    if (smka_stream_partial(&c->st))
        smka_log("host disconnected in the middle of a frame; dropped it");
    smka_stream_reset(&c->st);
    if (queued(c) || c->peer_gone)
        smka_log("host disconnected; %zu bytes of replies dropped", queued(c));
    c->out_off = c->out.len;
    c->send_since = -1;
    c->peer_gone = 0;
    detach_all(c, 0);
    /* A command of EXEC is cancelled with its client (its process group killed), as on a
     * socket; other requests finish, unanswered. */
    for (int i = 0; i < MAX_WORKERS; i++) {
        if (c->workers[i].pid) {
            c->workers[i].discard = 1;
            close_fd(&c->workers[i].cancel);
        }
    }
}

static void receive(struct conn *c)
{
    for (int i = 0; i < 16 && !c->over; i++) {
        size_t n;
        uint8_t *p = smka_stream_want(&c->st, &n);
        if (!p) {
            c->over = 1;
            return;
        }
        ssize_t r = read(c->fd, p, n);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (r < 0) {
            smka_log("reading a request: %s", strerror(errno));
            c->over = !c->serial;
            if (c->serial)
                c->paused_until = smka_now_ms() + RECONNECT_POLL_MS;
            return;
        }
        if (r == 0) {
            if (!c->serial) {
                c->over = 1;
                return;
            }
            /* A hang-up is believed once it has lasted (smka_hup_lasted). */
            int64_t now = smka_now_ms();
            if (smka_hup_lasted(&c->hup_since, now, SERIAL_HUP_GRACE_MS))
                serial_host_gone(c);
            c->paused_until =
                now + (smka_stream_partial(&c->st) ? SERIAL_HUP_RECHECK_MS : RECONNECT_POLL_MS);
            return;
        }
        c->hup_since = -1;
        c->last_rx = smka_now_ms();
        c->salvage_at = c->last_rx + SALVAGE_QUIET_MS;
        struct smk_msg m;
        int k = smka_stream_advance(&c->st, (size_t)r, &m);
        got(c, k, &m);
        while (!c->over && smka_stream_backlog(&c->st)) {
            k = smka_stream_replay(&c->st, &m);
            got(c, k, &m);
        }
    }
}

/* Time-driven parts of receiving: stalled frames, idle connections. */
static void timers(struct conn *c)
{
    int64_t now = smka_now_ms();
    if (smka_stream_partial(&c->st)) {
        int64_t quiet = now - c->last_rx;
        if (c->serial && now >= c->salvage_at && quiet < STALL_MS) {
            uint32_t id = pending_id(&c->st);
            c->salvage_at = now + SALVAGE_QUIET_MS;
            if (smka_stream_salvage(&c->st)) {
                smka_log("dropping a frame that stopped arriving: a newer request follows it");
                reply_error(c, id, SMK_PROTO_MIN_VERSION, SMK_ETIMEDOUT,
                            "incomplete frame: nothing received for %lld ms, then a new request",
                            (long long)quiet);
                struct smk_msg m;
                while (!c->over && smka_stream_backlog(&c->st)) {
                    int k = smka_stream_replay(&c->st, &m);
                    got(c, k, &m);
                }
            }
        } else if (quiet >= STALL_MS) {
            smka_log("dropping a frame that stopped arriving");
            reply_error(c, pending_id(&c->st), SMK_PROTO_MIN_VERSION, SMK_ETIMEDOUT,
                        "incomplete frame: nothing received for %d s", STALL_MS / 1000);
            if (!c->serial) {
                c->over = 1;
                return;
            }
            /* The next client's request may be in the dropped bytes with
             * more of it to come: look for it from the first magic on. */
            smka_stream_rescan(&c->st);
            struct smk_msg m;
            while (!c->over && smka_stream_backlog(&c->st)) {
                int k = smka_stream_replay(&c->st, &m);
                got(c, k, &m);
            }
            c->last_rx = now;
        }
    }
    if (!c->serial && !smka_stream_partial(&c->st) && now - c->last_request >= IDLE_MS) {
        int busy = 0;
        for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++)
            busy |= c->procs[i].used;
        for (int i = 0; i < MAX_WORKERS; i++)
            busy |= c->workers[i].pid != 0;
        if (!busy)
            c->over = 1;
    }
    if (queued(c) && c->send_since >= 0 && now - c->send_since >= SEND_MS) {
        smka_log("the peer took no reply for %d s", SEND_MS / 1000);
        if (c->serial)
            serial_host_gone(c);
        else
            c->over = 1;
    }
    for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++) {
        struct proc *p = &c->procs[i];
        if (p->used && p->exited && !p->sub && now - p->exited_at >= DETACHED_EXIT_MS)
            proc_free(p);
    }
}

static void send_some(struct conn *c)
{
    while (queued(c)) {
        ssize_t w = write(c->fd, c->out.data + c->out_off, queued(c));
        if (w < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        if (w <= 0) {
            if (c->serial) {
                /* Not connected: the hang-up path decides. */
                return;
            }
            smka_log("sending reply: %s", strerror(errno));
            c->over = 1;
            return;
        }
        c->out_off += (size_t)w;
        c->send_since = smka_now_ms();
    }
    c->send_since = -1;
    smk_buf_free(&c->out);
    c->out_off = 0;
}

enum { MAXFD = 2 + MAX_WORKERS + 3 * SMKA_AGENT_MAX_PROCS };

static void loop(struct conn *c)
{
    while (!c->over) {
        struct pollfd pf[MAXFD];
        void *who[MAXFD];
        int kind[MAXFD];
        int n = 0;
        int64_t now = smka_now_ms();
        short ev = 0;
        if (queued(c) < OUT_HIGH)
            ev |= POLLIN;
        if (queued(c))
            ev |= POLLOUT;
        int conn_i = -1;
        if (now >= c->paused_until) {
            conn_i = n;
            pf[n] = (struct pollfd){.fd = c->fd, .events = ev};
            kind[n] = 0;
            who[n++] = NULL;
        }
        pf[n] = (struct pollfd){.fd = c->sfd, .events = POLLIN};
        kind[n] = 1;
        who[n++] = NULL;
        /* Replies of workers wait in their pipes while the peer is behind. */
        for (int i = 0; i < MAX_WORKERS && queued(c) < OUT_HIGH; i++) {
            if (c->workers[i].pid && c->workers[i].fd >= 0) {
                pf[n] = (struct pollfd){.fd = c->workers[i].fd, .events = POLLIN};
                kind[n] = 2;
                who[n++] = &c->workers[i];
            }
        }
        int room = queued(c) < OUT_HIGH / 2;
        for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++) {
            struct proc *p = &c->procs[i];
            if (!p->used)
                continue;
            int want_out = p->sub && p->credit > 0 && room;
            if (p->out >= 0 && want_out) {
                pf[n] = (struct pollfd){.fd = p->out, .events = POLLIN};
                kind[n] = 3;
                who[n++] = p;
            }
            if (p->err >= 0 && want_out) {
                pf[n] = (struct pollfd){.fd = p->err, .events = POLLIN};
                kind[n] = 4;
                who[n++] = p;
            }
            if (p->in >= 0 && p->stdin_head) {
                pf[n] = (struct pollfd){.fd = p->in, .events = POLLOUT};
                kind[n] = 5;
                who[n++] = p;
            }
        }
        int wait = 60000;
        if (smka_stream_partial(&c->st))
            wait = c->serial ? SALVAGE_QUIET_MS / 4 : 1000;
        if (conn_i < 0) {
            int64_t left = c->paused_until - now;
            if (left < wait)
                wait = left < 0 ? 0 : (int)left;
        }
        if (queued(c) && wait > 1000)
            wait = 1000;
        int r = poll(pf, (nfds_t)n, wait);
        if (r < 0 && errno != EINTR) {
            smka_log("poll: %s", strerror(errno));
            smka_sleep_ms(100);
            continue;
        }
        for (int i = 0; r > 0 && i < n && !c->over; i++) {
            short re = pf[i].revents;
            if (!re)
                continue;
            switch (kind[i]) {
            case 0:
                if (re & POLLOUT)
                    send_some(c);
                if (re & (POLLIN | POLLHUP | POLLERR))
                    receive(c);
                break;
            case 1: {
                struct signalfd_siginfo si;
                while (read(c->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                    ;
                reap(c);
                break;
            }
            case 2:
                worker_read(c, who[i]);
                break;
            case 3: {
                struct proc *p = who[i];
                if (p->used) {
                    proc_read(c, p, &p->out, 1);
                    send_exit_if_done(c, p);
                }
                break;
            }
            case 4: {
                struct proc *p = who[i];
                if (p->used) {
                    proc_read(c, p, &p->err, 2);
                    send_exit_if_done(c, p);
                }
                break;
            }
            case 5: {
                struct proc *p = who[i];
                if (p->used)
                    proc_write(c, p);
                break;
            }
            }
        }
        /* A reap may have raced the last output: a process whose outputs
         * closed after it exited gets its exit event here. */
        reap(c);
        if (queued(c))
            send_some(c);
        timers(c);
    }
}

static void serve(int fd, int serial, const struct smka_conn_ctx *ctx)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        smka_log("serving a connection: out of memory");
        close(fd);
        return;
    }
    c->fd = fd;
    c->serial = serial;
    c->ctx = ctx;
    c->hup_since = -1;
    c->send_since = -1;
    c->last_request = smka_now_ms();
    for (int i = 0; i < MAX_WORKERS; i++)
        c->workers[i].fd = c->workers[i].cancel = -1;
    for (int i = 0; i < SMKA_AGENT_MAX_PROCS; i++)
        c->procs[i].in = c->procs[i].out = c->procs[i].err = -1;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    c->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (c->sfd < 0) {
        smka_log("signalfd: %s", strerror(errno));
        close(fd);
        free(c);
        return;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    smka_stream_init(&c->st, serial);
    loop(c);
    /* A last error reply (garbage, a stalled frame) is worth a short try. */
    if (queued(c) && !c->serial)
        smka_write_all(fd, c->out.data + c->out_off, queued(c), 2000);
    /* The connection is over: its processes and commands go with it. */
    detach_all(c, 1);
    for (int i = 0; i < MAX_WORKERS; i++) {
        struct worker *w = &c->workers[i];
        if (w->pid) {
            close_fd(&w->cancel); /* an EXEC kills its process group */
            close_fd(&w->fd);
        }
    }
    smka_stream_free(&c->st);
    smk_buf_free(&c->out);
    close(fd);
    close(c->sfd);
    free(c);
}

void smka_serve_stream(int fd, const struct smka_conn_ctx *ctx)
{
    serve(fd, 0, ctx);
}

void smka_serve_serial(int fd, const struct smka_conn_ctx *ctx)
{
    serve(fd, 1, ctx);
}
