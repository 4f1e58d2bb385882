/*
 * The agent's wire protocol: frame layout, limits, and a pure encoder and
 * decoder (no I/O, no global state), so they can be unit-tested and fuzzed.
 * PROTOCOL.md is the normative description; this header mirrors it.
 */
#ifndef SMK_AGENT_PROTO_H
#define SMK_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define SMK_PROTO_VERSION 1

/* Every frame starts with these four bytes. */
#define SMK_MAGIC "SMKA"
#define SMK_HEADER_SIZE 16

/* Limits of protocol version 1. A decoder rejects anything beyond them. */
#define SMK_MAX_PAYLOAD (16u << 20)
#define SMK_MAX_DATA (15u << 20)  /* file contents, exec stdin, read reply */
#define SMK_MAX_OUTPUT (4u << 20) /* exec stdout, and separately stderr */
#define SMK_MAX_ARGS 1024u
#define SMK_MAX_ENV 1024u
#define SMK_MAX_STRING 65536u /* one argv or env string */
#define SMK_MAX_PATH 4095u    /* a path or cwd (PATH_MAX without the NUL) */
#define SMK_MAX_TEXT 1024u    /* an error message */
#define SMK_MAX_VERSION 64u   /* the agent version string */

enum smk_type {
    SMK_PING = 0x0001,
    SMK_EXEC = 0x0002,
    SMK_WRITE_FILE = 0x0003,
    SMK_READ_FILE = 0x0004,
    SMK_SHUTDOWN = 0x0005,

    SMK_REPLY = 0x8000, /* a reply's type is its request's type with this bit */
    SMK_PING_REPLY = SMK_REPLY | SMK_PING,
    SMK_EXEC_REPLY = SMK_REPLY | SMK_EXEC,
    SMK_WRITE_FILE_REPLY = SMK_REPLY | SMK_WRITE_FILE,
    SMK_READ_FILE_REPLY = SMK_REPLY | SMK_READ_FILE,
    SMK_SHUTDOWN_REPLY = SMK_REPLY | SMK_SHUTDOWN,
    SMK_ERROR = 0xffff,
};

enum smk_exec_status {
    SMK_EXITED = 0,    /* code is the exit status */
    SMK_SIGNALED = 1,  /* code is the signal number */
    SMK_TIMED_OUT = 2, /* the process group was killed; code is the signal used */
};

#define SMK_EXEC_STDOUT_TRUNCATED 0x1u
#define SMK_EXEC_STDERR_TRUNCATED 0x2u
#define SMK_READ_TRUNCATED 0x1u

enum smk_shutdown_action {
    SMK_SHUTDOWN_REBOOT = 0,
    SMK_SHUTDOWN_POWEROFF = 1,
};

/*
 * Error codes carried by ERROR replies are Linux errno numbers. The ones the
 * protocol layer itself produces are spelled out here so this file does not
 * depend on the compiling platform's <errno.h> numbering.
 */
enum smk_errno {
    SMK_E2BIG = 7,
    SMK_ENOMEM = 12,
    SMK_EINVAL = 22,
    SMK_ENAMETOOLONG = 36,
    SMK_ENOSYS = 38,
    SMK_EPROTO = 71,
    SMK_EBADMSG = 74,
    SMK_EMSGSIZE = 90,
    SMK_EPROTONOSUPPORT = 93,
    SMK_ETIMEDOUT = 110,
};

/* A byte range inside a decoded frame. Not NUL-terminated. */
struct smk_bytes {
    const uint8_t *ptr;
    uint32_t len;
};

/* `count` encoded strings; walk them with smk_strlist_next(). */
struct smk_strlist {
    uint32_t count;
    struct smk_bytes raw;
};

struct smk_header {
    uint16_t version;
    uint16_t type;
    uint32_t id;
    uint32_t len; /* payload length */
};

