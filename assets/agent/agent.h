/* Declarations shared by the agent's Linux-side files. */
#ifndef SMKA_AGENT_AGENT_H
#define SMKA_AGENT_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent-proto.h"

#define SMKA_DEFAULT_VSOCK_PORT 5000u
#define SMKA_DEFAULT_SERIAL_NAME "smk.agent"

/* io.c */
void smka_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* For a PID 1 started without a console: log to the kernel log instead. */
void smka_log_to_kmsg(void);
int64_t smka_now_ms(void);
uint64_t smka_boottime_ns(void);
/* Both return -ETIMEDOUT after timeout_ms (< 0: never), which needs a
 * non-blocking fd. */
ssize_t smka_read_some(int fd, void *buf, size_t len, int timeout_ms);
int smka_write_all(int fd, const void *buf, size_t len, int timeout_ms);
/* The same, but a hang-up is believed only after it has lasted hup_grace_ms
 * (virtio-serial reports one until the host's open reaches the guest). */
int smka_write_all_hup(int fd, const void *buf, size_t len, int timeout_ms, int hup_grace_ms);

/* How long a virtio-serial hang-up must last before the host is taken to be
 * gone, and how often it is looked at meanwhile. */
#define SERIAL_HUP_GRACE_MS 2000
#define SERIAL_HUP_RECHECK_MS 50
/* A virtio-serial port reports a hang-up until the host's "port open" reaches
 * the guest, and that control message travels on another virtqueue than the
 * data: with several vCPUs a request can arrive first. So a hang-up is only
 * believed once it has lasted. *since is when the current one began (-1:
 * none; the caller sets it back to -1 when the port is fine): this records
 * now as the start if there is none, and returns 1 once grace_ms have passed. */
int smka_hup_lasted(int64_t *since, int64_t now, int grace_ms);
void smka_sleep_ms(int ms);
/* Reads a whole file, or stdin for "-", refusing more than max bytes. */
int smka_slurp(const char *path, size_t max, uint8_t **data, size_t *len);

/* serve.c */
struct smka_serve_opts {
    unsigned vsock_port;
    const char *serial_name;
    const char *listen; /* tests: serve only this unix:PATH, touch nothing else */
};
int smka_serve(const struct smka_serve_opts *opts);

/* conn.c: serving one peer, in a process of its own. */
struct smka_conn_ctx {
    uint64_t ready_ns;
    int test_mode; /* SHUTDOWN ends the agent instead of the machine */
};
void smka_serve_stream(int fd, const struct smka_conn_ctx *ctx);
void smka_serve_serial(int fd, const struct smka_conn_ctx *ctx);

/* exec.c */
struct smka_exec_result {
    uint32_t status; /* enum smk_exec_status */
    uint32_t code;
    uint32_t flags;
    uint8_t *out, *err;
    size_t out_len, err_len;
};
/*
 * Runs the command of an EXEC request. Returns 0 with *res filled, or a
 * negative errno with why[] saying what failed: the command could not be
 * started, or -ECANCELED when the peer on peer_fd went away first (the
 * process group is then killed).
 */
int smka_exec(const struct smk_msg *req, int peer_fd, int peer_is_serial,
              struct smka_exec_result *res, char *why, size_t why_len);
void smka_exec_result_free(struct smka_exec_result *res);

/* A SPAWN request's process: started in a session of its own, its stdin,
 * stdout and stderr non-blocking pipes, or all three one pseudo-terminal
 * (in is its master, out a dup of it, err -1). */
struct smka_spawned {
    pid_t pid;
    int tty;
    int in, out, err;
};
int smka_spawn(const struct smk_msg *req, struct smka_spawned *sp, char *why, size_t why_len);

/* files.c: both return 0 or a negative errno with why[] filled. */
int smka_write_file(const char *path, uint32_t mode, const uint8_t *data, size_t len, char *why,
                    size_t why_len);
int smka_read_file(const char *path, uint8_t **data, size_t *len, int *truncated, char *why,
                   size_t why_len);

/* control.c: guest control requests (SET_TIME ... HOSTS), run in a worker;
 * READ_FILE with its flags. Both return 0 or a negative errno with why[]. */
int smka_control(const struct smk_msg *m, int test_mode, char *why, size_t why_len);
int smka_read_file2(const char *path, uint32_t flags, uint8_t **data, size_t *len, int *truncated,
                    char *why, size_t why_len);

/* Processes a connection may have spawned and not yet seen exit. */
#define SMKA_AGENT_MAX_PROCS 32

/* system.c */
void smka_setup_system(void);
void smka_open_std_fds(void);
/* Syncs and reboots or powers off; returns only on failure. */
void smka_power(uint32_t action);
/* PID 1 only: stops every other process first, then smka_power(). */
void smka_pid1_shutdown(uint32_t action);

/* client.c */
int smka_client_main(int argc, char **argv);

#endif
