/* GENERATED from smkernel-x86_64/src/common/agent-client.c by sync-shared sha256:344a27a6e355 */
/*
 * The host-side client of supermachine-agent (smkernel-agent.h): connection set-up, version
 * negotiation, requests matched to replies by id, process events queued per handle with
 * credit given back as the caller takes them. Frames are encoded and decoded by
 * agent-proto.c, the codec the agent itself uses. The guest agent's client mode is built
 * from this file too (assets/agent/build).
 */
/* Linux gets vsock, getrandom and atomic socket flags; elsewhere (and in the portable build,
 * which compiles this file as macOS does) the POSIX calls. */
#if defined(__linux__) && !defined(SMK_PORTABLE)
#define _GNU_SOURCE
#define AGENT_LINUX 1
#else
#define AGENT_LINUX 0
#endif
#include "smkernel-agent.h"
#include "agent-proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#if AGENT_LINUX
#include <linux/vm_sockets.h>
#include <sys/random.h>
#endif

#ifndef MSG_NOSIGNAL /* macOS: SO_NOSIGPIPE on the socket instead */
#define MSG_NOSIGNAL 0
#endif

#define HELLO_RESEND_MS 2000
#define MAX_STREAMS 256

struct qframe {
    struct qframe *next;
    size_t len;
    uint8_t data[];
};

struct smk_agent {
    int fd;
    int is_socket;
    uint16_t version;
    uint32_t next_id;
    uint8_t *rbuf;
    size_t rlen, rcap;
    struct qframe *head, *tail;    /* events not yet taken */
    struct qframe *held;           /* the event handed out last */
    uint32_t streams[MAX_STREAMS]; /* request ids whose events are wanted */
    uint32_t nstreams;
    char err[SMK_MAX_TEXT + 1];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

/* Milliseconds left for poll(), -1 for none. */
static int left_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    return left <= 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
}

static uint32_t fresh_id(struct smk_agent *a)
{
    if (++a->next_id == 0)
        ++a->next_id;
    return a->next_id;
}

