/* GENERATED from smkernel-x86_64/include/smkernel-agent.h by sync-shared sha256:f4fb0ebb0a04 */
/*
 * smkernel-agent: the host-side client of supermachine-agent, the agent inside the guest.
 * Included by <smkernel.h>; arch-independent. The wire protocol it speaks is
 * assets/agent/PROTOCOL.md (version 2, and version 1 with an older agent).
 *
 * Conventions, for every function below:
 *  - returns 0 (or what its comment says) or a negative errno: -ETIMEDOUT when timeout_ms
 *    passed, -ECONNRESET when the agent closed the connection, -EPROTO for a reply that
 *    breaks the protocol, and for an ERROR reply the errno the agent sent (-ENOENT for a
 *    command not found, ...), its message then in smk_agent_error();
 *  - timeout_ms < 0 waits forever, 0 does not wait for anything that is not there;
 *  - never prints, never aborts, keeps no global state, installs no signal handler (a peer
 *    that hangs up gives -EPIPE: writes use MSG_NOSIGNAL on sockets; on a caller's fd that is
 *    not a socket, ignore SIGPIPE yourself).
 *
 * Thread safety: a `struct smk_agent` is not thread-safe; use one from one thread at a time
 * (or lock around it). Distinct handles are independent. A handle multiplexes: any number of
 * processes may stream on one while other requests are made on it.
 *
 * Example (errors unchecked for brevity):
 *
 *     struct smk_agent *a;
 *     smk_agent_connect("unix:/run/vm/agent.sock", 5000, &a);     // qemu virtio-serial
 *     const char *argv[] = {"sh", "-c", "cat; echo done >&2"};
 *     struct smk_agent_cmd cmd = {.argv = argv, .argc = 3};
 *     uint32_t proc, pid;
 *     smk_agent_spawn(a, &cmd, &proc, &pid, 5000);
 *     smk_agent_stdin(a, proc, "hello\n", 6, 1, 5000);            // then end of file
 *     struct smk_agent_event ev;
 *     while (smk_agent_next_event(a, &ev, -1) == 0 && ev.type == SMK_AGENT_OUTPUT)
 *         fwrite(ev.data, 1, ev.len, ev.stream == 1 ? stdout : stderr);
 *     // ev.type == SMK_AGENT_EXIT: ev.status, ev.code
 *     smk_agent_close(a);
 *
 * In an event loop, poll smk_agent_fd(a) for POLLIN and call smk_agent_poll_event() until
 * it returns 0. Requests (stdin, signal, ...) block for their reply, up to timeout_ms.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_AGENT_H
#define SMKERNEL_AGENT_H

#include <stddef.h>
#include <stdint.h>

#ifndef SMK_API
#if !(defined(__GNUC__) || defined(__clang__))
#define SMK_API
#else
#define SMK_API __attribute__((visibility("default")))
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Where the agent listens: vsock port, and the name of the virtio-serial port
 * (qemu: -device virtserialport,chardev=ID,name=smk.agent). */
#define SMK_AGENT_VSOCK_PORT 5000u
#define SMK_AGENT_SERIAL_NAME "smk.agent"

struct smk_agent;

/*
 * Connects and negotiates the protocol version (a HELLO exchange; an agent that speaks only
 * version 1 is then driven in version 1, where process requests are -ENOSYS).
 * addr: "unix:PATH" (a qemu chardev socket of the virtio-serial port, or any stream socket
 * the agent serves), "vsock:CID:PORT", or "hvsock:PATH:PORT" (the hybrid vsock unix socket
 * of Firecracker and Cloud Hypervisor: "CONNECT PORT\n", answered "OK N\n").
 * A "unix:" socket is treated as a virtio-serial line: frames of other clients and garbage
 * are skipped. While the agent is not up yet (the guest boots), the HELLO is repeated every
 * 2 s until timeout_ms. -EINVAL: bad addr; -ENOMEM; errors of socket()/connect().
 */
SMK_API int smk_agent_connect(const char *addr, int timeout_ms, struct smk_agent **out);
SMK_API int smk_agent_connect_unix(const char *path, int timeout_ms, struct smk_agent **out);
SMK_API int smk_agent_connect_vsock(uint32_t cid, uint32_t port, int timeout_ms,
                                    struct smk_agent **out);
SMK_API int smk_agent_connect_hvsock(const char *path, uint32_t port, int timeout_ms,
                                     struct smk_agent **out);
