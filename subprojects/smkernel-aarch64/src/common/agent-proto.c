/* GENERATED from smkernel-x86_64/src/common/agent-proto.c by sync-shared sha256:d98a213891cf */
#include "agent-proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void set32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Decoding: a cursor over the payload that remembers the first failure, so
 * the per-message code reads fields in order and checks once at the end. */
struct cursor {
    const uint8_t *p;
    size_t left;
    int err;
    const char *why;
};

static void fail(struct cursor *c, int err, const char *why)
{
    if (!c->err) {
        c->err = err;
        c->why = why;
    }
}

static uint32_t take_u32(struct cursor *c)
{
    if (c->err)
        return 0;
    if (c->left < 4) {
        fail(c, -SMK_EPROTO, "payload ends inside a field");
        return 0;
    }
    uint32_t v = get32(c->p);
    c->p += 4;
    c->left -= 4;
    return v;
}

static uint64_t take_u64(struct cursor *c)
{
    if (c->err)
        return 0;
    if (c->left < 8) {
        fail(c, -SMK_EPROTO, "payload ends inside a field");
        return 0;
    }
    uint64_t v = get64(c->p);
    c->p += 8;
    c->left -= 8;
    return v;
}

static struct smk_bytes take_bytes(struct cursor *c, uint32_t max, int too_long, const char *why)
{
    struct smk_bytes b = {0};
    uint32_t n = take_u32(c);
    if (c->err)
        return b;
    if (n > max) {
        fail(c, too_long, why);
        return b;
    }
    if (n > c->left) {
        fail(c, -SMK_EPROTO, "field runs past the end of the payload");
        return b;
    }
    b.ptr = c->p;
    b.len = n;
    c->p += n;
    c->left -= n;
    return b;
}

static struct smk_bytes take_str(struct cursor *c, uint32_t max, int too_long, const char *why)
{
    struct smk_bytes s = take_bytes(c, max, too_long, why);
    if (s.len && memchr(s.ptr, 0, s.len))
        fail(c, -SMK_EINVAL, "string contains a NUL byte");
    return s;
}

static struct smk_bytes take_path(struct cursor *c)
{
    struct smk_bytes s = take_str(c, SMK_MAX_PATH, -SMK_ENAMETOOLONG, "path too long");
    if (!c->err && (s.len == 0 || s.ptr[0] != '/'))
        fail(c, -SMK_EINVAL, "path is not absolute");
    return s;
}

static struct smk_strlist take_strlist(struct cursor *c, uint32_t max_count, int is_env)
{
    struct smk_strlist l = {0};
    uint32_t count = take_u32(c);
    if (c->err)
        return l;
    if (count > max_count) {
        fail(c, -SMK_E2BIG, is_env ? "too many environment entries" : "too many arguments");
        return l;
    }
    const uint8_t *start = c->p;
    for (uint32_t i = 0; i < count && !c->err; i++) {
        struct smk_bytes s = take_str(c, SMK_MAX_STRING, -SMK_E2BIG,
                                      is_env ? "environment entry too long" : "argument too long");
        if (c->err)
            break;
        if (is_env && (s.len == 0 || s.ptr[0] == '=' || !memchr(s.ptr, '=', s.len)))
            fail(c, -SMK_EINVAL, "environment entry is not NAME=value");
    }
    l.count = count;
    l.raw.ptr = start;
    l.raw.len = (uint32_t)(c->p - start);
    return l;
}

static struct smk_u32list take_u32list(struct cursor *c, uint32_t max)
{
    struct smk_u32list l = {0};
    uint32_t count = take_u32(c);
    if (c->err)
        return l;
    if (count > max) {
        fail(c, -SMK_E2BIG, "too many list entries");
        return l;
    }
    if ((size_t)count * 4 > c->left) {
        fail(c, -SMK_EPROTO, "field runs past the end of the payload");
        return l;
    }
    l.count = count;
    l.raw = c->p;
    c->p += (size_t)count * 4;
    c->left -= (size_t)count * 4;
    return l;
}

