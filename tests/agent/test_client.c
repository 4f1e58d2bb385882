/*
 * The library's agent client (smkernel-agent.h) against the host-built agent served on a unix
 * socket (serve --listen unix:PATH, or serial-unix:PATH for the virtio-serial code path):
 * protocol v2 processes, streams, flow control, PTYs, signals, multiplexing, and v1 frames.
 * Usage: test-agent-client AGENT (the supermachine-agent executable).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent-proto.h"
#include "smkernel-agent.h"
#include "../run-suite.h"

static const char *agent_exe;
static char dir[64];
static char sock[128], addr[160], serial_sock[128], serial_addr[160];
static pid_t agent_pid, serial_pid;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pid_t start_agent(const char *listen, const char *path)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* Under AddressSanitizer freed memory sits in a quarantine (256 MiB by default),
         * which would hide the agent's own bound on what it holds: keep it small. */
        char opts[1024];
        const char *asan = getenv("ASAN_OPTIONS");
        snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=1", asan ? asan : "",
                 asan && *asan ? ":" : "");
        setenv("ASAN_OPTIONS", opts, 1);
        char *wrapper = getenv("SMK_TEST_WRAPPER");
        if (wrapper && *wrapper) {
            execlp(wrapper, wrapper, agent_exe, "serve", "--listen", listen, (char *)NULL);
            _exit(127);
        }
        execl(agent_exe, agent_exe, "serve", "--listen", listen, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && access(path, F_OK) != 0; i++)
        usleep(20000);
    return pid;
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/smk-client-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sock, sizeof(sock), "%s/a.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s", sock);
    snprintf(serial_sock, sizeof(serial_sock), "%s/s.sock", dir);
    snprintf(serial_addr, sizeof(serial_addr), "serial-unix:%s", serial_sock);
    agent_pid = start_agent(addr, sock);
    serial_pid = start_agent(serial_addr, serial_sock);
}

static void teardown(void)
{
    kill(agent_pid, SIGTERM);
    kill(serial_pid, SIGTERM);
    waitpid(agent_pid, NULL, 0);
    waitpid(serial_pid, NULL, 0);
    unlink(sock);
    unlink(serial_sock);
    rmdir(dir);
}

static struct smk_agent *connect_to(const char *path)
{
    struct smk_agent *a = NULL;
    int r = smk_agent_connect_unix(path, 10000, &a);
    ck_assert_msg(r == 0, "connect %s: %s", path, strerror(-r));
    return a;
}

/* Collects a process's output until it exits. */
struct outcome {
    char *out, *err;
    size_t out_len, err_len;
    int status, code;
};

static void collect(struct smk_agent *a, uint32_t proc, struct outcome *o, int timeout_ms)
{
    memset(o, 0, sizeof(*o));
    for (;;) {
        struct smk_agent_event ev;
        int r = smk_agent_next_event(a, &ev, timeout_ms);
        ck_assert_msg(r == 0, "next_event: %s", strerror(-r));
        ck_assert_uint_eq(ev.proc, proc);
        if (ev.type == SMK_AGENT_EXIT) {
            o->status = ev.status;
            o->code = ev.code;
            return;
        }
        char **buf = ev.stream == 1 ? &o->out : &o->err;
        size_t *len = ev.stream == 1 ? &o->out_len : &o->err_len;
        char *grown = realloc(*buf, *len + ev.len + 1);
        ck_assert_ptr_nonnull(grown);
        *buf = grown;
        memcpy(*buf + *len, ev.data, ev.len);
        *len += ev.len;
        (*buf)[*len] = '\0';
    }
}

static void outcome_free(struct outcome *o)
{
    free(o->out);
    free(o->err);
}

static uint32_t spawn(struct smk_agent *a, struct smk_agent_cmd *cmd)
{
    uint32_t proc = 0, pid = 0;
    int r = smk_agent_spawn(a, cmd, &proc, &pid, 10000);
    ck_assert_msg(r == 0, "spawn: %s (%s)", strerror(-r), smk_agent_error(a));
    ck_assert_uint_gt(pid, 0);
    return proc;
}

