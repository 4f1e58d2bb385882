#define _GNU_SOURCE
#include "agent.h"
#include "stream.h"
#include "version.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STALL_MS 10000          /* a frame once started must keep arriving */
#define IDLE_MS (5 * 60 * 1000) /* a socket connection without requests */
#define SEND_MS 30000           /* a reply the peer does not take */
#define LINGER_MS 2000          /* after a SHUTDOWN reply, for the peer to hang up */
#define RECONNECT_POLL_MS 100   /* how often a disconnected serial port is checked */
#define SALVAGE_QUIET_MS 1000   /* serial: a stalled frame is checked for a newer request */

struct conn {
    int fd;
    int serial;
    int peer_gone; /* the last reply could not be delivered */
    int64_t hup_since; /* when a serial hang-up began, or -1 */
    int64_t last_rx;   /* when the last bytes arrived */
    const struct smk_conn_ctx *ctx;
    struct smk_stream st;
};

static void send_frame(struct conn *c, struct smk_buf *b)
{
    int r = smk_write_all_hup(c->fd, b->data, b->len, SEND_MS, c->serial ? SERIAL_HUP_GRACE_MS : 0);
    if (r < 0) {
        smk_log("sending reply: %s", strerror(-r));
        c->peer_gone = 1;
    }
    smk_buf_free(b);
}