static struct smk_strlist take_names(struct cursor *c)
{
    struct smk_strlist l = {0};
    uint32_t count = take_u32(c);
    if (c->err)
        return l;
    if (count > SMK_MAX_LIST) {
        fail(c, -SMK_E2BIG, "too many list entries");
        return l;
    }
    const uint8_t *start = c->p;
    for (uint32_t i = 0; i < count && !c->err; i++) {
        struct smk_bytes s = take_str(c, SMK_MAX_NAME, -SMK_E2BIG, "list entry too long");
        if (!c->err && s.len == 0)
            fail(c, -SMK_EINVAL, "empty list entry");
        for (uint32_t k = 0; !c->err && k < s.len; k++)
            if (s.ptr[k] == '\n')
                fail(c, -SMK_EINVAL, "list entry contains a newline");
    }
    l.count = count;
    l.raw.ptr = start;
    l.raw.len = (uint32_t)(c->p - start);
    return l;
}

/* A name-like string (interface, address, host name): 0 < length <= 255
 * unless empty_ok, no NUL, no newline, no slash unless slash_ok. */
static struct smk_bytes take_name(struct cursor *c, int empty_ok, int slash_ok)
{
    struct smk_bytes s = take_str(c, SMK_MAX_NAME, -SMK_ENAMETOOLONG, "name too long");
    if (c->err)
        return s;
    if (!empty_ok && s.len == 0)
        fail(c, -SMK_EINVAL, "empty name");
    for (uint32_t k = 0; !c->err && k < s.len; k++)
        if (s.ptr[k] == '\n' || s.ptr[k] == ' ' || (!slash_ok && s.ptr[k] == '/'))
            fail(c, -SMK_EINVAL, "name contains a space, newline or slash");
    return s;
}

static int bad(struct smk_msg *msg, int err, const char *why)
{
    msg->why = why;
    return err;
}