START_TEST(hello_agrees_on_version_2)
{
    struct smk_agent *a = connect_to(sock);
    ck_assert_int_eq(smk_agent_proto(a), 2);
    struct smk_agent_info info;
    ck_assert_int_eq(smk_agent_ping(a, &info, 5000), 0);
    ck_assert_uint_eq(info.proto, 2);
    ck_assert(info.uptime_ns >= info.ready_ns);
    smk_agent_close(a);
}
END_TEST

/* A client of version 1 sends version-1 frames and gets version-1 replies. */
START_TEST(v1_request_is_answered_in_v1)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, sock);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    struct smk_buf b = {.version = 1};
    ck_assert_int_eq(smk_encode_empty(&b, SMK_PING, 77), 0);
    /* A version-2 request in a version-1 frame is refused, not guessed at. */
    ck_assert_int_eq(smk_encode_set_time(&b, 78, 1), -SMK_ENOSYS);
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    uint8_t buf[256];
    size_t got = 0;
    struct smk_msg m;
    int k;
    while ((k = smk_decode(buf, got, &m)) == 0) {
        ssize_t n = read(fd, buf + got, sizeof(buf) - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert_int_gt(k, 0);
    ck_assert_uint_eq(m.hdr.type, SMK_PING_REPLY);
    ck_assert_uint_eq(m.hdr.version, 1);
    ck_assert_uint_eq(m.hdr.id, 77);
    smk_buf_free(&b);
    close(fd);
}
END_TEST

START_TEST(spawn_streams_both_outputs_and_the_exit)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 7"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 3};
    uint32_t proc = spawn(a, &cmd);
    struct outcome o;
    collect(a, proc, &o, 10000);
    ck_assert_str_eq(o.out, "out\n");
    ck_assert_str_eq(o.err, "err\n");
    ck_assert_int_eq(o.status, SMK_AGENT_EXITED);
    ck_assert_int_eq(o.code, 7);
    outcome_free(&o);
    smk_agent_close(a);
}
END_TEST

START_TEST(spawn_of_a_missing_command_fails_with_enoent)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"/nonexistent/cmd"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 1};
    uint32_t proc, pid;
    ck_assert_int_eq(smk_agent_spawn(a, &cmd, &proc, &pid, 5000), -ENOENT);
    ck_assert_ptr_nonnull(strstr(smk_agent_error(a), "/nonexistent/cmd"));
    smk_agent_close(a);
}
END_TEST

/* 8 MiB through stdin and back out of cat: both directions flow-controlled. */
START_TEST(stdin_streams_through_cat)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"cat"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 1};
    uint32_t proc = spawn(a, &cmd);
    size_t len = 8u << 20;
    uint8_t *data = malloc(len);
    for (size_t i = 0; i < len; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    /* Written in pieces while the output is read, as an event loop would. */
    size_t sent = 0, back = 0;
    uint8_t *echo = malloc(len);
    int exited = 0;
    while (!exited) {
        if (sent < len) {
            size_t n = len - sent < (256u << 10) ? len - sent : (256u << 10);
            int r = smk_agent_stdin(a, proc, data + sent, n, sent + n == len, 10000);
            ck_assert_msg(r == 0, "stdin: %s", strerror(-r));
            sent += n;
        }
        struct smk_agent_event ev;
        int r;
        while ((r = smk_agent_poll_event(a, &ev)) == 1) {
            if (ev.type == SMK_AGENT_EXIT) {
                ck_assert_int_eq(ev.code, 0);
                exited = 1;
                break;
            }
            ck_assert_uint_le(back + ev.len, len);
            memcpy(echo + back, ev.data, ev.len);
            back += ev.len;
        }
        ck_assert_int_ge(r, 0);
        if (sent == len && !exited) {
            r = smk_agent_next_event(a, &ev, 10000);
            ck_assert_int_eq(r, 0);
            if (ev.type == SMK_AGENT_EXIT) {
                exited = 1;
            } else {
                memcpy(echo + back, ev.data, ev.len);
                back += ev.len;
            }
        }
    }
    ck_assert_uint_eq(back, len);
    ck_assert(memcmp(echo, data, len) == 0);
    free(data);
    free(echo);
    smk_agent_close(a);
}
END_TEST

static long peak_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