static int send_all(struct smk_agent *a, const uint8_t *p, size_t len, int64_t deadline)
{
    while (len) {
        ssize_t w =
            a->is_socket ? send(a->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT) : write(a->fd, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        struct pollfd pf = {.fd = a->fd, .events = POLLOUT};
        int r = poll(&pf, 1, left_ms(deadline));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
    }
    return 0;
}

static int send_buf(struct smk_agent *a, struct smk_buf *b, int64_t deadline)
{
    int r = send_all(a, b->data, b->len, deadline);
    smk_buf_free(b);
    return r;
}

/* Reads what is there, waiting until deadline for something. */
static int fill(struct smk_agent *a, size_t need, int64_t deadline)
{
    if (need > a->rcap) {
        size_t cap = a->rcap ? a->rcap : 65536;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(a->rbuf, cap);
        if (!p)
            return -ENOMEM;
        a->rbuf = p;
        a->rcap = cap;
    }
    if (a->rcap - a->rlen < 4096) {
        uint8_t *p = realloc(a->rbuf, a->rcap * 2);
        if (!p)
            return -ENOMEM;
        a->rbuf = p;
        a->rcap *= 2;
    }
    for (;;) {
        ssize_t n = read(a->fd, a->rbuf + a->rlen, a->rcap - a->rlen);
        if (n > 0) {
            a->rlen += (size_t)n;
            return 0;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        struct pollfd pf = {.fd = a->fd, .events = POLLIN};
        int r = poll(&pf, 1, left_ms(deadline));
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r == 0)
            return -ETIMEDOUT;
    }
}

static void consume(struct smk_agent *a, size_t n)
{
    memmove(a->rbuf, a->rbuf + n, a->rlen - n);
    a->rlen -= n;
}

/*
 * The next whole, valid frame, copied out. Garbage is skipped up to the next magic and
 * frames this side cannot decode are skipped whole (a virtio-serial line may hold bytes
 * meant for an earlier client).
 */
static int next_frame(struct smk_agent *a, int64_t deadline, struct qframe **out)
{
    for (;;) {
        struct smk_msg m;
        int k = smk_decode(a->rbuf, a->rlen, &m);
        if (k > 0) {
            struct qframe *f = malloc(sizeof(*f) + (size_t)k);
            if (!f)
                return -ENOMEM;
            f->next = NULL;
            f->len = (size_t)k;
            memcpy(f->data, a->rbuf, (size_t)k);
            consume(a, (size_t)k);
            *out = f;
            return 0;
        }
        if (k < 0 && m.frame_len == 0) {
            consume(a, 1 + smk_find_magic(a->rbuf + 1, a->rlen - 1));
            continue;
        }
        if (k < 0 && a->rlen >= m.frame_len) {
            consume(a, m.frame_len);
            continue;
        }
        size_t need = m.frame_len ? m.frame_len : SMK_HEADER_SIZE;
        int r = fill(a, need, deadline);
        if (r < 0)
            return r;
    }
}

static int is_stream(const struct smk_agent *a, uint32_t id)
{
    for (uint32_t i = 0; i < a->nstreams; i++)
        if (a->streams[i] == id)
            return 1;
    return 0;
}

static void stream_drop(struct smk_agent *a, uint32_t id)
{
    for (uint32_t i = 0; i < a->nstreams; i++) {
        if (a->streams[i] == id) {
            a->streams[i] = a->streams[--a->nstreams];
            return;
        }
    }
}

static void decode_frame(const struct qframe *f, struct smk_msg *m)
{
    smk_decode(f->data, f->len, m);
}

/* Keeps an event of a wanted stream for later; drops anything else. */
static void stash(struct smk_agent *a, struct qframe *f)
{
    struct smk_msg m;
    decode_frame(f, &m);
    if ((m.hdr.type == SMK_OUTPUT || m.hdr.type == SMK_EXIT) && is_stream(a, m.hdr.id)) {
        if (a->tail)
            a->tail->next = f;
        else
            a->head = f;
        a->tail = f;
        return;
    }
    if (m.hdr.type == SMK_ERROR && m.hdr.id == 0)
        snprintf(a->err, sizeof(a->err), "%.*s", (int)m.u.error.message.len,
                 (const char *)m.u.error.message.ptr);
    free(f);
}

/* Waits for the reply to id; events of wanted streams are queued meanwhile. */
static int wait_reply(struct smk_agent *a, uint32_t id, int64_t deadline, struct qframe **out)
{
    for (;;) {
        struct qframe *f;
        int r = next_frame(a, deadline, &f);
        if (r < 0)
            return r;
        struct smk_msg m;
        decode_frame(f, &m);
        if (m.hdr.id == id && m.hdr.type != SMK_OUTPUT && m.hdr.type != SMK_EXIT) {
            *out = f;
            return 0;
        }
        stash(a, f);
    }
}

/* Sends the frame in b (its id is id) and waits for a reply of type expect. On success *f
 * holds the reply and m is decoded from it; the caller frees *f. */
static int request(struct smk_agent *a, struct smk_buf *b, uint32_t id, uint16_t expect,
                   int timeout_ms, struct qframe **f, struct smk_msg *m)
{
    a->err[0] = '\0';
    int64_t deadline = deadline_of(timeout_ms);
    int r = send_buf(a, b, deadline);
    if (r < 0)
        return r;
    r = wait_reply(a, id, deadline, f);
    if (r < 0)
        return r;
    decode_frame(*f, m);
    if (m->hdr.type == SMK_ERROR) {
        snprintf(a->err, sizeof(a->err), "%.*s", (int)m->u.error.message.len,
                 (const char *)m->u.error.message.ptr);
        int code = (int)m->u.error.code;
        free(*f);
        *f = NULL;
        return code > 0 && code < 4096 ? -code : -EPROTO;
    }
    if (m->hdr.type != expect) {
        free(*f);
        *f = NULL;
        return -EPROTO;
    }
    return 0;
}

/* A request whose reply has no fields. enc() returned r for b. */
static int simple(struct smk_agent *a, struct smk_buf *b, int enc, uint32_t id, uint16_t expect,
                  int timeout_ms)
{
    if (enc < 0) {
        smk_buf_free(b);
        return enc;
    }
    struct qframe *f = NULL;
    struct smk_msg m;
    int r = request(a, b, id, expect, timeout_ms, &f, &m);
    free(f);
    return r;
}

static int need_v2(const struct smk_agent *a)
{
    return a->version >= 2 ? 0 : -ENOSYS;
}

/* ---- connecting ---- */

static int hello(struct smk_agent *a, int timeout_ms)
{
    int64_t deadline = deadline_of(timeout_ms);
    uint32_t id = fresh_id(a);
    for (;;) {
        struct smk_buf b = {.version = SMK_PROTO_VERSION};
        int r = smk_encode_hello(&b, id, SMK_PROTO_VERSION);
        if (r < 0)
            return r;
        r = send_buf(a, &b, deadline);
        if (r < 0)
            return r;
        int64_t resend = now_ms() + HELLO_RESEND_MS;
        int64_t until = deadline >= 0 && deadline < resend ? deadline : resend;
        struct qframe *f;
        r = wait_reply(a, id, until, &f);
        if (r == -ETIMEDOUT && (deadline < 0 || now_ms() < deadline))
            continue; /* the agent may not have been up: ask again, same id */
        if (r < 0)
            return r;
        struct smk_msg m;
        decode_frame(f, &m);
        if (m.hdr.type == SMK_HELLO_REPLY) {
            uint32_t v = m.u.hello_reply.version;
            a->version = (uint16_t)(v >= 2 ? 2 : 1);
        } else if (m.hdr.type == SMK_ERROR &&
                   (m.u.error.code == SMK_EPROTONOSUPPORT || m.u.error.code == SMK_ENOSYS)) {
            a->version = 1; /* an agent of protocol version 1 */
        } else {
            free(f);
            return -EPROTO;
        }
        free(f);
        return 0;
    }
}

int smk_agent_from_fd(int fd, int timeout_ms, struct smk_agent **out)
{
    if (!out || fd < 0) {
        if (fd >= 0)
            close(fd);
        return -EINVAL;
    }
    *out = NULL;
    struct smk_agent *a = calloc(1, sizeof(*a));
    if (!a) {
        close(fd);
        return -ENOMEM;
    }
    a->fd = fd;
    struct stat st;
    a->is_socket = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
#if defined(SO_NOSIGPIPE)
    if (a->is_socket)
        setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &(int){1}, sizeof(int));
#endif
    /* Request ids start at a random point, so that replies meant for an earlier client of a
     * virtio-serial line are not taken for this one's. */
    uint32_t seed = 0;
#if AGENT_LINUX
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = (uint32_t)now_ms() ^ ((uint32_t)getpid() << 16);
#else
    seed = arc4random();
#endif
    a->next_id = seed & 0x7fffffffu;
    a->version = SMK_PROTO_VERSION;
    int r = hello(a, timeout_ms);
    if (r < 0) {
        smk_agent_close(a);
        return r;
    }
    *out = a;
    return 0;
}