static void decode_payload(struct cursor *c, struct smk_msg *msg)
{
    switch (msg->hdr.type) {
    case SMK_PING:
    case SMK_WRITE_FILE_REPLY:
    case SMK_SHUTDOWN_REPLY:
        break;
    case SMK_PING_REPLY:
        msg->u.ping_reply.proto = take_u32(c);
        msg->u.ping_reply.uptime_ns = take_u64(c);
        msg->u.ping_reply.ready_ns = take_u64(c);
        msg->u.ping_reply.version =
            take_str(c, SMK_MAX_VERSION, -SMK_EPROTO, "version string too long");
        break;
    case SMK_SPAWN:
        msg->u.exec.flags = take_u32(c);
        msg->u.exec.argv = take_strlist(c, SMK_MAX_ARGS, 0);
        if (!c->err && msg->u.exec.argv.count == 0)
            fail(c, -SMK_EINVAL, "argv is empty");
        if (!c->err && get32(msg->u.exec.argv.raw.ptr) == 0)
            fail(c, -SMK_EINVAL, "argv[0] is empty");
        msg->u.exec.env = take_strlist(c, SMK_MAX_ENV, 1);
        msg->u.exec.cwd = take_str(c, SMK_MAX_PATH, -SMK_ENAMETOOLONG, "cwd too long");
        msg->u.exec.uid = take_u32(c);
        msg->u.exec.gid = take_u32(c);
        msg->u.exec.groups = take_u32list(c, SMK_MAX_GROUPS);
        msg->u.exec.rows = take_u32(c);
        msg->u.exec.cols = take_u32(c);
        msg->u.exec.window = take_u32(c);
        if (!c->err && (msg->u.exec.rows > 0xffff || msg->u.exec.cols > 0xffff))
            fail(c, -SMK_EINVAL, "terminal size over 65535");
        if (!c->err && msg->u.exec.window > SMK_MAX_WINDOW)
            fail(c, -SMK_EINVAL, "window over the limit");
        break;
    case SMK_HELLO:
        msg->u.hello.max_version = take_u32(c);
        if (!c->err && msg->u.hello.max_version < SMK_PROTO_MIN_VERSION)
            fail(c, -SMK_EINVAL, "no protocol version in common");
        break;
    case SMK_HELLO_REPLY:
        msg->u.hello_reply.version = take_u32(c);
        msg->u.hello_reply.max_procs = take_u32(c);
        msg->u.hello_reply.window = take_u32(c);
        msg->u.hello_reply.agent =
            take_str(c, SMK_MAX_VERSION, -SMK_EPROTO, "version string too long");
        break;
    case SMK_SPAWN_REPLY:
    case SMK_ATTACH_REPLY:
        msg->u.spawn_reply.proc = take_u32(c);
        msg->u.spawn_reply.pid = take_u32(c);
        break;
    case SMK_STDIN:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        msg->u.proc.data = take_bytes(c, SMK_MAX_DATA, -SMK_EMSGSIZE, "stdin too large");
        break;
    case SMK_ACK:
    case SMK_ATTACH:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        if (!c->err && msg->u.proc.a > SMK_MAX_WINDOW)
            fail(c, -SMK_EINVAL, "window over the limit");
        break;
    case SMK_SIGNAL:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        msg->u.proc.b = take_u32(c);
        if (!c->err && (msg->u.proc.a == 0 || msg->u.proc.a > 64))
            fail(c, -SMK_EINVAL, "signal number out of range");
        break;
    case SMK_RESIZE:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        msg->u.proc.b = take_u32(c);
        if (!c->err && (msg->u.proc.a > 0xffff || msg->u.proc.b > 0xffff))
            fail(c, -SMK_EINVAL, "terminal size over 65535");
        break;
    case SMK_OUTPUT:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        msg->u.proc.data = take_bytes(c, SMK_MAX_CHUNK, -SMK_EMSGSIZE, "output chunk too large");
        if (!c->err && msg->u.proc.a != 1 && msg->u.proc.a != 2)
            fail(c, -SMK_EPROTO, "output stream is not 1 or 2");
        break;
    case SMK_EXIT:
        msg->u.proc.proc = take_u32(c);
        msg->u.proc.a = take_u32(c);
        msg->u.proc.b = take_u32(c);
        if (!c->err && msg->u.proc.a > SMK_SIGNALED)
            fail(c, -SMK_EPROTO, "unknown exit status");
        break;
    case SMK_SET_TIME:
        msg->u.set_time.unix_ns = take_u64(c);
        break;
    case SMK_ENTROPY:
        msg->u.entropy.flags = take_u32(c);
        msg->u.entropy.data = take_bytes(c, SMK_MAX_ENTROPY, -SMK_EMSGSIZE, "entropy too large");
        break;
    case SMK_LINK:
        msg->u.link.ifname = take_name(c, 0, 0);
        msg->u.link.flags = take_u32(c);
        msg->u.link.mtu = take_u32(c);
        if (!c->err && msg->u.link.ifname.len > 15)
            fail(c, -SMK_ENAMETOOLONG, "interface name over 15 bytes");
        break;
    case SMK_ADDR:
        msg->u.addr.op = take_u32(c);
        msg->u.addr.ifname = take_name(c, 0, 0);
        msg->u.addr.cidr = take_name(c, 0, 1);
        if (!c->err && msg->u.addr.op > SMK_NET_DEL)
            fail(c, -SMK_EINVAL, "unknown address operation");
        if (!c->err && msg->u.addr.ifname.len > 15)
            fail(c, -SMK_ENAMETOOLONG, "interface name over 15 bytes");
        break;
    case SMK_ROUTE:
        msg->u.route.op = take_u32(c);
        msg->u.route.dst = take_name(c, 0, 1);
        msg->u.route.gateway = take_name(c, 1, 0);
        msg->u.route.ifname = take_name(c, 1, 0);
        msg->u.route.metric = take_u32(c);
        if (!c->err && msg->u.route.op > SMK_NET_DEL)
            fail(c, -SMK_EINVAL, "unknown route operation");
        if (!c->err && msg->u.route.ifname.len > 15)
            fail(c, -SMK_ENAMETOOLONG, "interface name over 15 bytes");
        break;
    case SMK_DNS:
        msg->u.dns.servers = take_names(c);
        msg->u.dns.search = take_names(c);
        msg->u.dns.options = take_names(c);
        break;
    case SMK_HOSTNAME:
        msg->u.hostname.name = take_name(c, 0, 0);
        if (!c->err && msg->u.hostname.name.len > 64)
            fail(c, -SMK_ENAMETOOLONG, "host name over 64 bytes");
        break;
    case SMK_HOSTS:
        msg->u.hosts.lines = take_names(c);
        break;
    case SMK_STDIN_REPLY:
    case SMK_SIGNAL_REPLY:
    case SMK_RESIZE_REPLY:
    case SMK_CONTROL_REPLY:
        break;
    case SMK_EXEC:
        msg->u.exec.timeout_ms = take_u32(c);
        msg->u.exec.argv = take_strlist(c, SMK_MAX_ARGS, 0);
        if (!c->err && msg->u.exec.argv.count == 0)
            fail(c, -SMK_EINVAL, "argv is empty");
        if (!c->err && get32(msg->u.exec.argv.raw.ptr) == 0)
            fail(c, -SMK_EINVAL, "argv[0] is empty");
        msg->u.exec.env = take_strlist(c, SMK_MAX_ENV, 1);
        msg->u.exec.cwd = take_str(c, SMK_MAX_PATH, -SMK_ENAMETOOLONG, "cwd too long");
        msg->u.exec.stdin_data = take_bytes(c, SMK_MAX_DATA, -SMK_EMSGSIZE, "stdin too large");
        break;
    case SMK_EXEC_REPLY:
        msg->u.exec_reply.status = take_u32(c);
        msg->u.exec_reply.code = take_u32(c);
        msg->u.exec_reply.flags = take_u32(c);
        msg->u.exec_reply.out = take_bytes(c, SMK_MAX_OUTPUT, -SMK_EMSGSIZE, "stdout too large");
        msg->u.exec_reply.err = take_bytes(c, SMK_MAX_OUTPUT, -SMK_EMSGSIZE, "stderr too large");
        if (!c->err && msg->u.exec_reply.status > SMK_TIMED_OUT)
            fail(c, -SMK_EPROTO, "unknown exec status");
        break;
    case SMK_WRITE_FILE:
        msg->u.write_file.path = take_path(c);
        msg->u.write_file.mode = take_u32(c);
        msg->u.write_file.data = take_bytes(c, SMK_MAX_DATA, -SMK_EMSGSIZE, "file too large");
        if (!c->err && msg->u.write_file.mode > 07777)
            fail(c, -SMK_EINVAL, "mode has bits beyond 07777");
        break;
    case SMK_READ_FILE:
        msg->u.read_file.path = take_path(c);
        /* Appended in version 2: absent means 0. */
        if (!c->err && c->left >= 4)
            msg->u.read_file.flags = take_u32(c);
        break;
    case SMK_READ_FILE_REPLY:
        msg->u.read_reply.flags = take_u32(c);
        msg->u.read_reply.data = take_bytes(c, SMK_MAX_DATA, -SMK_EMSGSIZE, "file too large");
        break;
    case SMK_SHUTDOWN:
        msg->u.shutdown.action = take_u32(c);
        if (!c->err && msg->u.shutdown.action > SMK_SHUTDOWN_POWEROFF)
            fail(c, -SMK_EINVAL, "unknown shutdown action");
        break;
    case SMK_ERROR:
        msg->u.error.code = take_u32(c);
        msg->u.error.message = take_str(c, SMK_MAX_TEXT, -SMK_EPROTO, "error message too long");
        break;
    default:
        fail(c, -SMK_ENOSYS, "unknown message type");
        break;
    }
}