/* The connection's process in the agent: the one child of the server. */
static pid_t conn_process(pid_t server)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)server, (int)server);
    FILE *f = fopen(path, "r");
    int pid = -1;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = -1;
        fclose(f);
    }
    return pid;
}

/* 64 MiB from a fast producer to a slow reader: the agent holds a window, not the stream. */
START_TEST(fast_producer_is_held_to_the_window)
{
    /* Under qemu-user the process is the emulator, whose own memory counts too. */
    const char *w = getenv("SMK_TEST_WRAPPER");
    long bound_kib = w && *w ? 64 * 1024 : 16 * 1024;
#if defined(__SANITIZE_ADDRESS__)
    bound_kib += 128 * 1024; /* ASan's shadow and allocator; the growth check below holds */
#endif
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"head", "-c", "67108864", "/dev/zero"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 4, .window = 256u << 10};
    uint32_t proc = spawn(a, &cmd);
    ck_assert_uint_gt(proc, 0);
    pid_t conn = conn_process(agent_pid);
    ck_assert_int_gt(conn, 0);
    long before = peak_kib(conn);
    usleep(500000); /* the producer runs ahead; nothing is taken */
    size_t total = 0;
    for (;;) {
        struct smk_agent_event ev;
        ck_assert_int_eq(smk_agent_next_event(a, &ev, 20000), 0);
        if (ev.type == SMK_AGENT_EXIT) {
            ck_assert_int_eq(ev.code, 0);
            break;
        }
        total += ev.len;
    }
    ck_assert_uint_eq(total, 64u << 20);
    long hwm = peak_kib(conn);
    fprintf(stderr,
            "agent connection process peak RSS: %ld KiB after the spawn, %ld KiB after "
            "64 MiB\n",
            before, hwm);
    ck_assert_int_gt(hwm, 0);
    ck_assert_int_lt(hwm, bound_kib);
    /* What streaming added, whatever the build (sanitizers have a larger base). */
    ck_assert_int_lt(hwm - before, 8 * 1024);
    smk_agent_close(a);
}
END_TEST

START_TEST(sigterm_is_reported_as_a_signal)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"sleep", "100"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 2};
    uint32_t proc = spawn(a, &cmd);
    ck_assert_int_eq(smk_agent_signal(a, proc, SIGTERM, 0, 5000), 0);
    int status = -1, code = -1;
    ck_assert_int_eq(smk_agent_wait(a, proc, &status, &code, 10000), 0);
    ck_assert_int_eq(status, SMK_AGENT_SIGNALED);
    ck_assert_int_eq(code, SIGTERM);
    ck_assert_int_eq(smk_agent_signal(a, proc, SIGTERM, 0, 5000), -ESRCH);
    smk_agent_close(a);
}
END_TEST

/* Reads terminal output until it contains want. */
static void expect_output(struct smk_agent *a, const char *want, char *seen, size_t seen_size)
{
    size_t len = strlen(seen);
    double until = now_s() + 10;
    while (!strstr(seen, want)) {
        ck_assert_msg(now_s() < until, "no \"%s\" in the terminal output: \"%s\"", want, seen);
        struct smk_agent_event ev;
        ck_assert_int_eq(smk_agent_next_event(a, &ev, 10000), 0);
        ck_assert_int_eq(ev.type, SMK_AGENT_OUTPUT);
        size_t n = ev.len < seen_size - 1 - len ? ev.len : seen_size - 1 - len;
        memcpy(seen + len, ev.data, n);
        len += n;
        seen[len] = '\0';
    }
}