static int connect_fd(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
    if (connect(fd, sa, len) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EAGAIN)
        return -errno;
    struct pollfd pf = {.fd = fd, .events = POLLOUT};
    int r = poll(&pf, 1, timeout_ms);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    int err = 0;
    socklen_t el = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    return err ? -err : 0;
}

/* A close-on-exec, non-blocking stream socket of family, or -errno. */
static int stream_socket(int family)
{
#if AGENT_LINUX
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    return fd < 0 ? -errno : fd;
#else
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
#endif
}

static int unix_socket(const char *path, int timeout_ms)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    if (!path || !*path)
        return -EINVAL;
    if (strlen(path) >= sizeof(un.sun_path))
        return -ENAMETOOLONG;
    strcpy(un.sun_path, path);
    int fd = stream_socket(AF_UNIX);
    if (fd < 0)
        return fd;
    int r = connect_fd(fd, (struct sockaddr *)&un, sizeof(un), timeout_ms);
    if (r < 0) {
        close(fd);
        return r;
    }
    return fd;
}

int smk_agent_connect_unix(const char *path, int timeout_ms, struct smk_agent **out)
{
    if (!out)
        return -EINVAL;
    int64_t deadline = deadline_of(timeout_ms);
    int fd = unix_socket(path, timeout_ms);
    if (fd < 0)
        return fd;
    return smk_agent_from_fd(fd, left_ms(deadline), out);
}