struct smk_msg {
    struct smk_header hdr; /* valid whenever the magic matched */
    /*
     * Header plus payload length once the header is trustworthy, so a frame
     * with a bad payload can be skipped; 0 when the stream cannot be
     * resynchronised from this frame.
     */
    size_t frame_len;
    const char *why; /* static text saying what was wrong, on error */
    union {
        struct {
            uint32_t proto;
            uint64_t uptime_ns;
            uint64_t ready_ns;
            struct smk_bytes version;
        } ping_reply;
        struct {
            uint32_t timeout_ms; /* 0: no timeout */
            struct smk_strlist argv;
            struct smk_strlist env;
            struct smk_bytes cwd; /* empty: the agent's working directory */
            struct smk_bytes stdin_data;
        } exec;
        struct {
            uint32_t status; /* enum smk_exec_status */
            uint32_t code;
            uint32_t flags;
            struct smk_bytes out;
            struct smk_bytes err;
        } exec_reply;
        struct {
            struct smk_bytes path;
            uint32_t mode;
            struct smk_bytes data;
        } write_file;
        struct {
            struct smk_bytes path;
        } read_file;
        struct {
            uint32_t flags;
            struct smk_bytes data;
        } read_reply;
        struct {
            uint32_t action; /* enum smk_shutdown_action */
        } shutdown;
        struct {
            uint32_t code; /* Linux errno number */
            struct smk_bytes message;
        } error;
    } u;
};

/*
 * Decodes the frame at the start of buf[0..len). Pointers in *msg point into
 * buf. Returns:
 *   > 0  a complete, valid frame of that many bytes was decoded;
 *   0    the bytes so far are a valid prefix; more are needed (once the header
 *        is complete, msg->frame_len says how many in total);
 *   < 0  minus an SMK_E* code; msg->why explains, msg->frame_len says whether
 *        the frame can be skipped (and msg->hdr.id is set if the magic matched).
 * Never reads outside buf and never allocates.
 */
int smk_decode(const uint8_t *buf, size_t len, struct smk_msg *msg);

/*
 * Steps through a decoded string list: *pos starts at 0. Returns 1 and sets
 * *out to the next string, or 0 at the end.
 */
int smk_strlist_next(const struct smk_strlist *list, uint32_t *pos, struct smk_bytes *out);

/* Offset of the first place in buf where a frame could start (the magic, or a
 * prefix of it at the very end); len if there is none. */
size_t smk_find_magic(const uint8_t *buf, size_t len);

/* Short name of a message type for logs, e.g. "PING"; "?" if unknown. */
const char *smk_type_name(uint16_t type);

/* A growable output buffer; start zeroed, release with smk_buf_free(). */
struct smk_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void smk_buf_free(struct smk_buf *b);

struct smk_exec_args {
    const char *const *argv;
    size_t argc;
    const char *const *env; /* "NAME=value" */
    size_t envc;
    const char *cwd; /* NULL or "": the agent's working directory */
    const void *stdin_data;
    size_t stdin_len;
    uint32_t timeout_ms;
};

/*
 * Encoders append one frame to *b. Each returns 0, or minus an SMK_E* code
 * (SMK_ENOMEM, or the code the decoder would reject the frame with) and then
 * leaves *b unchanged: they never produce a frame smk_decode() refuses.
 */
int smk_encode_empty(struct smk_buf *b, uint16_t type, uint32_t id); /* PING, empty replies */
int smk_encode_ping_reply(struct smk_buf *b, uint32_t id, uint64_t uptime_ns, uint64_t ready_ns,
                          const char *version);
int smk_encode_exec(struct smk_buf *b, uint32_t id, const struct smk_exec_args *args);
int smk_encode_exec_reply(struct smk_buf *b, uint32_t id, uint32_t status, uint32_t code,
                          uint32_t flags, const void *out, size_t out_len, const void *err,
                          size_t err_len);
int smk_encode_write_file(struct smk_buf *b, uint32_t id, const char *path, uint32_t mode,
                          const void *data, size_t len);
int smk_encode_read_file(struct smk_buf *b, uint32_t id, const char *path);
int smk_encode_read_reply(struct smk_buf *b, uint32_t id, uint32_t flags, const void *data,
                          size_t len);
int smk_encode_shutdown(struct smk_buf *b, uint32_t id, uint32_t action);
/* The message is cut at SMK_MAX_TEXT bytes. */
int smk_encode_error(struct smk_buf *b, uint32_t id, uint32_t code, const char *message);

#endif