START_TEST(interactive_shell_on_a_pty)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"sh", "-i"};
    const char *env[] = {"PS1=smk$ ", "ENV=/dev/null"};
    struct smk_agent_cmd cmd = {.argv = argv,
                                .argc = 2,
                                .env = env,
                                .envc = 2,
                                .flags = SMK_AGENT_TTY,
                                .rows = 24,
                                .cols = 80};
    uint32_t proc = spawn(a, &cmd);
    char seen[65536] = "";
    expect_output(a, "smk$ ", seen, sizeof(seen));
    const char *line = "stty size; echo $((6*7))\n";
    ck_assert_int_eq(smk_agent_stdin(a, proc, line, strlen(line), 0, 5000), 0);
    expect_output(a, "24 80", seen, sizeof(seen));
    expect_output(a, "42", seen, sizeof(seen));
    ck_assert_int_eq(smk_agent_resize(a, proc, 40, 100, 5000), 0);
    seen[0] = '\0';
    line = "stty size\n";
    ck_assert_int_eq(smk_agent_stdin(a, proc, line, strlen(line), 0, 5000), 0);
    expect_output(a, "40 100", seen, sizeof(seen));
    line = "exit 3\n";
    ck_assert_int_eq(smk_agent_stdin(a, proc, line, strlen(line), 0, 5000), 0);
    int status, code;
    ck_assert_int_eq(smk_agent_wait(a, proc, &status, &code, 10000), 0);
    ck_assert_int_eq(status, SMK_AGENT_EXITED);
    ck_assert_int_eq(code, 3);
    smk_agent_close(a);
}
END_TEST

/* A long command never holds up a ping on the same connection, on either transport. */
static void ping_during_exec(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    struct smk_agent *a = NULL;
    ck_assert_int_eq(smk_agent_from_fd(fd, 10000, &a), 0);
    const char *argv[] = {"sleep", "4"};
    struct smk_exec_args ea = {.argv = argv, .argc = 2};
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_exec(&b, 4242, &ea), 0);
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    smk_buf_free(&b);
    usleep(200000);
    double t0 = now_s();
    struct smk_agent_info info;
    ck_assert_int_eq(smk_agent_ping(a, &info, 2000), 0);
    double dt = now_s() - t0;
    ck_assert_msg(dt < 1.0, "ping took %.3f s behind a running exec", dt);
    /* And a second command alongside. */
    const char *argv2[] = {"echo", "beside"};
    struct smk_agent_cmd cmd = {.argv = argv2, .argc = 2};
    struct smk_agent_exec_result res;
    ck_assert_int_eq(smk_agent_exec(a, &cmd, &res, 2000), 0);
    ck_assert_str_eq((char *)res.out, "beside\n");
    smk_agent_exec_result_free(&res);
    smk_agent_close(a);
}

START_TEST(ping_during_exec_socket)
{
    ping_during_exec(sock);
}
END_TEST

START_TEST(ping_during_exec_serial)
{
    ping_during_exec(serial_sock);
}
END_TEST

START_TEST(process_limit_is_a_clear_error)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"sleep", "30"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 2};
    uint32_t proc, pid;
    int i, r = 0;
    for (i = 0; i < 40 && r == 0; i++)
        r = smk_agent_spawn(a, &cmd, &proc, &pid, 5000);
    ck_assert_int_eq(r, -EAGAIN);
    ck_assert_int_eq(i, 33);
    ck_assert_ptr_nonnull(strstr(smk_agent_error(a), "too many processes"));
    smk_agent_close(a); /* the agent kills them with the connection */
}
END_TEST

START_TEST(batch_exec_reports_truncation)
{
    struct smk_agent *a = connect_to(sock);
    const char *argv[] = {"head", "-c", "5000000", "/dev/zero"};
    struct smk_agent_cmd cmd = {.argv = argv, .argc = 4};
    struct smk_agent_exec_result res;
    ck_assert_int_eq(smk_agent_exec(a, &cmd, &res, 20000), 0);
    ck_assert_uint_eq(res.out_len, 4u << 20);
    ck_assert_uint_eq(res.flags & SMK_AGENT_STDOUT_TRUNCATED, SMK_AGENT_STDOUT_TRUNCATED);
    smk_agent_exec_result_free(&res);
    smk_agent_close(a);
}
END_TEST

START_TEST(guest_control_is_refused_in_test_mode)
{
    struct smk_agent *a = connect_to(sock);
    ck_assert_int_eq(smk_agent_set_time(a, 1, 5000), -EPERM);
    ck_assert_ptr_nonnull(strstr(smk_agent_error(a), "test mode"));
    smk_agent_close(a);
}
END_TEST

/* A stand-in for Firecracker's hybrid vsock socket: answers "CONNECT PORT\n" with "OK N\n",
 * then relays to the agent's socket. Serves one connection. */