int smk_agent_connect_vsock(uint32_t cid, uint32_t port, int timeout_ms, struct smk_agent **out)
{
    if (!out)
        return -EINVAL;
#if AGENT_LINUX
    int64_t deadline = deadline_of(timeout_ms);
    struct sockaddr_vm vm = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    int fd = stream_socket(AF_VSOCK);
    if (fd < 0)
        return fd;
    int r = connect_fd(fd, (struct sockaddr *)&vm, sizeof(vm), timeout_ms);
    if (r < 0) {
        close(fd);
        return r;
    }
    return smk_agent_from_fd(fd, left_ms(deadline), out);
#else
    (void)cid;
    (void)port;
    (void)timeout_ms;
    return -EAFNOSUPPORT;
#endif
}

int smk_agent_connect_hvsock(const char *path, uint32_t port, int timeout_ms,
                             struct smk_agent **out)
{
    if (!out)
        return -EINVAL;
    int64_t deadline = deadline_of(timeout_ms);
    int fd = unix_socket(path, timeout_ms);
    if (fd < 0)
        return fd;
    char line[64];
    int n = snprintf(line, sizeof(line), "CONNECT %u\n", port);
    struct smk_agent tmp = {.fd = fd, .is_socket = 1};
    int r = send_all(&tmp, (const uint8_t *)line, (size_t)n, deadline);
    /* The answer, byte by byte so that nothing after its newline is taken. */
    size_t got = 0;
    while (r == 0) {
        char ch;
        ssize_t k = read(fd, &ch, 1);
        if (k == 1) {
            if (ch == '\n')
                break;
            if (got + 1 >= sizeof(line)) {
                r = -EPROTO;
                break;
            }
            line[got++] = ch;
            continue;
        }
        if (k == 0) {
            r = -ECONNREFUSED; /* nothing listens on that port in the guest */
            break;
        }
        if (errno != EAGAIN && errno != EINTR) {
            r = -errno;
            break;
        }
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int p = poll(&pf, 1, left_ms(deadline));
        if (p == 0)
            r = -ETIMEDOUT;
        else if (p < 0 && errno != EINTR)
            r = -errno;
    }
    if (r == 0) {
        line[got] = '\0';
        if (strncmp(line, "OK ", 3) != 0)
            r = -ECONNREFUSED;
    }
    if (r < 0) {
        close(fd);
        return r;
    }
    return smk_agent_from_fd(fd, left_ms(deadline), out);
}

static int parse_u32(const char *s, size_t n, uint32_t *v)
{
    if (n == 0 || n > 10)
        return -EINVAL;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (x > 0xffffffffu)
        return -EINVAL;
    *v = (uint32_t)x;
    return 0;
}

int smk_agent_connect(const char *addr, int timeout_ms, struct smk_agent **out)
{
    if (!addr || !out)
        return -EINVAL;
    if (strncmp(addr, "unix:", 5) == 0)
        return smk_agent_connect_unix(addr + 5, timeout_ms, out);
    if (strncmp(addr, "vsock:", 6) == 0) {
        const char *cid = addr + 6, *colon = strchr(cid, ':');
        uint32_t c, p;
        if (!colon || parse_u32(cid, (size_t)(colon - cid), &c) < 0 ||
            parse_u32(colon + 1, strlen(colon + 1), &p) < 0)
            return -EINVAL;
        return smk_agent_connect_vsock(c, p, timeout_ms, out);
    }
    if (strncmp(addr, "hvsock:", 7) == 0) {
        const char *path = addr + 7, *colon = strrchr(path, ':');
        uint32_t p;
        char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
        if (!colon || colon == path || parse_u32(colon + 1, strlen(colon + 1), &p) < 0)
            return -EINVAL;
        if ((size_t)(colon - path) >= sizeof(buf))
            return -ENAMETOOLONG;
        memcpy(buf, path, (size_t)(colon - path));
        buf[colon - path] = '\0';
        return smk_agent_connect_hvsock(buf, p, timeout_ms, out);
    }
    return -EINVAL;
}

void smk_agent_close(struct smk_agent *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    while (a->head) {
        struct qframe *f = a->head;
        a->head = f->next;
        free(f);
    }
    free(a->held);
    free(a->rbuf);
    free(a);
}

int smk_agent_fd(const struct smk_agent *a)
{
    return a ? a->fd : -EINVAL;
}