int smk_decode(const uint8_t *buf, size_t len, struct smk_msg *msg)
{
    memset(msg, 0, sizeof(*msg));
    if (len == 0)
        return 0;
    /* Checking the magic byte by byte lets garbage fail at once instead of
     * waiting for a full header that may never come. */
    if (memcmp(buf, SMK_MAGIC, len < 4 ? len : 4) != 0)
        return bad(msg, -SMK_EBADMSG, "bad magic");
    if (len < SMK_HEADER_SIZE)
        return 0;

    msg->hdr.version = get16(buf + 4);
    msg->hdr.type = get16(buf + 6);
    msg->hdr.id = get32(buf + 8);
    msg->hdr.len = get32(buf + 12);
    if (msg->hdr.len > SMK_MAX_PAYLOAD)
        return bad(msg, -SMK_EMSGSIZE, "payload length over the limit");
    msg->frame_len = SMK_HEADER_SIZE + (size_t)msg->hdr.len;
    if (len < msg->frame_len)
        return 0;
    /* The header layout is the same in every version, so a frame of another
     * version can still be skipped by its length. */
    if (msg->hdr.version < SMK_PROTO_MIN_VERSION || msg->hdr.version > SMK_PROTO_VERSION)
        return bad(msg, -SMK_EPROTONOSUPPORT, "unsupported protocol version");
    if (msg->hdr.version < 2 && smk_type_is_v2(msg->hdr.type))
        return bad(msg, -SMK_ENOSYS, "message type needs protocol version 2");

    struct cursor c = {.p = buf + SMK_HEADER_SIZE, .left = msg->hdr.len};
    decode_payload(&c, msg);
    if (c.err) {
        /* Leave no half-decoded fields behind for a careless caller. */
        memset(&msg->u, 0, sizeof(msg->u));
        return bad(msg, c.err, c.why);
    }
    /* Bytes after the known fields are allowed: later minor revisions may
     * append fields, and older readers skip them. */
    return (int)msg->frame_len;
}