static pid_t hybrid_proxy(const char *path, const char *agent_path)
{
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(un.sun_path));
    memcpy(un.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&un, sizeof(un)), 0);
    ck_assert_int_eq(listen(lfd, 1), 0);
    pid_t pid = fork();
    if (pid != 0) {
        close(lfd);
        return pid;
    }
    int c = accept(lfd, NULL, NULL);
    char line[64];
    size_t n = 0;
    while (n + 1 < sizeof(line) && read(c, line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = '\0';
    if (strcmp(line, "CONNECT 5000") != 0) {
        close(c); /* what Firecracker does for a port nothing listens on */
        _exit(0);
    }
    int a = socket(AF_UNIX, SOCK_STREAM, 0);
    size_t alen = strlen(agent_path);
    if (alen >= sizeof(un.sun_path))
        _exit(1);
    memcpy(un.sun_path, agent_path, alen + 1);
    if (connect(a, (struct sockaddr *)&un, sizeof(un)) < 0)
        _exit(1);
    if (write(c, "OK 1073741824\n", 14) != 14)
        _exit(1);
    for (;;) {
        struct pollfd pf[2] = {{.fd = c, .events = POLLIN}, {.fd = a, .events = POLLIN}};
        if (poll(pf, 2, -1) < 0)
            _exit(1);
        for (int i = 0; i < 2; i++) {
            if (!pf[i].revents)
                continue;
            char buf[65536];
            ssize_t k = read(pf[i].fd, buf, sizeof(buf));
            if (k <= 0 || write(pf[i ? 0 : 1].fd, buf, (size_t)k) != k)
                _exit(0);
        }
    }
}

START_TEST(hybrid_vsock_handshake)
{
    char hv[160], addr2[200];
    snprintf(hv, sizeof(hv), "%s/hv.sock", dir);
    pid_t proxy = hybrid_proxy(hv, sock);
    snprintf(addr2, sizeof(addr2), "hvsock:%s:5000", hv);
    struct smk_agent *a = NULL;
    ck_assert_int_eq(smk_agent_connect(addr2, 10000, &a), 0);
    ck_assert_int_eq(smk_agent_proto(a), 2);
    struct smk_agent_info info;
    ck_assert_int_eq(smk_agent_ping(a, &info, 5000), 0);
    smk_agent_close(a);
    waitpid(proxy, NULL, 0);
    unlink(hv);
    /* A port nothing listens on: the VMM hangs up instead of answering OK. */
    proxy = hybrid_proxy(hv, sock);
    a = NULL;
    ck_assert_int_eq(smk_agent_connect_hvsock(hv, 5001, 10000, &a), -ECONNREFUSED);
    ck_assert_ptr_null(a);
    waitpid(proxy, NULL, 0);
    unlink(hv);
}
END_TEST

START_TEST(read_file_follows_symlinks_unless_told)
{
    char target[160], link[160];
    snprintf(target, sizeof(target), "%s/target", dir);
    snprintf(link, sizeof(link), "%s/link", dir);
    FILE *f = fopen(target, "w");
    fputs("secret", f);
    fclose(f);
    ck_assert_int_eq(symlink(target, link), 0);
    struct smk_agent *a = connect_to(sock);
    void *data;
    size_t len;
    int trunc;
    ck_assert_int_eq(smk_agent_read_file(a, link, 0, &data, &len, &trunc, 5000), 0);
    ck_assert_uint_eq(len, 6);
    ck_assert_mem_eq(data, "secret", 6);
    free(data);
    ck_assert_int_eq(smk_agent_read_file(a, link, SMK_AGENT_NOFOLLOW, &data, &len, &trunc, 5000),
                     -ELOOP);
    ck_assert_int_eq(smk_agent_read_file(a, target, SMK_AGENT_NOFOLLOW, &data, &len, &trunc, 5000),
                     0);
    free(data);
    smk_agent_close(a);
    unlink(link);
    unlink(target);
}
END_TEST

/* A peer that accepts and never answers: every call ends at its timeout. */
START_TEST(silent_peer_times_out)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/silent.sock", dir);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    ck_assert_uint_lt(strlen(path), sizeof(un.sun_path));
    memcpy(un.sun_path, path, strlen(path) + 1);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&un, sizeof(un)), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
    struct smk_agent *a = NULL;
    double t0 = now_s();
    ck_assert_int_eq(smk_agent_connect_unix(path, 300, &a), -ETIMEDOUT);
    double dt = now_s() - t0;
    ck_assert_msg(dt >= 0.25 && dt < 3, "timed out after %.3f s", dt);
    ck_assert_ptr_null(a);
    close(lfd);
    unlink(path);
}
END_TEST