int smk_agent_proto(const struct smk_agent *a)
{
    return a ? a->version : -EINVAL;
}

const char *smk_agent_error(const struct smk_agent *a)
{
    return a ? a->err : "";
}

/* ---- requests ---- */

int smk_agent_ping(struct smk_agent *a, struct smk_agent_info *info, int timeout_ms)
{
    if (!a)
        return -EINVAL;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    int r = smk_encode_empty(&b, SMK_PING, id);
    if (r < 0)
        return r;
    struct qframe *f = NULL;
    struct smk_msg m;
    r = request(a, &b, id, SMK_PING_REPLY, timeout_ms, &f, &m);
    if (r < 0)
        return r;
    if (info) {
        info->proto = m.u.ping_reply.proto;
        info->uptime_ns = m.u.ping_reply.uptime_ns;
        info->ready_ns = m.u.ping_reply.ready_ns;
        snprintf(info->version, sizeof(info->version), "%.*s", (int)m.u.ping_reply.version.len,
                 (const char *)m.u.ping_reply.version.ptr);
    }
    free(f);
    return 0;
}

static uint8_t *dup_bytes(struct smk_bytes b)
{
    uint8_t *p = malloc((size_t)b.len + 1);
    if (p) {
        if (b.len)
            memcpy(p, b.ptr, b.len);
        p[b.len] = '\0';
    }
    return p;
}

int smk_agent_exec(struct smk_agent *a, const struct smk_agent_cmd *cmd,
                   struct smk_agent_exec_result *res, int timeout_ms)
{
    if (!a || !cmd || !res || !cmd->argv || cmd->argc == 0)
        return -EINVAL;
    memset(res, 0, sizeof(*res));
    struct smk_exec_args args = {.argv = cmd->argv,
                                 .argc = cmd->argc,
                                 .env = cmd->env,
                                 .envc = cmd->envc,
                                 .cwd = cmd->cwd,
                                 .stdin_data = cmd->stdin_data,
                                 .stdin_len = cmd->stdin_len,
                                 .timeout_ms = cmd->cmd_timeout_ms};
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    int r = smk_encode_exec(&b, id, &args);
    if (r < 0)
        return r;
    struct qframe *f = NULL;
    struct smk_msg m;
    r = request(a, &b, id, SMK_EXEC_REPLY, timeout_ms, &f, &m);
    if (r < 0)
        return r;
    res->status = (int)m.u.exec_reply.status;
    res->code = (int)m.u.exec_reply.code;
    res->flags = m.u.exec_reply.flags;
    res->out = dup_bytes(m.u.exec_reply.out);
    res->err = dup_bytes(m.u.exec_reply.err);
    res->out_len = m.u.exec_reply.out.len;
    res->err_len = m.u.exec_reply.err.len;
    free(f);
    if (!res->out || !res->err) {
        smk_agent_exec_result_free(res);
        return -ENOMEM;
    }
    return 0;
}

void smk_agent_exec_result_free(struct smk_agent_exec_result *res)
{
    if (!res)
        return;
    free(res->out);
    free(res->err);
    memset(res, 0, sizeof(*res));
}

static int start_stream(struct smk_agent *a, struct smk_buf *b, uint32_t id, uint16_t expect,
                        uint32_t *proc, uint32_t *pid, int timeout_ms)
{
    if (a->nstreams >= MAX_STREAMS) {
        smk_buf_free(b);
        return -EMFILE;
    }
    /* Registered first: the first output may come right behind the reply. */
    a->streams[a->nstreams++] = id;
    struct qframe *f = NULL;
    struct smk_msg m;
    int r = request(a, b, id, expect, timeout_ms, &f, &m);
    if (r < 0) {
        stream_drop(a, id);
        return r;
    }
    if (proc)
        *proc = m.u.spawn_reply.proc;
    if (pid)
        *pid = m.u.spawn_reply.pid;
    free(f);
    return 0;
}

