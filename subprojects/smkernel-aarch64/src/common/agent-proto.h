/* GENERATED from smkernel-x86_64/src/common/agent-proto.h by sync-shared sha256:7d672bb5ab9d */
/*
 * The agent's wire protocol: frame layout, limits, and a pure encoder and
 * decoder (no I/O, no global state), so they can be unit-tested and fuzzed.
 * assets/agent/PROTOCOL.md is the normative description; this header mirrors
 * it. The one codec: the library's host-side client (agent-client.c) and the
 * guest agent (assets/agent/build compiles this file) both use it. Internal to
 * the library (hidden symbols), not installed.
 */
#ifndef SMK_AGENT_PROTO_H
#define SMK_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* The newest protocol version this code speaks; frames of version 1 are still
 * read and answered in version 1. */
#define SMK_PROTO_VERSION 2
#define SMK_PROTO_MIN_VERSION 1

/* Every frame starts with these four bytes. */
#define SMK_MAGIC "SMKA"
#define SMK_HEADER_SIZE 16

/* Limits of protocol version 1. A decoder rejects anything beyond them. */
#define SMK_MAX_PAYLOAD (16u << 20)
#define SMK_MAX_DATA (15u << 20)  /* file contents, exec stdin, read reply */
#define SMK_MAX_OUTPUT (4u << 20) /* exec stdout, and separately stderr */
#define SMK_MAX_ARGS 1024u
#define SMK_MAX_ENV 1024u
#define SMK_MAX_STRING 65536u      /* one argv or env string */
#define SMK_MAX_PATH 4095u         /* a path or cwd (PATH_MAX without the NUL) */
#define SMK_MAX_TEXT 1024u         /* an error message */
#define SMK_MAX_VERSION 64u        /* the agent version string */
#define SMK_MAX_GROUPS 64u         /* supplementary groups of a spawned process */
#define SMK_MAX_CHUNK (1u << 20)   /* PROC_OUTPUT data in one frame */
#define SMK_MAX_WINDOW (16u << 20) /* output credit of one process */
#define SMK_DEFAULT_WINDOW (256u << 10)
#define SMK_MAX_ENTROPY 4096u /* ENTROPY data */
#define SMK_MAX_NAME 255u     /* interface names, host names, addresses, DNS entries */
#define SMK_MAX_LIST 64u      /* DNS servers, search domains, hosts lines */

enum smk_type {
    SMK_PING = 0x0001,
    SMK_EXEC = 0x0002,
    SMK_WRITE_FILE = 0x0003,
    SMK_READ_FILE = 0x0004,
    SMK_SHUTDOWN = 0x0005,
    /* Version 2. */
    SMK_HELLO = 0x0006,
    SMK_SPAWN = 0x0010,
    SMK_STDIN = 0x0011,
    SMK_ACK = 0x0012, /* no reply unless it fails */
    SMK_SIGNAL = 0x0013,
    SMK_RESIZE = 0x0014,
    SMK_ATTACH = 0x0015,
    SMK_SET_TIME = 0x0020,
    SMK_ENTROPY = 0x0021,
    SMK_LINK = 0x0022,
    SMK_ADDR = 0x0023,
    SMK_ROUTE = 0x0024,
    SMK_DNS = 0x0025,
    SMK_HOSTNAME = 0x0026,
    SMK_HOSTS = 0x0027,