int smk_strlist_next(const struct smk_strlist *list, uint32_t *pos, struct smk_bytes *out)
{
    if (*pos > list->raw.len || list->raw.len - *pos < 4)
        return 0;
    uint32_t n = get32(list->raw.ptr + *pos);
    if (n > list->raw.len - *pos - 4)
        return 0;
    out->ptr = list->raw.ptr + *pos + 4;
    out->len = n;
    *pos += 4 + n;
    return 1;
}

uint32_t smk_u32list_get(const struct smk_u32list *list, uint32_t i)
{
    return i < list->count ? get32(list->raw + (size_t)i * 4) : 0;
}

int smk_type_is_v2(uint16_t type)
{
    uint16_t req = type == SMK_ERROR ? 0 : (uint16_t)(type & ~SMK_REPLY);
    return req >= SMK_HELLO;
}

size_t smk_find_magic(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        size_t n = len - i < 4 ? len - i : 4;
        if (memcmp(buf + i, SMK_MAGIC, n) == 0)
            return i;
    }
    return len;
}

const char *smk_type_name(uint16_t type)
{
    switch (type) {
    case SMK_PING:
        return "PING";
    case SMK_EXEC:
        return "EXEC";
    case SMK_WRITE_FILE:
        return "WRITE_FILE";
    case SMK_READ_FILE:
        return "READ_FILE";
    case SMK_SHUTDOWN:
        return "SHUTDOWN";
    case SMK_PING_REPLY:
        return "PING_REPLY";
    case SMK_EXEC_REPLY:
        return "EXEC_REPLY";
    case SMK_WRITE_FILE_REPLY:
        return "WRITE_FILE_REPLY";
    case SMK_READ_FILE_REPLY:
        return "READ_FILE_REPLY";
    case SMK_SHUTDOWN_REPLY:
        return "SHUTDOWN_REPLY";
    case SMK_HELLO:
        return "HELLO";
    case SMK_SPAWN:
        return "SPAWN";
    case SMK_STDIN:
        return "STDIN";
    case SMK_ACK:
        return "ACK";
    case SMK_SIGNAL:
        return "SIGNAL";
    case SMK_RESIZE:
        return "RESIZE";
    case SMK_ATTACH:
        return "ATTACH";
    case SMK_SET_TIME:
        return "SET_TIME";
    case SMK_ENTROPY:
        return "ENTROPY";
    case SMK_LINK:
        return "LINK";
    case SMK_ADDR:
        return "ADDR";
    case SMK_ROUTE:
        return "ROUTE";
    case SMK_DNS:
        return "DNS";
    case SMK_HOSTNAME:
        return "HOSTNAME";
    case SMK_HOSTS:
        return "HOSTS";
    case SMK_HELLO_REPLY:
        return "HELLO_REPLY";
    case SMK_SPAWN_REPLY:
        return "SPAWN_REPLY";
    case SMK_STDIN_REPLY:
        return "STDIN_REPLY";
    case SMK_SIGNAL_REPLY:
        return "SIGNAL_REPLY";
    case SMK_RESIZE_REPLY:
        return "RESIZE_REPLY";
    case SMK_ATTACH_REPLY:
        return "ATTACH_REPLY";
    case SMK_CONTROL_REPLY:
        return "CONTROL_REPLY";
    case SMK_OUTPUT:
        return "OUTPUT";
    case SMK_EXIT:
        return "EXIT";
    case SMK_ERROR:
        return "ERROR";
    default:
        return "?";
    }
}