int smk_agent_spawn(struct smk_agent *a, const struct smk_agent_cmd *cmd, uint32_t *proc,
                    uint32_t *pid, int timeout_ms)
{
    if (!a || !cmd || !cmd->argv || cmd->argc == 0 || !proc)
        return -EINVAL;
    int r = need_v2(a);
    if (r < 0)
        return r;
    struct smk_spawn_args args = {.argv = cmd->argv,
                                  .argc = cmd->argc,
                                  .env = cmd->env,
                                  .envc = cmd->envc,
                                  .cwd = cmd->cwd,
                                  .flags = cmd->flags,
                                  .uid = cmd->uid,
                                  .gid = cmd->gid,
                                  .groups = cmd->groups,
                                  .ngroups = cmd->ngroups,
                                  .rows = cmd->rows,
                                  .cols = cmd->cols,
                                  .window = cmd->window};
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    r = smk_encode_spawn(&b, id, &args);
    if (r < 0)
        return r;
    return start_stream(a, &b, id, SMK_SPAWN_REPLY, proc, pid, timeout_ms);
}

int smk_agent_attach(struct smk_agent *a, uint32_t proc, uint32_t *pid, int timeout_ms)
{
    if (!a)
        return -EINVAL;
    int r = need_v2(a);
    if (r < 0)
        return r;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    r = smk_encode_proc(&b, SMK_ATTACH, id, proc, 0, 0, NULL, 0);
    if (r < 0)
        return r;
    return start_stream(a, &b, id, SMK_ATTACH_REPLY, NULL, pid, timeout_ms);
}

int smk_agent_stdin(struct smk_agent *a, uint32_t proc, const void *data, size_t len,
                    int close_after, int timeout_ms)
{
    if (!a || (len && !data))
        return -EINVAL;
    int r = need_v2(a);
    if (r < 0)
        return r;
    int64_t deadline = deadline_of(timeout_ms);
    const uint8_t *p = data;
    /* In frames of at most 1 MiB, each answered once written. */
    do {
        size_t n = len > SMK_MAX_CHUNK ? SMK_MAX_CHUNK : len;
        int last = n == len;
        uint32_t id = fresh_id(a);
        struct smk_buf b = {.version = a->version};
        r = smk_encode_proc(&b, SMK_STDIN, id, proc, last && close_after ? SMK_STDIN_CLOSE : 0, 0,
                            p, n);
        r = simple(a, &b, r, id, SMK_STDIN_REPLY, left_ms(deadline));
        if (r < 0)
            return r;
        p += n;
        len -= n;
    } while (len);
    return 0;
}

int smk_agent_signal(struct smk_agent *a, uint32_t proc, int signo, int group, int timeout_ms)
{
    if (!a || signo <= 0 || signo > 64)
        return -EINVAL;
    int r = need_v2(a);
    if (r < 0)
        return r;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    r = smk_encode_proc(&b, SMK_SIGNAL, id, proc, (uint32_t)signo, group ? SMK_SIGNAL_GROUP : 0,
                        NULL, 0);
    return simple(a, &b, r, id, SMK_SIGNAL_REPLY, timeout_ms);
}

int smk_agent_resize(struct smk_agent *a, uint32_t proc, uint16_t rows, uint16_t cols,
                     int timeout_ms)
{
    if (!a)
        return -EINVAL;
    int r = need_v2(a);
    if (r < 0)
        return r;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    r = smk_encode_proc(&b, SMK_RESIZE, id, proc, rows, cols, NULL, 0);
    return simple(a, &b, r, id, SMK_RESIZE_REPLY, timeout_ms);
}

/* ---- events ---- */

/* Hands out the first queued event; gives the agent the credit back. */
static int take_event(struct smk_agent *a, struct smk_agent_event *ev)
{
    struct qframe *f = a->head;
    if (!f)
        return 0;
    a->head = f->next;
    if (!a->head)
        a->tail = NULL;
    struct smk_msg m;
    decode_frame(f, &m);
    memset(ev, 0, sizeof(*ev));
    ev->proc = m.u.proc.proc;
    if (m.hdr.type == SMK_OUTPUT) {
        ev->type = SMK_AGENT_OUTPUT;
        ev->stream = (int)m.u.proc.a;
        ev->data = m.u.proc.data.ptr;
        ev->len = m.u.proc.data.len;
        struct smk_buf b = {.version = a->version};
        if (ev->len && smk_encode_proc(&b, SMK_ACK, fresh_id(a), ev->proc, (uint32_t)ev->len, 0,
                                       NULL, 0) == 0) {
            int r = send_buf(a, &b, deadline_of(30000));
            if (r < 0) {
                free(f);
                return r;
            }
        }
        smk_buf_free(&b);
    } else {
        ev->type = SMK_AGENT_EXIT;
        ev->status = (int)m.u.proc.a;
        ev->code = (int)m.u.proc.b;
        stream_drop(a, m.hdr.id);
    }
    free(a->held);
    a->held = f;
    return 1;
}