    SMK_REPLY = 0x8000, /* a reply's type is its request's type with this bit */
    SMK_PING_REPLY = SMK_REPLY | SMK_PING,
    SMK_EXEC_REPLY = SMK_REPLY | SMK_EXEC,
    SMK_WRITE_FILE_REPLY = SMK_REPLY | SMK_WRITE_FILE,
    SMK_READ_FILE_REPLY = SMK_REPLY | SMK_READ_FILE,
    SMK_SHUTDOWN_REPLY = SMK_REPLY | SMK_SHUTDOWN,
    SMK_HELLO_REPLY = SMK_REPLY | SMK_HELLO,
    SMK_SPAWN_REPLY = SMK_REPLY | SMK_SPAWN, /* also ATTACH's reply */
    SMK_STDIN_REPLY = SMK_REPLY | SMK_STDIN,
    SMK_SIGNAL_REPLY = SMK_REPLY | SMK_SIGNAL,
    SMK_RESIZE_REPLY = SMK_REPLY | SMK_RESIZE,
    SMK_ATTACH_REPLY = SMK_REPLY | SMK_ATTACH,
    SMK_CONTROL_REPLY = 0x8020, /* empty reply to SET_TIME ... HOSTS */
    /* Events of a process, carrying the id of the SPAWN or ATTACH request. */
    SMK_OUTPUT = 0x8030,
    SMK_EXIT = 0x8031,
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
#define SMK_READ_NOFOLLOW 0x1u /* READ_FILE flags: a symlink at the path is ELOOP */

#define SMK_SPAWN_TTY 0x1u      /* a pseudo-terminal for stdin, stdout and stderr */
#define SMK_SPAWN_USER 0x2u     /* switch to uid, gid and groups */
#define SMK_STDIN_CLOSE 0x1u    /* close stdin after this data (a TTY gets ^D) */
#define SMK_SIGNAL_GROUP 0x1u   /* the process group rather than the process */
#define SMK_ENTROPY_CREDIT 0x1u /* credit 8 bits of entropy per byte */
#define SMK_LINK_SET_STATE 0x1u
#define SMK_LINK_UP 0x2u
#define SMK_LINK_SET_MTU 0x4u
#define SMK_NET_ADD 0u
#define SMK_NET_DEL 1u

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
    SMK_ESRCH = 3,
    SMK_EAGAIN = 11,
    SMK_ENOBUFS = 105,
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

/* `count` little-endian u32 values. */
struct smk_u32list {
    uint32_t count;
    const uint8_t *raw;
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
        /* EXEC and SPAWN (the fields after stdin_data are SPAWN's). */
        struct {
            uint32_t timeout_ms; /* 0: no timeout */
            struct smk_strlist argv;
            struct smk_strlist env;
            struct smk_bytes cwd; /* empty: the agent's working directory */
            struct smk_bytes stdin_data;
            uint32_t flags; /* SMK_SPAWN_* */
            uint32_t uid, gid;
            struct smk_u32list groups;
            uint32_t rows, cols;
            uint32_t window; /* output credit in bytes; 0: SMK_DEFAULT_WINDOW */
        } exec;
        struct {
            uint32_t max_version; /* HELLO: the newest the client speaks */
        } hello;
        struct {
            uint32_t version; /* the version both will speak */
            uint32_t max_procs;
            uint32_t window;
            struct smk_bytes agent;
        } hello_reply;
        struct {
            uint32_t proc;
            uint32_t pid;
        } spawn_reply;
        /* STDIN, ACK, SIGNAL, RESIZE, ATTACH; OUTPUT and EXIT events. */
        struct {
            uint32_t proc;
            uint32_t a;            /* STDIN flags, ACK bytes, SIGNAL signo, RESIZE rows,
                              ATTACH window, OUTPUT stream (1, 2), EXIT status */
            uint32_t b;            /* SIGNAL flags, RESIZE cols, EXIT code */
            struct smk_bytes data; /* STDIN, OUTPUT */
        } proc;
        struct {
            uint64_t unix_ns;
        } set_time;
        struct {
            uint32_t flags;
            struct smk_bytes data;
        } entropy;
        struct {
            struct smk_bytes ifname;
            uint32_t flags; /* SMK_LINK_* */
            uint32_t mtu;
        } link;
        struct {
            uint32_t op; /* SMK_NET_ADD, SMK_NET_DEL */
            struct smk_bytes ifname;
            struct smk_bytes cidr; /* "10.0.0.2/24", "fd00::2/64" */
        } addr;
        struct {
            uint32_t op;
            struct smk_bytes dst;     /* "default" or a CIDR; "default6" for IPv6 */
            struct smk_bytes gateway; /* may be empty */
            struct smk_bytes ifname;  /* may be empty */
            uint32_t metric;
        } route;
        struct {
            struct smk_strlist servers, search, options;
        } dns;
        struct {
            struct smk_bytes name;
        } hostname;
        struct {
            struct smk_strlist lines; /* "ADDRESS NAME [NAME...]" */
        } hosts;
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
            uint32_t flags; /* SMK_READ_NOFOLLOW; appended in version 2, 0 if absent */
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
uint32_t smk_u32list_get(const struct smk_u32list *list, uint32_t i);

/* Offset of the first place in buf where a frame could start (the magic, or a
 * prefix of it at the very end); len if there is none. */
size_t smk_find_magic(const uint8_t *buf, size_t len);

/* Short name of a message type for logs, e.g. "PING"; "?" if unknown. */
const char *smk_type_name(uint16_t type);

/* A growable output buffer; start zeroed, release with smk_buf_free().
 * Frames are written with header version `version`, or SMK_PROTO_VERSION
 * when it is 0 (a reply carries its request's version). */
struct smk_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    uint16_t version;
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

struct smk_spawn_args {
    const char *const *argv;
    size_t argc;
    const char *const *env;
    size_t envc;
    const char *cwd;
    uint32_t flags; /* SMK_SPAWN_* */
    uint32_t uid, gid;
    const uint32_t *groups;
    size_t ngroups;
    uint32_t rows, cols;
    uint32_t window;
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
int smk_encode_read_file2(struct smk_buf *b, uint32_t id, const char *path, uint32_t flags);
int smk_encode_read_reply(struct smk_buf *b, uint32_t id, uint32_t flags, const void *data,
                          size_t len);
int smk_encode_shutdown(struct smk_buf *b, uint32_t id, uint32_t action);
int smk_encode_hello(struct smk_buf *b, uint32_t id, uint32_t max_version);
int smk_encode_hello_reply(struct smk_buf *b, uint32_t id, uint32_t version, uint32_t max_procs,
                           uint32_t window, const char *agent);
int smk_encode_spawn(struct smk_buf *b, uint32_t id, const struct smk_spawn_args *args);
/* SPAWN_REPLY or ATTACH_REPLY. */
int smk_encode_spawn_reply(struct smk_buf *b, uint16_t type, uint32_t id, uint32_t proc,
                           uint32_t pid);
/* STDIN, ACK, SIGNAL, RESIZE, ATTACH, OUTPUT, EXIT: the fields of u.proc that
 * the type has (see smk_msg). */
int smk_encode_proc(struct smk_buf *b, uint16_t type, uint32_t id, uint32_t proc, uint32_t a,
                    uint32_t bv, const void *data, size_t len);
int smk_encode_set_time(struct smk_buf *b, uint32_t id, uint64_t unix_ns);
int smk_encode_entropy(struct smk_buf *b, uint32_t id, uint32_t flags, const void *data,
                       size_t len);
int smk_encode_link(struct smk_buf *b, uint32_t id, const char *ifname, uint32_t flags,
                    uint32_t mtu);
int smk_encode_addr(struct smk_buf *b, uint32_t id, uint32_t op, const char *ifname,
                    const char *cidr);
int smk_encode_route(struct smk_buf *b, uint32_t id, uint32_t op, const char *dst,
                     const char *gateway, const char *ifname, uint32_t metric);
int smk_encode_dns(struct smk_buf *b, uint32_t id, const char *const *servers, size_t nservers,
                   const char *const *search, size_t nsearch, const char *const *options,
                   size_t noptions);
int smk_encode_hostname(struct smk_buf *b, uint32_t id, const char *name);
int smk_encode_hosts(struct smk_buf *b, uint32_t id, const char *const *lines, size_t n);
/* Whether a request type needs protocol version 2. */
int smk_type_is_v2(uint16_t type);
/* The message is cut at SMK_MAX_TEXT bytes. */
int smk_encode_error(struct smk_buf *b, uint32_t id, uint32_t code, const char *message);

#endif