/* virtio-serial: a host that goes away cancels its EXEC (the process group is killed) once
 * the hang-up has lasted the grace period; the serial port keeps being served. */
START_TEST(serial_hangup_cancels_exec)
{
    char pidfile[96], script[512];
    snprintf(pidfile, sizeof(pidfile), "%s/exec.pid", dir);
    snprintf(script, sizeof(script), "echo $$ > %s.tmp && mv %s.tmp %s && exec sleep 60", pidfile,
             pidfile, pidfile);
    const char *argv[] = {"sh", "-c", script};
    struct smk_exec_args ea = {.argv = argv, .argc = 3};
    struct smk_buf b = {.version = 2};
    ck_assert_int_eq(smk_encode_exec(&b, 99, &ea), 0);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memcpy(un.sun_path, serial_sock, strlen(serial_sock) + 1);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
    ck_assert_int_eq(write(fd, b.data, b.len), (ssize_t)b.len);
    smk_buf_free(&b);
    int pid = 0;
    for (int i = 0; i < 200 && pid <= 0; i++) {
        FILE *f = fopen(pidfile, "r");
        if (f) {
            if (fscanf(f, "%d", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        usleep(50000);
    }
    ck_assert_int_gt(pid, 0);
    ck_assert_int_eq(kill(pid, 0), 0);
    close(fd);
    double t0 = now_s();
    while (kill(pid, 0) == 0 && now_s() - t0 < 10)
        usleep(100000);
    ck_assert_msg(kill(pid, 0) < 0, "the command outlived its client by 10 s");
    ck_assert_msg(now_s() - t0 >= 1.5, "killed before the hang-up grace (%.2f s)", now_s() - t0);
}
END_TEST

START_TEST(bad_addresses_are_einval)
{
    struct smk_agent *a = NULL;
    ck_assert_int_eq(smk_agent_connect("tcp:1.2.3.4", 100, &a), -EINVAL);
    ck_assert_int_eq(smk_agent_connect("vsock:x:1", 100, &a), -EINVAL);
    ck_assert_int_eq(smk_agent_connect("hvsock:/x", 100, &a), -EINVAL);
    ck_assert_int_eq(smk_agent_connect("unix:/nonexistent/sock", 100, &a), -ENOENT);
    ck_assert_ptr_null(a);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test-agent-client AGENT\n");
        return 2;
    }
    agent_exe = argv[1];
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("agent client");
    TCase *tc = tcase_create("v2");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, hello_agrees_on_version_2);
    tcase_add_test(tc, v1_request_is_answered_in_v1);
    tcase_add_test(tc, spawn_streams_both_outputs_and_the_exit);
    tcase_add_test(tc, spawn_of_a_missing_command_fails_with_enoent);
    tcase_add_test(tc, stdin_streams_through_cat);
    tcase_add_test(tc, fast_producer_is_held_to_the_window);
    tcase_add_test(tc, sigterm_is_reported_as_a_signal);
    tcase_add_test(tc, interactive_shell_on_a_pty);
    tcase_add_test(tc, ping_during_exec_socket);
    tcase_add_test(tc, ping_during_exec_serial);
    tcase_add_test(tc, process_limit_is_a_clear_error);
    tcase_add_test(tc, batch_exec_reports_truncation);
    tcase_add_test(tc, guest_control_is_refused_in_test_mode);
    tcase_add_test(tc, bad_addresses_are_einval);
    tcase_add_test(tc, hybrid_vsock_handshake);
    tcase_add_test(tc, read_file_follows_symlinks_unless_told);
    tcase_add_test(tc, silent_peer_times_out);
    tcase_add_test(tc, serial_hangup_cancels_exec);
    suite_add_tcase(s, tc);
    return run_suite(s, CK_ENV);
}