int smk_agent_poll_event(struct smk_agent *a, struct smk_agent_event *ev)
{
    if (!a || !ev)
        return -EINVAL;
    free(a->held);
    a->held = NULL;
    for (;;) {
        if (a->head)
            return take_event(a, ev);
        struct qframe *f;
        int r = next_frame(a, now_ms(), &f);
        if (r == -ETIMEDOUT)
            return 0;
        if (r < 0)
            return r;
        stash(a, f);
    }
}

int smk_agent_next_event(struct smk_agent *a, struct smk_agent_event *ev, int timeout_ms)
{
    if (!a || !ev)
        return -EINVAL;
    free(a->held);
    a->held = NULL;
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        if (a->head)
            return take_event(a, ev) < 0 ? -EPIPE : 0;
        struct qframe *f;
        int r = next_frame(a, deadline, &f);
        if (r < 0)
            return r;
        stash(a, f);
    }
}

/* Whether f is an event of proc; if so it is consumed (output acknowledged) and 1 returned,
 * 2 for its exit (status and code set). */
static int own_event(struct smk_agent *a, struct qframe *f, uint32_t proc, int *status, int *code,
                     int *err)
{
    struct smk_msg m;
    decode_frame(f, &m);
    if ((m.hdr.type != SMK_OUTPUT && m.hdr.type != SMK_EXIT) || m.u.proc.proc != proc)
        return 0;
    if (m.hdr.type == SMK_EXIT) {
        if (status)
            *status = (int)m.u.proc.a;
        if (code)
            *code = (int)m.u.proc.b;
        stream_drop(a, m.hdr.id);
        free(f);
        return 2;
    }
    struct smk_buf b = {.version = a->version};
    if (m.u.proc.data.len &&
        smk_encode_proc(&b, SMK_ACK, fresh_id(a), proc, m.u.proc.data.len, 0, NULL, 0) == 0)
        *err = send_buf(a, &b, deadline_of(30000));
    smk_buf_free(&b);
    free(f);
    return 1;
}

int smk_agent_wait(struct smk_agent *a, uint32_t proc, int *status, int *code, int timeout_ms)
{
    if (!a)
        return -EINVAL;
    free(a->held);
    a->held = NULL;
    int err = 0;
    /* Its events already queued; other processes' events stay queued, in order. */
    int exited = 0;
    struct qframe **pp = &a->head;
    while (*pp && !exited && err == 0) {
        struct qframe *f = *pp;
        struct qframe *next = f->next;
        int k = own_event(a, f, proc, status, code, &err);
        if (k)
            *pp = next;
        else
            pp = &f->next;
        exited = k == 2;
    }
    a->tail = NULL;
    for (struct qframe *f = a->head; f; f = f->next)
        a->tail = f;
    if (err < 0)
        return err;
    if (exited)
        return 0;
    int64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        struct qframe *f;
        int r = next_frame(a, deadline, &f);
        if (r < 0)
            return r;
        int k = own_event(a, f, proc, status, code, &err);
        if (k == 2)
            return 0;
        if (err < 0)
            return err;
        if (!k)
            stash(a, f);
    }
}

/* ---- files, control, shutdown ---- */

int smk_agent_write_file(struct smk_agent *a, const char *path, uint32_t mode, const void *data,
                         size_t len, int timeout_ms)
{
    if (!a || !path || (len && !data))
        return -EINVAL;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    int r = smk_encode_write_file(&b, id, path, mode, data, len);
    return simple(a, &b, r, id, SMK_WRITE_FILE_REPLY, timeout_ms);
}