void smk_buf_free(struct smk_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

static int reserve(struct smk_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return -SMK_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -SMK_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* Encoding: like the cursor, a frame under construction remembers its first
 * failure and is rolled back by finish(). */
struct frame {
    struct smk_buf *b;
    size_t start;
    int err;
};

static void put(struct frame *f, const void *p, size_t n)
{
    if (f->err || n == 0)
        return;
    size_t payload = f->b->len - f->start - SMK_HEADER_SIZE;
    if (n > SMK_MAX_PAYLOAD - payload) {
        f->err = -SMK_EMSGSIZE;
        return;
    }
    f->err = reserve(f->b, n);
    if (f->err)
        return;
    memcpy(f->b->data + f->b->len, p, n);
    f->b->len += n;
}

static void put_u32(struct frame *f, uint32_t v)
{
    uint8_t p[4];
    set32(p, v);
    put(f, p, sizeof(p));
}

static void put_u64(struct frame *f, uint64_t v)
{
    put_u32(f, (uint32_t)v);
    put_u32(f, (uint32_t)(v >> 32));
}

static void put_bytes(struct frame *f, const void *p, size_t n)
{
    if (n > SMK_MAX_PAYLOAD) {
        if (!f->err)
            f->err = -SMK_EMSGSIZE;
        return;
    }
    put_u32(f, (uint32_t)n);
    put(f, p, n);
}

static void put_str(struct frame *f, const char *s)
{
    put_bytes(f, s, s ? strlen(s) : 0);
}

static struct frame begin(struct smk_buf *b, uint16_t type, uint32_t id)
{
    struct frame f = {.b = b, .start = b->len};
    f.err = reserve(b, SMK_HEADER_SIZE);
    if (f.err)
        return f;
    uint8_t *h = b->data + b->len;
    memcpy(h, SMK_MAGIC, 4);
    uint16_t version = b->version ? b->version : SMK_PROTO_VERSION;
    h[4] = (uint8_t)version;
    h[5] = (uint8_t)(version >> 8);
    h[6] = (uint8_t)type;
    h[7] = (uint8_t)(type >> 8);
    set32(h + 8, id);
    set32(h + 12, 0);
    b->len += SMK_HEADER_SIZE;
    return f;
}

static int finish(struct frame *f)
{
    if (!f->err) {
        uint8_t *h = f->b->data + f->start;
        size_t n = f->b->len - f->start;
        set32(h + 12, (uint32_t)(n - SMK_HEADER_SIZE));
        /* Running the decoder over the result keeps the two sides' validation
         * rules in one place. */
        struct smk_msg msg;
        int r = smk_decode(h, n, &msg);
        if (r < 0)
            f->err = r;
    }
    if (f->err)
        f->b->len = f->start;
    return f->err;
}

int smk_encode_empty(struct smk_buf *b, uint16_t type, uint32_t id)
{
    struct frame f = begin(b, type, id);
    return finish(&f);
}

int smk_encode_ping_reply(struct smk_buf *b, uint32_t id, uint64_t uptime_ns, uint64_t ready_ns,
                          const char *version)
{
    struct frame f = begin(b, SMK_PING_REPLY, id);
    put_u32(&f, SMK_PROTO_VERSION);
    put_u64(&f, uptime_ns);
    put_u64(&f, ready_ns);
    put_str(&f, version);
    return finish(&f);
}

static void put_strlist(struct frame *f, const char *const *v, size_t n)
{
    put_u32(f, (uint32_t)n);
    for (size_t i = 0; i < n && !f->err; i++)
        put_str(f, v[i]);
}

int smk_encode_exec(struct smk_buf *b, uint32_t id, const struct smk_exec_args *args)
{
    /* Counts are checked up front so a huge list is refused before it is
     * copied. */
    if (args->argc > SMK_MAX_ARGS || args->envc > SMK_MAX_ENV)
        return -SMK_E2BIG;
    struct frame f = begin(b, SMK_EXEC, id);
    put_u32(&f, args->timeout_ms);
    put_strlist(&f, args->argv, args->argc);
    put_strlist(&f, args->env, args->envc);
    put_str(&f, args->cwd);
    put_bytes(&f, args->stdin_data, args->stdin_len);
    return finish(&f);
}

int smk_encode_exec_reply(struct smk_buf *b, uint32_t id, uint32_t status, uint32_t code,
                          uint32_t flags, const void *out, size_t out_len, const void *err,
                          size_t err_len)
{
    struct frame f = begin(b, SMK_EXEC_REPLY, id);
    put_u32(&f, status);
    put_u32(&f, code);
    put_u32(&f, flags);
    put_bytes(&f, out, out_len);
    put_bytes(&f, err, err_len);
    return finish(&f);
}

int smk_encode_write_file(struct smk_buf *b, uint32_t id, const char *path, uint32_t mode,
                          const void *data, size_t len)
{
    struct frame f = begin(b, SMK_WRITE_FILE, id);
    put_str(&f, path);
    put_u32(&f, mode);
    put_bytes(&f, data, len);
    return finish(&f);
}

int smk_encode_read_file(struct smk_buf *b, uint32_t id, const char *path)
{
    struct frame f = begin(b, SMK_READ_FILE, id);
    put_str(&f, path);
    return finish(&f);
}

int smk_encode_read_file2(struct smk_buf *b, uint32_t id, const char *path, uint32_t flags)
{
    struct frame f = begin(b, SMK_READ_FILE, id);
    put_str(&f, path);
    put_u32(&f, flags);
    return finish(&f);
}

int smk_encode_hello(struct smk_buf *b, uint32_t id, uint32_t max_version)
{
    struct frame f = begin(b, SMK_HELLO, id);
    put_u32(&f, max_version);
    return finish(&f);
}

int smk_encode_hello_reply(struct smk_buf *b, uint32_t id, uint32_t version, uint32_t max_procs,
                           uint32_t window, const char *agent)
{
    struct frame f = begin(b, SMK_HELLO_REPLY, id);
    put_u32(&f, version);
    put_u32(&f, max_procs);
    put_u32(&f, window);
    put_str(&f, agent);
    return finish(&f);
}

int smk_encode_spawn(struct smk_buf *b, uint32_t id, const struct smk_spawn_args *args)
{
    if (args->argc > SMK_MAX_ARGS || args->envc > SMK_MAX_ENV || args->ngroups > SMK_MAX_GROUPS)
        return -SMK_E2BIG;
    struct frame f = begin(b, SMK_SPAWN, id);
    put_u32(&f, args->flags);
    put_strlist(&f, args->argv, args->argc);
    put_strlist(&f, args->env, args->envc);
    put_str(&f, args->cwd);
    put_u32(&f, args->uid);
    put_u32(&f, args->gid);
    put_u32(&f, (uint32_t)args->ngroups);
    for (size_t i = 0; i < args->ngroups; i++)
        put_u32(&f, args->groups[i]);
    put_u32(&f, args->rows);
    put_u32(&f, args->cols);
    put_u32(&f, args->window);
    return finish(&f);
}

int smk_encode_spawn_reply(struct smk_buf *b, uint16_t type, uint32_t id, uint32_t proc,
                           uint32_t pid)
{
    if (type != SMK_SPAWN_REPLY && type != SMK_ATTACH_REPLY)
        return -SMK_EINVAL;
    struct frame f = begin(b, type, id);
    put_u32(&f, proc);
    put_u32(&f, pid);
    return finish(&f);
}

int smk_encode_proc(struct smk_buf *b, uint16_t type, uint32_t id, uint32_t proc, uint32_t a,
                    uint32_t bv, const void *data, size_t len)
{
    struct frame f = begin(b, type, id);
    put_u32(&f, proc);
    switch (type) {
    case SMK_STDIN:
    case SMK_OUTPUT:
        put_u32(&f, a);
        put_bytes(&f, data, len);
        break;
    case SMK_ACK:
    case SMK_ATTACH:
        put_u32(&f, a);
        break;
    case SMK_SIGNAL:
    case SMK_RESIZE:
    case SMK_EXIT:
        put_u32(&f, a);
        put_u32(&f, bv);
        break;
    default:
        if (!f.err)
            f.err = -SMK_EINVAL;
        break;
    }
    return finish(&f);
}

int smk_encode_set_time(struct smk_buf *b, uint32_t id, uint64_t unix_ns)
{
    struct frame f = begin(b, SMK_SET_TIME, id);
    put_u64(&f, unix_ns);
    return finish(&f);
}

int smk_encode_entropy(struct smk_buf *b, uint32_t id, uint32_t flags, const void *data, size_t len)
{
    struct frame f = begin(b, SMK_ENTROPY, id);
    put_u32(&f, flags);
    put_bytes(&f, data, len);
    return finish(&f);
}

int smk_encode_link(struct smk_buf *b, uint32_t id, const char *ifname, uint32_t flags,
                    uint32_t mtu)
{
    struct frame f = begin(b, SMK_LINK, id);
    put_str(&f, ifname);
    put_u32(&f, flags);
    put_u32(&f, mtu);
    return finish(&f);
}

int smk_encode_addr(struct smk_buf *b, uint32_t id, uint32_t op, const char *ifname,
                    const char *cidr)
{
    struct frame f = begin(b, SMK_ADDR, id);
    put_u32(&f, op);
    put_str(&f, ifname);
    put_str(&f, cidr);
    return finish(&f);
}

int smk_encode_route(struct smk_buf *b, uint32_t id, uint32_t op, const char *dst,
                     const char *gateway, const char *ifname, uint32_t metric)
{
    struct frame f = begin(b, SMK_ROUTE, id);
    put_u32(&f, op);
    put_str(&f, dst);
    put_str(&f, gateway);
    put_str(&f, ifname);
    put_u32(&f, metric);
    return finish(&f);
}

int smk_encode_dns(struct smk_buf *b, uint32_t id, const char *const *servers, size_t nservers,
                   const char *const *search, size_t nsearch, const char *const *options,
                   size_t noptions)
{
    if (nservers > SMK_MAX_LIST || nsearch > SMK_MAX_LIST || noptions > SMK_MAX_LIST)
        return -SMK_E2BIG;
    struct frame f = begin(b, SMK_DNS, id);
    put_strlist(&f, servers, nservers);
    put_strlist(&f, search, nsearch);
    put_strlist(&f, options, noptions);
    return finish(&f);
}

int smk_encode_hostname(struct smk_buf *b, uint32_t id, const char *name)
{
    struct frame f = begin(b, SMK_HOSTNAME, id);
    put_str(&f, name);
    return finish(&f);
}

int smk_encode_hosts(struct smk_buf *b, uint32_t id, const char *const *lines, size_t n)
{
    if (n > SMK_MAX_LIST)
        return -SMK_E2BIG;
    struct frame f = begin(b, SMK_HOSTS, id);
    put_strlist(&f, lines, n);
    return finish(&f);
}

int smk_encode_read_reply(struct smk_buf *b, uint32_t id, uint32_t flags, const void *data,
                          size_t len)
{
    struct frame f = begin(b, SMK_READ_FILE_REPLY, id);
    put_u32(&f, flags);
    put_bytes(&f, data, len);
    return finish(&f);
}

int smk_encode_shutdown(struct smk_buf *b, uint32_t id, uint32_t action)
{
    struct frame f = begin(b, SMK_SHUTDOWN, id);
    put_u32(&f, action);
    return finish(&f);
}

int smk_encode_error(struct smk_buf *b, uint32_t id, uint32_t code, const char *message)
{
    size_t n = message ? strlen(message) : 0;
    struct frame f = begin(b, SMK_ERROR, id);
    put_u32(&f, code);
    put_bytes(&f, message, n < SMK_MAX_TEXT ? n : SMK_MAX_TEXT);
    return finish(&f);
}