/* A connected stream of the caller's (socket, pipe pair's one end, character device). The
 * handle owns fd from then on, also on failure (it is closed). */
SMK_API int smk_agent_from_fd(int fd, int timeout_ms, struct smk_agent **out);
/* Closes the connection. The agent kills the processes of a socket connection; on
 * virtio-serial they stay, detached, for smk_agent_attach() by a later client. */
SMK_API void smk_agent_close(struct smk_agent *a);

/* The descriptor, to poll for POLLIN in an event loop; then call smk_agent_poll_event(). */
SMK_API int smk_agent_fd(const struct smk_agent *a);
/* The protocol version agreed at connect: 1 or 2. */
SMK_API int smk_agent_proto(const struct smk_agent *a);
/* The last ERROR message the agent sent ("" if none). Valid until the next call. */
SMK_API const char *smk_agent_error(const struct smk_agent *a);

struct smk_agent_info {
    uint32_t proto;     /* the version the agent speaks at most */
    uint64_t uptime_ns; /* guest CLOCK_BOOTTIME now */
    uint64_t ready_ns;  /* guest uptime when the agent began serving */
    char version[65];   /* agent version */
};
SMK_API int smk_agent_ping(struct smk_agent *a, struct smk_agent_info *info, int timeout_ms);

/* A command. Batch exec uses argv, env, cwd, stdin_data and cmd_timeout_ms; spawn uses the
 * rest (stdin is streamed with smk_agent_stdin()). */
#define SMK_AGENT_TTY 0x1u  /* spawn on a pseudo-terminal of rows x cols */
#define SMK_AGENT_USER 0x2u /* run as uid/gid with groups (needs the agent to be root) */
struct smk_agent_cmd {
    const char *const *argv; /* argc >= 1, argv[0] looked up in PATH unless it has a '/' */
    size_t argc;
    const char *const *env; /* "NAME=value", replacing the agent's same-named entries */
    size_t envc;
    const char *cwd; /* NULL: "/" */
    uint32_t flags;  /* SMK_AGENT_TTY, SMK_AGENT_USER */
    uint32_t uid, gid;
    const uint32_t *groups; /* supplementary groups, at most 64 */
    size_t ngroups;
    uint16_t rows, cols;    /* initial terminal size; 0: the kernel's default */
    uint32_t window;        /* output bytes in flight before the agent waits; 0: 256 KiB */
    const void *stdin_data; /* batch exec: fed to stdin, then closed (at most 15 MiB) */
    size_t stdin_len;
    uint32_t cmd_timeout_ms; /* batch exec: the agent kills it after this; 0: none */
};

enum smk_agent_status {
    SMK_AGENT_EXITED = 0,    /* code: exit status */
    SMK_AGENT_SIGNALED = 1,  /* code: the signal */
    SMK_AGENT_TIMED_OUT = 2, /* batch exec only: killed after cmd_timeout_ms; code 9 */
};
#define SMK_AGENT_STDOUT_TRUNCATED 0x1u
#define SMK_AGENT_STDERR_TRUNCATED 0x2u

struct smk_agent_exec_result {
    int status; /* enum smk_agent_status */
    int code;
    unsigned flags;     /* SMK_AGENT_*_TRUNCATED: more than 4 MiB of that output was discarded */
    uint8_t *out, *err; /* malloc'ed, NUL-terminated for convenience */
    size_t out_len, err_len;
};
/* Runs a command to completion and returns its output (batch). */
SMK_API int smk_agent_exec(struct smk_agent *a, const struct smk_agent_cmd *cmd,
                           struct smk_agent_exec_result *res, int timeout_ms);
SMK_API void smk_agent_exec_result_free(struct smk_agent_exec_result *res);

/* Starts a process (protocol 2); *proc names it in the calls below, *pid is its guest pid.
 * Its stdout and stderr (or the terminal's output) arrive as events. -EAGAIN: the agent's
 * limit of processes per connection (32) is reached. */
SMK_API int smk_agent_spawn(struct smk_agent *a, const struct smk_agent_cmd *cmd, uint32_t *proc,
                            uint32_t *pid, int timeout_ms);
/* Takes over the events of a process spawned by an earlier client (virtio-serial). */
SMK_API int smk_agent_attach(struct smk_agent *a, uint32_t proc, uint32_t *pid, int timeout_ms);
/* Writes to its stdin; returns once the agent has written it all into the process's stdin
 * (so this is flow-controlled). close_after: then end of file (on a terminal: ^D). */