int smk_agent_read_file(struct smk_agent *a, const char *path, unsigned flags, void **data,
                        size_t *len, int *truncated, int timeout_ms)
{
    if (!a || !path || !data || !len)
        return -EINVAL;
    *data = NULL;
    *len = 0;
    if (flags && a->version < 2)
        return -ENOSYS;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    int r = flags ? smk_encode_read_file2(&b, id, path, flags) : smk_encode_read_file(&b, id, path);
    if (r < 0)
        return r;
    struct qframe *f = NULL;
    struct smk_msg m;
    r = request(a, &b, id, SMK_READ_FILE_REPLY, timeout_ms, &f, &m);
    if (r < 0)
        return r;
    uint8_t *p = dup_bytes(m.u.read_reply.data);
    if (!p) {
        free(f);
        return -ENOMEM;
    }
    *data = p;
    *len = m.u.read_reply.data.len;
    if (truncated)
        *truncated = (m.u.read_reply.flags & SMK_READ_TRUNCATED) != 0;
    free(f);
    return 0;
}

#define CONTROL(encode_call)                                                                       \
    do {                                                                                           \
        if (!a)                                                                                    \
            return -EINVAL;                                                                        \
        int r_ = need_v2(a);                                                                       \
        if (r_ < 0)                                                                                \
            return r_;                                                                             \
        uint32_t id = fresh_id(a);                                                                 \
        struct smk_buf b = {.version = a->version};                                                \
        r_ = (encode_call);                                                                        \
        return simple(a, &b, r_, id, SMK_CONTROL_REPLY, timeout_ms);                               \
    } while (0)

int smk_agent_set_time(struct smk_agent *a, uint64_t unix_ns, int timeout_ms)
{
    CONTROL(smk_encode_set_time(&b, id, unix_ns));
}

int smk_agent_reseed(struct smk_agent *a, const void *data, size_t len, int credit, int timeout_ms)
{
    if (len && !data)
        return -EINVAL;
    CONTROL(smk_encode_entropy(&b, id, credit ? SMK_ENTROPY_CREDIT : 0, data, len));
}

int smk_agent_link(struct smk_agent *a, const char *ifname, int up, uint32_t mtu, int timeout_ms)
{
    if (!ifname)
        return -EINVAL;
    uint32_t flags = (up >= 0 ? SMK_LINK_SET_STATE : 0) | (up > 0 ? SMK_LINK_UP : 0) |
                     (mtu ? SMK_LINK_SET_MTU : 0);
    CONTROL(smk_encode_link(&b, id, ifname, flags, mtu));
}

int smk_agent_addr(struct smk_agent *a, int del, const char *ifname, const char *cidr,
                   int timeout_ms)
{
    if (!ifname || !cidr)
        return -EINVAL;
    CONTROL(smk_encode_addr(&b, id, del ? SMK_NET_DEL : SMK_NET_ADD, ifname, cidr));
}

int smk_agent_route(struct smk_agent *a, int del, const char *dst, const char *gateway,
                    const char *ifname, uint32_t metric, int timeout_ms)
{
    if (!dst || ((!gateway || !*gateway) && (!ifname || !*ifname)))
        return -EINVAL;
    CONTROL(
        smk_encode_route(&b, id, del ? SMK_NET_DEL : SMK_NET_ADD, dst, gateway, ifname, metric));
}

int smk_agent_dns(struct smk_agent *a, const char *const *servers, size_t nservers,
                  const char *const *search, size_t nsearch, const char *const *options,
                  size_t noptions, int timeout_ms)
{
    CONTROL(smk_encode_dns(&b, id, servers, nservers, search, nsearch, options, noptions));
}

int smk_agent_hostname(struct smk_agent *a, const char *name, int timeout_ms)
{
    if (!name)
        return -EINVAL;
    CONTROL(smk_encode_hostname(&b, id, name));
}

int smk_agent_hosts_add(struct smk_agent *a, const char *const *lines, size_t n, int timeout_ms)
{
    if (n && !lines)
        return -EINVAL;
    CONTROL(smk_encode_hosts(&b, id, lines, n));
}

int smk_agent_shutdown(struct smk_agent *a, int poweroff, int timeout_ms)
{
    if (!a)
        return -EINVAL;
    uint32_t id = fresh_id(a);
    struct smk_buf b = {.version = a->version};
    int r = smk_encode_shutdown(&b, id, poweroff ? SMK_SHUTDOWN_POWEROFF : SMK_SHUTDOWN_REBOOT);
    return simple(a, &b, r, id, SMK_SHUTDOWN_REPLY, timeout_ms);
}