__attribute__((format(printf, 4, 5))) static void reply_error(struct conn *c, uint32_t id, int code,
                                                              const char *fmt, ...)
{
    char text[SMK_MAX_TEXT + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct smk_buf b = {0};
    if (smk_encode_error(&b, id, (uint32_t)code, text) == 0)
        send_frame(c, &b);
}

static void encode_failed(struct conn *c, uint32_t id, int r)
{
    reply_error(c, id, -r, "encoding the reply: %s", strerror(-r));
}

static void copy_path(char *dst, struct smk_bytes path)
{
    memcpy(dst, path.ptr, path.len);
    dst[path.len] = '\0';
}

static void handle_ping(struct conn *c, const struct smk_msg *m)
{
    struct smk_buf b = {0};
    int r = smk_encode_ping_reply(&b, m->hdr.id, smk_boottime_ns(), c->ctx->ready_ns,
                                  SMK_AGENT_VERSION);
    if (r < 0)
        encode_failed(c, m->hdr.id, r);
    else
        send_frame(c, &b);
}

static void handle_exec(struct conn *c, const struct smk_msg *m)
{
    struct smk_exec_result res;
    char why[512];
    int r = smk_exec(m, c->fd, c->serial, &res, why, sizeof(why));
    if (r == -ECANCELED) {
        smk_log("exec: %s", why);
        c->peer_gone = 1;
        return;
    }
    if (r < 0) {
        reply_error(c, m->hdr.id, -r, "%s", why);
        return;
    }
    struct smk_buf b = {0};
    r = smk_encode_exec_reply(&b, m->hdr.id, res.status, res.code, res.flags, res.out, res.out_len,
                              res.err, res.err_len);
    smk_exec_result_free(&res);
    if (r < 0)
        encode_failed(c, m->hdr.id, r);
    else
        send_frame(c, &b);
}

static void handle_write_file(struct conn *c, const struct smk_msg *m)
{
    char path[SMK_MAX_PATH + 1], why[SMK_MAX_PATH + 128];
    copy_path(path, m->u.write_file.path);
    int r = smk_write_file(path, m->u.write_file.mode, m->u.write_file.data.ptr,
                           m->u.write_file.data.len, why, sizeof(why));
    if (r < 0) {
        reply_error(c, m->hdr.id, -r, "%s", why);
        return;
    }
    struct smk_buf b = {0};
    r = smk_encode_empty(&b, SMK_WRITE_FILE_REPLY, m->hdr.id);
    if (r < 0)
        encode_failed(c, m->hdr.id, r);
    else
        send_frame(c, &b);
}

static void handle_read_file(struct conn *c, const struct smk_msg *m)
{
    char path[SMK_MAX_PATH + 1], why[SMK_MAX_PATH + 128];
    copy_path(path, m->u.read_file.path);
    uint8_t *data;
    size_t len;
    int truncated;
    int r = smk_read_file(path, &data, &len, &truncated, why, sizeof(why));
    if (r < 0) {
        reply_error(c, m->hdr.id, -r, "%s", why);
        return;
    }
    struct smk_buf b = {0};
    r = smk_encode_read_reply(&b, m->hdr.id, truncated ? SMK_READ_TRUNCATED : 0, data, len);
    free(data);
    if (r < 0)
        encode_failed(c, m->hdr.id, r);
    else
        send_frame(c, &b);
}

/* Waits for the client to hang up after it has its reply, so the reply is
 * not lost in a virtqueue when the machine goes down. */
static void linger(struct conn *c)
{
    int64_t deadline = smk_now_ms() + LINGER_MS;
    uint8_t buf[256];
    for (;;) {
        int64_t left = deadline - smk_now_ms();
        if (left <= 0 || smk_read_some(c->fd, buf, sizeof(buf), (int)left) <= 0)
            return;
    }
}

static void handle_shutdown(struct conn *c, const struct smk_msg *m)
{
    uint32_t action = m->u.shutdown.action;
    if (!c->ctx->test_mode && geteuid() != 0) {
        reply_error(c, m->hdr.id, EPERM, "shutdown: not running as root");
        return;
    }
    struct smk_buf b = {0};
    int r = smk_encode_empty(&b, SMK_SHUTDOWN_REPLY, m->hdr.id);
    if (r < 0) {
        encode_failed(c, m->hdr.id, r);
        return;
    }
    send_frame(c, &b);
    linger(c);
    const char *what = action == SMK_SHUTDOWN_POWEROFF ? "poweroff" : "reboot";
    if (c->ctx->test_mode) {
        smk_log("%s requested; test mode, so only the agent stops", what);
        kill(getppid(), SIGTERM);
        _exit(0);
    }
    smk_log("%s requested", what);
    smk_power(action);
}

static void handle(struct conn *c, const struct smk_msg *m)
{
    switch (m->hdr.type) {
    case SMK_PING:
        handle_ping(c, m);
        break;
    case SMK_EXEC:
        handle_exec(c, m);
        break;
    case SMK_WRITE_FILE:
        handle_write_file(c, m);
        break;
    case SMK_READ_FILE:
        handle_read_file(c, m);
        break;
    case SMK_SHUTDOWN:
        handle_shutdown(c, m);
        break;
    default:
        reply_error(c, m->hdr.id, SMK_ENOSYS, "%s (0x%04x) is not a request",
                    smk_type_name(m->hdr.type), m->hdr.type);
        break;
    }
}

/* The request id of a partly received frame, for the error reply. */
static uint32_t pending_id(const struct smk_stream *st)
{
    struct smk_msg m;
    smk_decode(st->frame ? st->frame : st->head, st->frame ? SMK_HEADER_SIZE : st->have, &m);
    return m.hdr.id;
}

/* Feeds the stream one read (or bytes set aside earlier); returns as
 * smk_stream_advance(), with *over set when a socket connection has ended. */
static int receive(struct conn *c, struct smk_msg *m, int *over)
{
    if (smk_stream_backlog(&c->st)) {
        /* A frame begun from set-aside bytes gets its own time to finish. */
        c->last_rx = smk_now_ms();
        return smk_stream_replay(&c->st, m);
    }
    size_t n;
    uint8_t *p = smk_stream_want(&c->st, &n);
    if (!p) {
        *over = 1;
        return 0;
    }
    int partial = smk_stream_partial(&c->st);
    int timeout = partial ? STALL_MS : c->serial ? -1 : IDLE_MS;
    int64_t quiet = partial ? smk_now_ms() - c->last_rx : 0;
    /* Over virtio-serial, a client may have vanished mid-frame and the next
     * one connected before a hang-up could be seen: its request was taken as
     * the rest of the dead frame. It then ends the bytes received so far,
     * and the line goes quiet while that client waits for its reply: checked
     * after a second of quiet rather than after the full stall time. */
    if (partial && c->serial) {
        int64_t left = STALL_MS - quiet;
        timeout = left < 0 ? 0 : left < SALVAGE_QUIET_MS ? (int)left : SALVAGE_QUIET_MS;
    }
    ssize_t r = smk_read_some(c->fd, p, n, timeout);
    if (r == -ETIMEDOUT && partial && c->serial) {
        quiet = smk_now_ms() - c->last_rx;
        uint32_t id = pending_id(&c->st);
        if (smk_stream_salvage(&c->st)) {
            smk_log("dropping a frame that stopped arriving: a newer request follows it");
            reply_error(c, id, SMK_ETIMEDOUT,
                        "incomplete frame: nothing received for %lld ms, then a new request",
                        (long long)quiet);
            return 0;
        }
        if (quiet < STALL_MS)
            return 0;
    }
    if (r == -ETIMEDOUT) {
        if (partial) {
            smk_log("dropping a frame that stopped arriving");
            reply_error(c, pending_id(&c->st), SMK_ETIMEDOUT,
                        "incomplete frame: nothing received for %d s", STALL_MS / 1000);
        }
        *over = !c->serial;
        /* Over virtio-serial, the next client's request may still be in the
         * dropped bytes with more of it to come: look for it from the first
         * magic on. */
        smk_stream_rescan(&c->st);
        return 0;
    }
    if (r == 0) {
        *over = !c->serial;
        /* With several vCPUs the host's "port open" may reach the guest after
         * the first bytes of its request: a hang-up in mid-frame is believed
         * once it has lasted, so that request is not dropped. */
        int64_t now = smk_now_ms();
        if (c->serial && c->hup_since < 0)
            c->hup_since = now;
        if (c->serial && partial && now - c->hup_since < SERIAL_HUP_GRACE_MS) {
            smk_sleep_ms(SERIAL_HUP_RECHECK_MS);
            return 0;
        }
        /* The host side is not connected. A half-received frame belonged to
         * the client that left; the next one starts afresh. */
        if (c->serial && partial)
            smk_log("host disconnected in the middle of a frame; dropped it");
        smk_stream_reset(&c->st);
        if (c->serial)
            smk_sleep_ms(RECONNECT_POLL_MS);
        return 0;
    }
    if (r < 0) {
        smk_log("reading a request: %s", strerror((int)-r));
        *over = 1;
        return 0;
    }
    c->hup_since = -1;
    c->last_rx = smk_now_ms();
    return smk_stream_advance(&c->st, (size_t)r, m);
}

/* Receives and handles one step; returns 0 to go on, -1 when the
 * connection is over. */
static int step(struct conn *c)
{
    struct smk_msg m;
    int over = 0;
    int k = receive(c, &m, &over);
    if (over)
        return -1;
    if (k > 0)
        handle(c, &m);
    else if (k < 0)
        reply_error(c, m.hdr.id, -k, "bad frame: %s", m.why);
    if (c->peer_gone) {
        if (!c->serial)
            return -1;
        c->peer_gone = 0;
        smk_stream_reset(&c->st);
    }
    return k < 0 && m.frame_len == 0 && !c->serial ? -1 : 0;
}

static void serve(int fd, int serial, const struct smk_conn_ctx *ctx)
{
    struct conn c = {.fd = fd, .serial = serial, .ctx = ctx, .hup_since = -1};
    smk_stream_init(&c.st, serial);
    while (step(&c) == 0)
        ;
    smk_stream_free(&c.st);
    close(fd);
}

void smk_serve_stream(int fd, const struct smk_conn_ctx *ctx)
{
    serve(fd, 0, ctx);
}

void smk_serve_serial(int fd, const struct smk_conn_ctx *ctx)
{
    serve(fd, 1, ctx);
}