SMK_API int smk_agent_stdin(struct smk_agent *a, uint32_t proc, const void *data, size_t len,
                            int close_after, int timeout_ms);
/* group: to its process group. */
SMK_API int smk_agent_signal(struct smk_agent *a, uint32_t proc, int signo, int group,
                             int timeout_ms);
SMK_API int smk_agent_resize(struct smk_agent *a, uint32_t proc, uint16_t rows, uint16_t cols,
                             int timeout_ms);

enum smk_agent_event_type { SMK_AGENT_OUTPUT = 1, SMK_AGENT_EXIT = 2 };
struct smk_agent_event {
    int type; /* enum smk_agent_event_type */
    uint32_t proc;
    int stream;          /* OUTPUT: 1 stdout (and a terminal's output), 2 stderr */
    const uint8_t *data; /* OUTPUT: valid until the next call on the handle */
    size_t len;
    int status; /* EXIT: SMK_AGENT_EXITED or SMK_AGENT_SIGNALED */
    int code;
};
/* The event loop step: reads what the fd has without blocking, returns 1 with an event, 0 if
 * there is none yet. Taking an OUTPUT event grants the agent that many bytes more. */
SMK_API int smk_agent_poll_event(struct smk_agent *a, struct smk_agent_event *ev);
/* The blocking form: waits up to timeout_ms for the next event (-ETIMEDOUT). */
SMK_API int smk_agent_next_event(struct smk_agent *a, struct smk_agent_event *ev, int timeout_ms);
/* Waits for proc to exit, discarding its output (other processes' events stay queued). */
SMK_API int smk_agent_wait(struct smk_agent *a, uint32_t proc, int *status, int *code,
                           int timeout_ms);

/* Files. write: atomic replace, mode applied exactly, at most 15 MiB. read: at most 15 MiB
 * (*truncated says more was there); *data is malloc'ed. flags: SMK_AGENT_NOFOLLOW makes a
 * symlink at path -ELOOP. */
#define SMK_AGENT_NOFOLLOW 0x1u
SMK_API int smk_agent_write_file(struct smk_agent *a, const char *path, uint32_t mode,
                                 const void *data, size_t len, int timeout_ms);
SMK_API int smk_agent_read_file(struct smk_agent *a, const char *path, unsigned flags, void **data,
                                size_t *len, int *truncated, int timeout_ms);

/* Guest control (protocol 2). */
SMK_API int smk_agent_set_time(struct smk_agent *a, uint64_t unix_ns, int timeout_ms);
/* Mixes data (at most 4096 bytes, may be empty) into the guest's pool, crediting 8 bits a
 * byte when credit is set, and reseeds the CRNG. */
SMK_API int smk_agent_reseed(struct smk_agent *a, const void *data, size_t len, int credit,
                             int timeout_ms);
/* up: 1 up, 0 down, -1 unchanged; mtu 0: unchanged. */
SMK_API int smk_agent_link(struct smk_agent *a, const char *ifname, int up, uint32_t mtu,
                           int timeout_ms);
/* cidr: "10.0.2.15/24", "fd00::2/64". */
SMK_API int smk_agent_addr(struct smk_agent *a, int del, const char *ifname, const char *cidr,
                           int timeout_ms);
/* dst: a CIDR, "default" (IPv4, or the gateway's family) or "default6"; gateway and ifname
 * may be NULL (not both); metric 0: the kernel's default. */
SMK_API int smk_agent_route(struct smk_agent *a, int del, const char *dst, const char *gateway,
                            const char *ifname, uint32_t metric, int timeout_ms);
/* Writes /etc/resolv.conf. */
SMK_API int smk_agent_dns(struct smk_agent *a, const char *const *servers, size_t nservers,
                          const char *const *search, size_t nsearch, const char *const *options,
                          size_t noptions, int timeout_ms);
SMK_API int smk_agent_hostname(struct smk_agent *a, const char *name, int timeout_ms);
/* Each line "ADDRESS NAME [NAME...]" is made true in /etc/hosts. */
SMK_API int smk_agent_hosts_add(struct smk_agent *a, const char *const *lines, size_t n,
                                int timeout_ms);
/* Reboots (poweroff 0: what ends a qemu VM with -no-reboot) or powers off the guest, once
 * the reply is in. */
SMK_API int smk_agent_shutdown(struct smk_agent *a, int poweroff, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* SMKERNEL_AGENT_H */
