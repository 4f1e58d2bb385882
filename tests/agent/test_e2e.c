/*
 * End-to-end tests of the host-built agent: `serve --listen unix:PATH` on a
 * socket in a temporary directory, driven by the same binary's client mode
 * and, for what a well-behaved client never sends, by raw frames.
 *
 * usage: test-agent-e2e PATH-TO-supermachine-agent
 * SMK_TEST_WRAPPER (e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu") prefixes
 * every run of the agent in cross builds.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent-proto.h"
#include "stream.h"
#include "version.h"
#include "../run-suite.h"

static const char *agent;
static char *wrapper[16];
static int n_wrapper;
static char dir[64], sock_path[128], addr[160];
static pid_t agent_pid;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* --- running the agent's client ------------------------------------------ */

struct run {
    int status; /* exit status, or 128 + signal */
    char *out, *err;
    size_t out_len, err_len;
    double secs;
};

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* argv for the agent binary (through the wrapper): prefix + args. */
static char **agent_argv(char *const *args)
{
    int n = 0;
    while (args[n])
        n++;
    char **argv = calloc((size_t)(n_wrapper + n + 2), sizeof(char *));
    int k = 0;
    for (int i = 0; i < n_wrapper; i++)
        argv[k++] = wrapper[i];
    argv[k++] = (char *)agent;
    for (int i = 0; i < n; i++)
        argv[k++] = args[i];
    return argv;
}

static pid_t spawn_agent(char *const *args, int in_fd, int out_fd, int err_fd)
{
    char **argv = agent_argv(args);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (in_fd >= 0)
            dup2(in_fd, 0);
        if (out_fd >= 0)
            dup2(out_fd, 1);
        if (err_fd >= 0)
            dup2(err_fd, 2);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    free(argv);
    return pid;
}

static void append(char **buf, size_t *len, const char *p, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

static int wait_status(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        ck_assert_int_eq(errno, EINTR);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs the agent with args (NULL-terminated), stdin from in[0..in_len). */
static struct run run_args(const void *in, size_t in_len, char *const *args)
{
    struct run r = {0};
    int in_fd = memfd_create("stdin", MFD_CLOEXEC);
    ck_assert_int_ge(in_fd, 0);
    ck_assert_int_eq(write(in_fd, in, in_len), (ssize_t)in_len);
    lseek(in_fd, 0, SEEK_SET);
    int out[2], err[2];
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(err, O_CLOEXEC), 0);
    double t0 = now_s();
    pid_t pid = spawn_agent(args, in_fd, out[1], err[1]);
    close(in_fd);
    close(out[1]);
    close(err[1]);
    r.out = calloc(1, 1);
    r.err = calloc(1, 1);
    struct pollfd pf[2] = {{.fd = out[0], .events = POLLIN}, {.fd = err[0], .events = POLLIN}};
    while (pf[0].fd >= 0 || pf[1].fd >= 0) {
        ck_assert_int_ge(poll(pf, 2, -1), 0);
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            char buf[65536];
            ssize_t n = read(pf[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
            } else if (i == 0) {
                append(&r.out, &r.out_len, buf, (size_t)n);
            } else {
                append(&r.err, &r.err_len, buf, (size_t)n);
            }
        }
    }
    r.status = wait_status(pid);
    r.secs = now_s() - t0;
    return r;
}

#define MAX_ARGS 2048

/* client(stdin, len, "exec", "--", "true", NULL): runs `agent client ADDR ...`. */
static struct run client(const void *in, size_t in_len, ...)
{
    char *args[MAX_ARGS] = {"client", addr};
    int n = 2;
    va_list ap;
    va_start(ap, in_len);
    for (char *a; (a = va_arg(ap, char *));)
        args[n++] = a;
    va_end(ap);
    args[n] = NULL;
    return run_args(in, in_len, args);
}

#define NO_STDIN "", 0

static void start_agent_at(const char *path, pid_t *pid)
{
    char listen[160];
    snprintf(listen, sizeof(listen), "unix:%s", path);
    char *args[] = {"serve", "--listen", listen, NULL};
    *pid = spawn_agent(args, -1, -1, -1);
}

static void start_agent(void)
{
    strcpy(dir, "/tmp/smk-agent-e2e-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", dir);
    snprintf(addr, sizeof(addr), "unix:%s", sock_path);
    start_agent_at(sock_path, &agent_pid);
    struct run r = client(NO_STDIN, "ping", "--wait", "20", (char *)NULL);
    ck_assert_msg(r.status == 0, "agent did not come up: %s", r.err);
    run_free(&r);
}

static void stop_agent(void)
{
    if (agent_pid > 0) {
        kill(agent_pid, SIGTERM);
        waitpid(agent_pid, NULL, 0);
        agent_pid = 0;
    }
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static char *path_in_dir(const char *name)
{
    static char p[4][256];
    static int k;
    char *s = p[k++ % 4];
    snprintf(s, 256, "%s/%s", dir, name);
    return s;
}

static void write_local(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static uint8_t *random_bytes(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len);
    srand(seed);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rand();
    return p;
}

/* Whether pid is gone (or a zombie nobody reaped yet) within secs. */
static int process_gone(pid_t pid, double secs)
{
    double end = now_s() + secs;
    do {
        char path[64], stat[256] = "";
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            return 1;
        size_t n = fread(stat, 1, sizeof(stat) - 1, f);
        fclose(f);
        stat[n] = '\0';
        char *paren = strrchr(stat, ')');
        if (paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'))
            return 1;
        usleep(50000);
    } while (now_s() < end);
    return 0;
}

/* Whether /proc has no trace of pid (neither running nor a zombie) within
 * secs: its parent has waited for it. */
static int process_reaped(pid_t pid, double secs)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    double end = now_s() + secs;
    while (access(path, F_OK) == 0) {
        if (now_s() >= end)
            return 0;
        usleep(20000);
    }
    return 1;
}

/* --- CLI ------------------------------------------------------------------- */

START_TEST(version_and_help)
{
    char *v[] = {"--version", NULL};
    struct run r = run_args(NO_STDIN, v);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "supermachine-agent " SMKA_AGENT_VERSION " (protocol 2)\n");
    run_free(&r);
    char *h[] = {"--help", NULL};
    r = run_args(NO_STDIN, h);
    ck_assert_int_eq(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.out, "client ADDR exec"));
    run_free(&r);
}
END_TEST

START_TEST(bad_address_is_a_usage_error)
{
    char *args[] = {"client", "tcp:1.2.3.4:5", "ping", NULL};
    struct run r = run_args(NO_STDIN, args);
    ck_assert_int_eq(r.status, 2);
    ck_assert_ptr_nonnull(strstr(r.err, "supermachine-agent: tcp:1.2.3.4:5: bad address"));
    run_free(&r);
}
END_TEST

START_TEST(missing_socket_fails_with_the_reason)
{
    char a[300];
    snprintf(a, sizeof(a), "unix:%s/nobody-here.sock", dir);
    char *args[] = {"client", a, "ping", NULL};
    struct run r = run_args(NO_STDIN, args);
    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.err, "supermachine-agent: ping: connect unix:"));
    ck_assert_ptr_nonnull(strstr(r.err, "No such file or directory"));
    run_free(&r);
}
END_TEST

START_TEST(ping_wait_outlasts_a_late_agent)
{
    char *late = path_in_dir("late.sock"), a[300];
    snprintf(a, sizeof(a), "unix:%s", late);
    char *args[] = {"client", a, "ping", "--wait", "15", NULL};
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    pid_t c = spawn_agent(args, -1, out[1], -1);
    close(out[1]);
    usleep(800000);
    pid_t late_agent;
    start_agent_at(late, &late_agent);
    char buf[512] = "";
    ssize_t n = read(out[0], buf, sizeof(buf) - 1);
    close(out[0]);
    ck_assert_int_eq(wait_status(c), 0);
    ck_assert_int_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(buf, "version=" SMKA_AGENT_VERSION));
    kill(late_agent, SIGTERM);
    waitpid(late_agent, NULL, 0);
}
END_TEST

/* --- ping and exec --------------------------------------------------------- */

START_TEST(ping_prints_version_and_times)
{
    struct run r = client(NO_STDIN, "ping", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    char version[64];
    unsigned proto;
    unsigned long long uptime, ready;
    ck_assert_int_eq(sscanf(r.out, "version=%63s proto=%u uptime_ns=%llu ready_ns=%llu", version,
                            &proto, &uptime, &ready),
                     4);
    ck_assert_str_eq(version, SMKA_AGENT_VERSION);
    ck_assert_uint_eq(proto, SMK_PROTO_VERSION);
    ck_assert(ready > 0 && ready <= uptime);
    ck_assert_ptr_eq(strchr(r.out, '\n'), r.out + r.out_len - 1);
    run_free(&r);
}
END_TEST

START_TEST(exec_uname_matches_this_machine)
{
    char expect[64] = "";
    FILE *p = popen("uname -m", "r");
    ck_assert_ptr_nonnull(fgets(expect, sizeof(expect), p));
    pclose(p);
    struct run r = client(NO_STDIN, "exec", "--", "uname", "-m", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, expect);
    ck_assert_str_eq(r.err, "");
    run_free(&r);
}
END_TEST

START_TEST(exec_passes_stdin_env_and_cwd)
{
    char *real = realpath(dir, NULL), expect[512];
    snprintf(expect, sizeof(expect), "hello\nworld\n42|a=b\n%s\n", real);
    struct run r = client("hello\nworld\n", 12, "exec", "--env", "SMK_X=42", "--env=SMK_Y=a=b",
                          "--cwd", dir, "--stdin", "-", "--", "sh", "-c",
                          "cat; echo \"$SMK_X|$SMK_Y\"; pwd -P", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, expect);
    run_free(&r);
    free(real);
}
END_TEST

START_TEST(exec_stdin_from_a_file_keeps_binary_bytes)
{
    size_t len = 1 << 20;
    uint8_t *data = random_bytes(len, 1);
    char *f = path_in_dir("stdin.bin");
    write_local(f, data, len, 0644);
    struct run r = client(NO_STDIN, "exec", "--stdin", f, "--", "cat", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.out_len, len);
    ck_assert(memcmp(r.out, data, len) == 0);
    run_free(&r);
    free(data);
}
END_TEST

START_TEST(exec_without_stdin_sees_end_of_file)
{
    struct run r = client(NO_STDIN, "exec", "--", "wc", "-c", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_int_eq(atoi(r.out), 0);
    run_free(&r);
}
END_TEST

START_TEST(exec_default_cwd_is_root)
{
    struct run r = client(NO_STDIN, "exec", "--", "pwd", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_str_eq(r.out, "/\n");
    run_free(&r);
}
END_TEST

START_TEST(exec_exit_status_and_separate_streams)
{
    struct run r =
        client(NO_STDIN, "exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7", (char *)NULL);
    ck_assert_int_eq(r.status, 7);
    ck_assert_str_eq(r.out, "out\n");
    ck_assert_str_eq(r.err, "err\n");
    run_free(&r);
}
END_TEST

START_TEST(exec_killed_by_signal_is_128_plus_signal)
{
    struct run r = client(NO_STDIN, "exec", "--", "sh", "-c", "kill -TERM $$", (char *)NULL);
    ck_assert_int_eq(r.status, 128 + SIGTERM);
    run_free(&r);
}
END_TEST

START_TEST(exec_timeout_kills_the_process_group)
{
    struct run r = client(NO_STDIN, "exec", "--timeout", "1", "--", "sh", "-c",
                          "sleep 60 & echo $!; wait", (char *)NULL);
    ck_assert_int_eq(r.status, 124);
    ck_assert_msg(r.secs < 10, "took %.1f s", r.secs);
    ck_assert_ptr_nonnull(strstr(r.err, "timed out"));
    pid_t bg = (pid_t)atoi(r.out);
    ck_assert_int_gt(bg, 1);
    ck_assert_msg(process_gone(bg, 5), "background sleep %d survived the timeout", (int)bg);
    run_free(&r);
}
END_TEST

START_TEST(exec_missing_binary_is_127)
{
    struct run r = client(NO_STDIN, "exec", "--", "smk-no-such-binary", "x", (char *)NULL);
    ck_assert_int_eq(r.status, 127);
    ck_assert_ptr_nonnull(
        strstr(r.err, "supermachine-agent: exec: smk-no-such-binary: No such file or directory"));
    run_free(&r);
    r = client(NO_STDIN, "exec", "--", "/nonexistent/bin/x", (char *)NULL);
    ck_assert_int_eq(r.status, 127);
    run_free(&r);
}
END_TEST

START_TEST(exec_not_executable_is_126)
{
    char *f = path_in_dir("not-executable");
    write_local(f, "#!/bin/sh\n", 10, 0644);
    struct run r = client(NO_STDIN, "exec", "--", f, (char *)NULL);
    ck_assert_int_eq(r.status, 126);
    ck_assert_ptr_nonnull(strstr(r.err, "Permission denied"));
    run_free(&r);
}
END_TEST

START_TEST(exec_bad_cwd_says_so)
{
    struct run r =
        client(NO_STDIN, "exec", "--cwd", "/nonexistent-dir", "--", "true", (char *)NULL);
    ck_assert_int_ne(r.status, 0);
    ck_assert_ptr_nonnull(strstr(r.err, "chdir /nonexistent-dir: No such file or directory"));
    run_free(&r);
}
END_TEST

START_TEST(exec_huge_output_is_capped_and_flagged)
{
    struct run r =
        client(NO_STDIN, "exec", "--", "sh", "-c",
               "head -c 10000000 /dev/zero; head -c 5000000 /dev/zero >&2", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.out_len, SMK_MAX_OUTPUT);
    ck_assert_ptr_nonnull(strstr(r.err + SMK_MAX_OUTPUT, "stdout truncated"));
    ck_assert_ptr_nonnull(strstr(r.err + SMK_MAX_OUTPUT, "stderr truncated"));
    run_free(&r);
}
END_TEST

START_TEST(exec_argument_limits_are_enforced_by_the_client)
{
    char *args[MAX_ARGS] = {"client", addr, "exec", "--", "true"};
    int n = 5;
    while (n < 5 + (int)SMK_MAX_ARGS)
        args[n++] = "x";
    args[n] = NULL;
    struct run r = run_args(NO_STDIN, args);
    ck_assert_int_eq(r.status, 125);
    ck_assert_ptr_nonnull(strstr(r.err, "Argument list too long"));
    run_free(&r);
    args[n - 1] = NULL; /* exactly SMK_MAX_ARGS */
    r = run_args(NO_STDIN, args);
    ck_assert_int_eq(r.status, 0);
    run_free(&r);
}
END_TEST

START_TEST(exec_does_not_hold_up_other_connections)
{
    char *args[] = {"client", addr, "exec", "--", "sleep", "3", NULL};
    pid_t slow = spawn_agent(args, -1, -1, -1);
    usleep(300000);
    struct run r = client(NO_STDIN, "ping", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_msg(r.secs < 2, "ping took %.1f s while an exec ran", r.secs);
    run_free(&r);
    ck_assert_int_eq(wait_status(slow), 0);
}
END_TEST

/* --- files ----------------------------------------------------------------- */

START_TEST(write_then_read_back)
{
    size_t len = 3 << 20;
    uint8_t *data = random_bytes(len, 2);
    char *local = path_in_dir("local.bin"), *guest = path_in_dir("guest.bin");
    write_local(local, data, len, 0600);
    struct run r = client(NO_STDIN, "write", guest, local, "--mode", "0640", (char *)NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    run_free(&r);
    struct stat st;
    ck_assert_int_eq(stat(guest, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_uint_eq((size_t)st.st_size, len);
    r = client(NO_STDIN, "read", guest, (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    ck_assert_uint_eq(r.out_len, len);
    ck_assert(memcmp(r.out, data, len) == 0);
    run_free(&r);
    free(data);
}
END_TEST

START_TEST(write_from_stdin_replaces_the_file_whole)
{
    char *guest = path_in_dir("replaced.txt");
    write_local(guest, "old contents that are longer", 28, 0600);
    struct run r = client("new\n", 4, "write", guest, (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    run_free(&r);
    r = client("newer\n", 6, "write", guest, "-", (char *)NULL);
    ck_assert_int_eq(r.status, 0);
    run_free(&r);
    r = client(NO_STDIN, "read", guest, (char *)NULL);
    ck_assert_str_eq(r.out, "newer\n");
    run_free(&r);
    struct stat st;
    ck_assert_int_eq(stat(guest, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0644);
    /* No temporary file left behind. */
    r = client(NO_STDIN, "exec", "--cwd", dir, "--", "sh", "-c", "ls -A | grep -c smk-",
               (char *)NULL);
    ck_assert_str_eq(r.out, "0\n");
    run_free(&r);
}
END_TEST

START_TEST(write_into_a_missing_directory_fails)
{
    char *guest = path_in_dir("no/such/dir/file");
    struct run r = client("x", 1, "write", guest, (char *)NULL);
    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.err, "No such file or directory"));
    run_free(&r);
}
END_TEST

START_TEST(write_over_the_size_limit_is_refused)
{
    char *local = path_in_dir("big.bin");
    int fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_eq(ftruncate(fd, SMK_MAX_DATA + 1), 0);
    close(fd);
    struct run r = client(NO_STDIN, "write", path_in_dir("big-copy"), local, (char *)NULL);
    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.err, "larger than"));
    run_free(&r);
}
END_TEST

START_TEST(read_of_a_missing_file_fails)
{
    struct run r = client(NO_STDIN, "read", path_in_dir("missing"), (char *)NULL);
    ck_assert_int_eq(r.status, 1);
    ck_assert_ptr_nonnull(strstr(r.err, "No such file or directory"));
    ck_assert_uint_eq(r.out_len, 0);
    run_free(&r);
}
END_TEST

START_TEST(read_of_a_relative_path_is_a_usage_error)
{
    struct run r = client(NO_STDIN, "read", "etc/passwd", (char *)NULL);
    ck_assert_int_eq(r.status, 2);
    run_free(&r);
}
END_TEST

START_TEST(read_of_an_endless_file_is_truncated)
{
    struct run r = client(NO_STDIN, "read", "/dev/zero", (char *)NULL);
    ck_assert_int_eq(r.status, 1);
    ck_assert_uint_eq(r.out_len, SMK_MAX_DATA);
    ck_assert_ptr_nonnull(strstr(r.err, "truncated"));
    run_free(&r);
}
END_TEST

/* --- raw frames ------------------------------------------------------------ */

static int raw_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%.107s", sock_path);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    ck_assert_int_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads one frame: 1 with *m set (valid until the next call on st), 0 at end
 * of file, -1 on timeout. */
static int raw_recv(int fd, struct smka_stream *st, struct smk_msg *m, int timeout_ms)
{
    for (;;) {
        size_t n;
        uint8_t *p = smka_stream_want(st, &n);
        ck_assert_ptr_nonnull(p);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, timeout_ms) == 0)
            return -1;
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return 0;
        int k = smka_stream_advance(st, (size_t)r, m);
        ck_assert_int_ge(k, 0);
        if (k > 0)
            return 1;
    }
}

static int bytes_eq_str(struct smk_bytes b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.ptr, s, b.len) == 0;
}

static void expect_error(int fd, struct smka_stream *st, uint32_t id, uint32_t code)
{
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, st, &m, 15000), 1);
    ck_assert_uint_eq(m.hdr.type, SMK_ERROR);
    ck_assert_uint_eq(m.hdr.id, id);
    ck_assert_uint_eq(m.u.error.code, code);
}

static void expect_ping_reply(int fd, struct smka_stream *st, uint32_t id)
{
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, st, &m, 15000), 1);
    ck_assert_uint_eq(m.hdr.type, SMK_PING_REPLY);
    ck_assert_uint_eq(m.hdr.id, id);
}

static void expect_agent_alive(void)
{
    struct run r = client(NO_STDIN, "ping", (char *)NULL);
    ck_assert_msg(r.status == 0, "agent no longer answers: %s", r.err);
    run_free(&r);
}

static void header(uint8_t h[SMK_HEADER_SIZE], uint16_t version, uint16_t type, uint32_t id,
                   uint32_t len)
{
    memcpy(h, SMK_MAGIC, 4);
    h[4] = (uint8_t)version;
    h[5] = (uint8_t)(version >> 8);
    h[6] = (uint8_t)type;
    h[7] = (uint8_t)(type >> 8);
    for (int i = 0; i < 4; i++) {
        h[8 + i] = (uint8_t)(id >> (8 * i));
        h[12 + i] = (uint8_t)(len >> (8 * i));
    }
}

START_TEST(garbage_gets_an_error_and_a_reset)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    uint8_t *junk = random_bytes(4096, 3);
    junk[0] = 'x';
    raw_send(fd, junk, 4096);
    expect_error(fd, &st, 0, SMK_EBADMSG);
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, &st, &m, 5000), 0);
    smka_stream_free(&st);
    close(fd);
    free(junk);
    expect_agent_alive();
}
END_TEST

START_TEST(oversized_length_gets_an_error_with_the_id)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    uint8_t h[SMK_HEADER_SIZE];
    header(h, SMK_PROTO_VERSION, SMK_WRITE_FILE, 4711, SMK_MAX_PAYLOAD + 1);
    raw_send(fd, h, sizeof(h));
    expect_error(fd, &st, 4711, SMK_EMSGSIZE);
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, &st, &m, 5000), 0);
    smka_stream_free(&st);
    close(fd);
    expect_agent_alive();
}
END_TEST

START_TEST(truncated_frame_then_hangup)
{
    struct smk_buf b = {0};
    const char *argv[] = {"true"};
    struct smk_exec_args ea = {.argv = argv, .argc = 1};
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), 0);
    for (size_t cut = 1; cut < b.len; cut += 7) {
        int fd = raw_connect();
        raw_send(fd, b.data, cut);
        close(fd);
    }
    smk_buf_free(&b);
    expect_agent_alive();
}
END_TEST

START_TEST(bad_frames_that_can_be_skipped_keep_the_connection)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    uint8_t f[SMK_HEADER_SIZE + 3];
    header(f, SMK_PROTO_VERSION, 0x0042, 1, 3);
    memcpy(f + SMK_HEADER_SIZE, "abc", 3);
    raw_send(fd, f, sizeof(f));
    expect_error(fd, &st, 1, SMK_ENOSYS);
    header(f, 3, SMK_PING, 2, 3);
    raw_send(fd, f, sizeof(f));
    expect_error(fd, &st, 2, SMK_EPROTONOSUPPORT);
    struct smk_buf reply = {0};
    ck_assert_int_eq(smk_encode_ping_reply(&reply, 3, 1, 1, "0"), 0);
    raw_send(fd, reply.data, reply.len);
    smk_buf_free(&reply);
    expect_error(fd, &st, 3, SMK_ENOSYS);
    header(f, SMK_PROTO_VERSION, SMK_READ_FILE, 4, 3);
    raw_send(fd, f, sizeof(f));
    expect_error(fd, &st, 4, SMK_EPROTO);
    header(f, SMK_PROTO_VERSION, SMK_PING, 5, 0);
    raw_send(fd, f, SMK_HEADER_SIZE);
    expect_ping_reply(fd, &st, 5);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(pipelined_requests_are_answered_in_order)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    struct smk_buf b = {0};
    for (uint32_t id = 1; id <= 5; id++)
        ck_assert_int_eq(smk_encode_empty(&b, SMK_PING, id), 0);
    raw_send(fd, b.data, b.len);
    for (uint32_t id = 1; id <= 5; id++)
        expect_ping_reply(fd, &st, id);
    smk_buf_free(&b);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(stalled_frame_times_out)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    uint8_t h[SMK_HEADER_SIZE];
    header(h, SMK_PROTO_VERSION, SMK_WRITE_FILE, 99, 100);
    raw_send(fd, h, sizeof(h));
    raw_send(fd, "0123456789", 10);
    expect_error(fd, &st, 99, SMK_ETIMEDOUT);
    smka_stream_free(&st);
    close(fd);
    expect_agent_alive();
}
END_TEST

START_TEST(hangup_during_exec_kills_the_command)
{
    char *pidfile = path_in_dir("exec.pid"), script[512];
    snprintf(script, sizeof(script), "echo $$ > %s.tmp && mv %s.tmp %s && exec sleep 60", pidfile,
             pidfile, pidfile);
    const char *argv[] = {"sh", "-c", script};
    struct smk_exec_args ea = {.argv = argv, .argc = 3};
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), 0);
    int fd = raw_connect();
    raw_send(fd, b.data, b.len);
    smk_buf_free(&b);
    pid_t pid = 0;
    for (int i = 0; i < 200 && pid <= 0; i++) {
        FILE *f = fopen(pidfile, "r");
        if (f) {
            if (fscanf(f, "%d", &pid) != 1)
                pid = 0;
            fclose(f);
        }
        if (pid <= 0)
            usleep(50000);
    }
    ck_assert_int_gt(pid, 1);
    close(fd);
    /* Killed, and waited for: not left a zombie either. */
    ck_assert_msg(process_reaped(pid, 5), "command %d outlived its client", (int)pid);
    expect_agent_alive();
}
END_TEST

START_TEST(more_connections_than_handlers)
{
    enum { N = 20 };
    int fds[N];
    struct smk_buf b = {0};
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect();
        smk_buf_free(&b);
        ck_assert_int_eq(smk_encode_empty(&b, SMK_PING, (uint32_t)i + 1), 0);
        raw_send(fds[i], b.data, b.len);
    }
    smk_buf_free(&b);
    /* Each one closed frees a slot for the next waiting in the backlog. */
    for (int i = 0; i < N; i++) {
        struct smka_stream st;
        smka_stream_init(&st, 0);
        expect_ping_reply(fds[i], &st, (uint32_t)i + 1);
        smka_stream_free(&st);
        close(fds[i]);
    }
}
END_TEST

/* --- a hostile host -------------------------------------------------------- */

/* The agent's connection handlers: its child processes. */
static int handler_pids(pid_t *pids, int max)
{
    int n = 0;
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300], stat[512] = "";
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t k = fread(stat, 1, sizeof(stat) - 1, f);
        fclose(f);
        stat[k] = '\0';
        char *paren = strrchr(stat, ')'), state;
        int ppid;
        if (paren && sscanf(paren + 1, " %c %d", &state, &ppid) == 2 && ppid == agent_pid &&
            state != 'Z')
            pids[n++] = (pid_t)atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* The handler that appeared since before[] was taken. */
static pid_t new_handler(const pid_t *before, int nbefore)
{
    pid_t now[64];
    for (int tries = 0; tries < 100; tries++) {
        int n = handler_pids(now, 64);
        for (int i = 0; i < n; i++) {
            int old = 0;
            for (int j = 0; j < nbefore; j++)
                old |= now[i] == before[j];
            if (!old)
                return now[i];
        }
        usleep(20000);
    }
    ck_abort_msg("no new connection handler appeared");
    return -1;
}

/* Peak resident memory of a process in KiB, or -1. */
static long peak_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Under qemu-user the process is the emulator, whose memory says nothing
 * about the agent's; the bound is checked in native runs. */
#if defined(__SANITIZE_ADDRESS__)
/* ASan's shadow memory and its quarantine of freed blocks (up to 256 MiB) inflate the peak; a
 * handler that buffered the 256 MiB output would still exceed this. */
#define HANDLER_PEAK_LIMIT_KIB (160L << 10)
#else
#define HANDLER_PEAK_LIMIT_KIB (48L << 10)
#endif
static void expect_bounded_memory(pid_t handler)
{
    if (n_wrapper > 0)
        return;
    long kib = peak_rss_kib(handler);
    ck_assert_msg(kib > 0, "no VmHWM for handler %d", (int)handler);
    fprintf(stderr, "connection handler %d: peak resident memory %ld KiB\n", (int)handler, kib);
    ck_assert_msg(kib < HANDLER_PEAK_LIMIT_KIB, "handler %d peaked at %ld KiB", (int)handler, kib);
}

/* A frame whose payload is built by hand, with lengths that lie. */
struct rawf {
    uint8_t b[256];
    size_t n;
};

static void rf_begin(struct rawf *f, uint16_t type, uint32_t id)
{
    header(f->b, SMK_PROTO_VERSION, type, id, 0);
    f->n = SMK_HEADER_SIZE;
}

static void rf_u32(struct rawf *f, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        f->b[f->n++] = (uint8_t)(v >> (8 * i));
}

static void rf_str(struct rawf *f, const char *s)
{
    rf_u32(f, (uint32_t)strlen(s));
    memcpy(f->b + f->n, s, strlen(s));
    f->n += strlen(s);
}

static void rf_send(int fd, struct rawf *f)
{
    uint32_t len = (uint32_t)(f->n - SMK_HEADER_SIZE);
    for (int i = 0; i < 4; i++)
        f->b[12 + i] = (uint8_t)(len >> (8 * i));
    raw_send(fd, f->b, f->n);
}

START_TEST(every_length_field_is_bounded)
{
    pid_t before[64];
    int nbefore = handler_pids(before, 64);
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    uint8_t ping[SMK_HEADER_SIZE];
    header(ping, SMK_PROTO_VERSION, SMK_PING, 1000, 0);
    raw_send(fd, ping, sizeof(ping));
    expect_ping_reply(fd, &st, 1000);
    pid_t handler = new_handler(before, nbefore);

    /* Each length or count field at its maximum value, in a frame a few
     * bytes long: refused by the limit, before anything is allocated for
     * it, and the connection goes on. */
    const uint32_t huge = 0xffffffffu;
    struct {
        uint32_t code;
        int field; /* which field lies */
    } cases[] = {
        {SMK_E2BIG, 0},        /* argv count */
        {SMK_E2BIG, 1},        /* argv[0] length */
        {SMK_E2BIG, 2},        /* env count */
        {SMK_E2BIG, 3},        /* env entry length */
        {SMK_ENAMETOOLONG, 4}, /* cwd length */
        {SMK_EMSGSIZE, 5},     /* stdin length */
        {SMK_ENAMETOOLONG, 6}, /* WRITE_FILE path length */
        {SMK_EMSGSIZE, 7},     /* WRITE_FILE data length */
        {SMK_ENAMETOOLONG, 8}, /* READ_FILE path length */
        {SMK_EPROTO, 9},       /* argv[0] length within the limit, past the payload */
        {SMK_EPROTO, 10},      /* WRITE_FILE data within the limit, past the payload */
    };
    for (uint32_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rawf f;
        uint32_t id = 100 + i;
        int k = cases[i].field;
        if (k <= 5 || k == 9) {
            rf_begin(&f, SMK_EXEC, id);
            rf_u32(&f, 0);
            if (k == 0) {
                rf_u32(&f, huge);
            } else {
                rf_u32(&f, 1);
                if (k == 1 || k == 9) {
                    rf_u32(&f, k == 1 ? huge : SMK_MAX_STRING);
                } else {
                    rf_str(&f, "true");
                    if (k == 2) {
                        rf_u32(&f, huge);
                    } else {
                        rf_u32(&f, 1);
                        if (k == 3) {
                            rf_u32(&f, huge);
                        } else {
                            rf_str(&f, "A=b");
                            if (k == 4) {
                                rf_u32(&f, huge);
                            } else {
                                rf_str(&f, "/");
                                rf_u32(&f, huge);
                            }
                        }
                    }
                }
            }
        } else if (k == 6 || k == 7 || k == 10) {
            rf_begin(&f, SMK_WRITE_FILE, id);
            if (k == 6) {
                rf_u32(&f, huge);
            } else {
                rf_str(&f, "/nonexistent/f");
                rf_u32(&f, 0644);
                rf_u32(&f, k == 7 ? huge : SMK_MAX_DATA);
            }
        } else {
            rf_begin(&f, SMK_READ_FILE, id);
            rf_u32(&f, huge);
        }
        rf_u32(&f, 0); /* a few bytes more, to show the length is what counts */
        rf_send(fd, &f);
        expect_error(fd, &st, id, cases[i].code);
    }
    raw_send(fd, ping, sizeof(ping));
    expect_ping_reply(fd, &st, 1000);

    /* The largest frame there is, three times on one connection: one frame's
     * worth at a time, released before the next. */
    size_t body = SMK_MAX_PAYLOAD;
    uint8_t *big = calloc(1, SMK_HEADER_SIZE + body);
    for (uint32_t i = 0; i < 3; i++) {
        header(big, SMK_PROTO_VERSION, SMK_WRITE_FILE, 200 + i, (uint32_t)body);
        memset(big + SMK_HEADER_SIZE, 0xff, 4); /* path length: huge */
        raw_send(fd, big, SMK_HEADER_SIZE + body);
        expect_error(fd, &st, 200 + i, SMK_ENAMETOOLONG);
    }
    free(big);
    raw_send(fd, ping, sizeof(ping));
    expect_ping_reply(fd, &st, 1000);
    expect_bounded_memory(handler);

    /* The header's own length: over the limit, the connection is dropped. */
    uint8_t h[SMK_HEADER_SIZE];
    header(h, SMK_PROTO_VERSION, SMK_PING, 300, huge);
    raw_send(fd, h, sizeof(h));
    expect_error(fd, &st, 300, SMK_EMSGSIZE);
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, &st, &m, 5000), 0);
    smka_stream_free(&st);
    close(fd);
    expect_agent_alive();
}
END_TEST

/* Sends an EXEC of argv (NULL-terminated) and returns the reply (valid until
 * the next use of st). */
static void raw_exec(int fd, struct smka_stream *st, uint32_t id, uint32_t timeout_ms,
                     struct smk_msg *m, const char *const *argv)
{
    size_t argc = 0;
    while (argv[argc])
        argc++;
    struct smk_exec_args ea = {.argv = argv, .argc = argc, .timeout_ms = timeout_ms};
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_exec(&b, id, &ea), 0);
    raw_send(fd, b.data, b.len);
    smk_buf_free(&b);
    ck_assert_int_eq(raw_recv(fd, st, m, 120000), 1);
    ck_assert_uint_eq(m->hdr.id, id);
}

static int bytes_are(struct smk_bytes b, uint8_t c)
{
    for (uint32_t i = 0; i < b.len; i++)
        if (b.ptr[i] != c)
            return 0;
    return 1;
}

START_TEST(exec_of_a_missing_binary_is_a_clean_error)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    struct smk_msg m;
    const char *missing[] = {"smk-no-such-binary", "arg", NULL};
    raw_exec(fd, &st, 1, 0, &m, missing);
    ck_assert_uint_eq(m.hdr.type, SMK_ERROR);
    ck_assert_uint_eq(m.u.error.code, ENOENT);
    ck_assert(bytes_eq_str(m.u.error.message, "smk-no-such-binary: No such file or directory"));
    const char *missing_path[] = {"/nonexistent/bin/x", NULL};
    raw_exec(fd, &st, 2, 0, &m, missing_path);
    ck_assert_uint_eq(m.hdr.type, SMK_ERROR);
    ck_assert_uint_eq(m.u.error.code, ENOENT);
    const char *directory[] = {"/", NULL};
    raw_exec(fd, &st, 3, 0, &m, directory);
    ck_assert_uint_eq(m.hdr.type, SMK_ERROR);
    ck_assert_uint_eq(m.u.error.code, EACCES);
    /* The connection goes on, and no child was left behind. */
    const char *ok[] = {"true", NULL};
    raw_exec(fd, &st, 4, 0, &m, ok);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_EXITED);
    ck_assert_uint_eq(m.u.exec_reply.code, 0);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(exec_output_of_256_mib_is_capped_in_bounded_memory)
{
    pid_t before[64];
    int nbefore = handler_pids(before, 64);
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    struct smk_msg m;
    const char *argv[] = {
        "sh", "-c", "head -c 134217728 /dev/zero; head -c 134217728 /dev/zero >&2; exit 3", NULL};
    raw_exec(fd, &st, 1, 0, &m, argv);
    pid_t handler = new_handler(before, nbefore);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_EXITED);
    ck_assert_uint_eq(m.u.exec_reply.code, 3);
    ck_assert_uint_eq(m.u.exec_reply.flags, SMK_EXEC_STDOUT_TRUNCATED | SMK_EXEC_STDERR_TRUNCATED);
    ck_assert_uint_eq(m.u.exec_reply.out.len, SMK_MAX_OUTPUT);
    ck_assert_uint_eq(m.u.exec_reply.err.len, SMK_MAX_OUTPUT);
    ck_assert(bytes_are(m.u.exec_reply.out, 0) && bytes_are(m.u.exec_reply.err, 0));
    expect_bounded_memory(handler);

    /* Output without end and a command without end: the timeout ends both. */
    const char *endless[] = {"sh", "-c", "while :; do cat /dev/zero; done", NULL};
    raw_exec(fd, &st, 2, 1000, &m, endless);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_TIMED_OUT);
    ck_assert_uint_eq(m.u.exec_reply.code, SIGKILL);
    ck_assert_uint_eq(m.u.exec_reply.flags, SMK_EXEC_STDOUT_TRUNCATED);
    ck_assert_uint_eq(m.u.exec_reply.out.len, SMK_MAX_OUTPUT);
    expect_bounded_memory(handler);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(exec_that_never_exits_is_killed_at_the_timeout_and_reaped)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    struct smk_msg m;
    /* Ignores the polite signals, and closes its output so no end of file
     * tells the agent anything. */
    const char *stubborn[] = {
        "sh", "-c", "trap '' TERM INT HUP; echo $$; exec >&- 2>&-; while :; do sleep 1; done",
        NULL};
    double t0 = now_s();
    raw_exec(fd, &st, 1, 700, &m, stubborn);
    double secs = now_s() - t0;
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_TIMED_OUT);
    ck_assert_uint_eq(m.u.exec_reply.code, SIGKILL);
    ck_assert_msg(secs >= 0.6 && secs < 10, "reply after %.1f s", secs);
    char pid_text[32] = "";
    ck_assert_uint_lt(m.u.exec_reply.out.len, sizeof(pid_text));
    memcpy(pid_text, m.u.exec_reply.out.ptr, m.u.exec_reply.out.len);
    pid_t pid = (pid_t)atoi(pid_text);
    ck_assert_int_gt(pid, 1);
    /* Killed and waited for before the reply was sent: not even a zombie. */
    ck_assert_msg(process_reaped(pid, 0), "command %d still in /proc after the reply", (int)pid);
    /* The connection goes on. */
    uint8_t ping[SMK_HEADER_SIZE];
    header(ping, SMK_PROTO_VERSION, SMK_PING, 2, 0);
    raw_send(fd, ping, sizeof(ping));
    expect_ping_reply(fd, &st, 2);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(exec_does_not_wait_for_background_processes)
{
    int fd = raw_connect();
    struct smka_stream st;
    smka_stream_init(&st, 0);
    struct smk_msg m;
    /* The background sleep keeps the output pipes open after sh exits. */
    const char *argv[] = {"sh", "-c", "sleep 30 & echo started", NULL};
    double t0 = now_s();
    raw_exec(fd, &st, 1, 0, &m, argv);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_EXITED);
    ck_assert(bytes_eq_str(m.u.exec_reply.out, "started\n"));
    ck_assert_msg(now_s() - t0 < 10, "reply took %.1f s", now_s() - t0);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

/* A connection that ends in the middle of a frame: the agent closes its side
 * at once (no reply, no 10 s stall), the handler exits, and the next
 * connection is served. */
START_TEST(hangup_mid_header_or_mid_body_ends_only_that_connection)
{
    uint8_t frame[SMK_HEADER_SIZE + 100];
    header(frame, SMK_PROTO_VERSION, SMK_WRITE_FILE, 77, 100);
    memset(frame + SMK_HEADER_SIZE, 'x', 100);
    size_t cuts[] = {
        1, 5, SMK_HEADER_SIZE - 1, SMK_HEADER_SIZE, SMK_HEADER_SIZE + 10, sizeof(frame) - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        pid_t before[64];
        int nbefore = handler_pids(before, 64);
        int fd = raw_connect();
        raw_send(fd, frame, cuts[i]);
        pid_t handler = new_handler(before, nbefore);
        double t0 = now_s();
        ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        struct smka_stream st;
        smka_stream_init(&st, 0);
        struct smk_msg m;
        ck_assert_msg(raw_recv(fd, &st, &m, 5000) == 0, "cut at %zu: no end of file", cuts[i]);
        ck_assert_msg(now_s() - t0 < 2, "cut at %zu: closed after %.1f s", cuts[i], now_s() - t0);
        smka_stream_free(&st);
        close(fd);
        /* The handler exited and the agent reaped it. */
        ck_assert_msg(process_reaped(handler, 5), "cut at %zu: handler %d still there", cuts[i],
                      (int)handler);
        struct run r = client(NO_STDIN, "ping", (char *)NULL);
        ck_assert_msg(r.status == 0 && r.secs < 5, "cut at %zu: next ping %d after %.1f s", cuts[i],
                      r.status, r.secs);
        run_free(&r);
    }
}
END_TEST

/* --- the virtio-serial code path, on a socket -------------------------------- */

/* `serve --listen serial-unix:PATH` serves each connection the way it serves
 * the virtio-serial port: no connection boundaries, resync on garbage. One
 * connection stands for the port; bytes of "the next client" are simply
 * sent on it, as when a client vanished and the next one connected before
 * the agent saw a hang-up. */
static char serial_path[160];
static pid_t serial_agent;

static void start_serial_agent(void)
{
    start_agent();
    snprintf(serial_path, sizeof(serial_path), "%s/serial.sock", dir);
    char listen[200];
    snprintf(listen, sizeof(listen), "serial-unix:%s", serial_path);
    char *args[] = {"serve", "--listen", listen, NULL};
    serial_agent = spawn_agent(args, -1, -1, -1);
    for (int i = 0; i < 400 && access(serial_path, F_OK) != 0; i++)
        usleep(50000);
    ck_assert_int_eq(access(serial_path, F_OK), 0);
}

static void stop_serial_agent(void)
{
    if (serial_agent > 0) {
        kill(serial_agent, SIGTERM);
        waitpid(serial_agent, NULL, 0);
        serial_agent = 0;
    }
    stop_agent();
}

static int serial_connect(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%.107s", serial_path);
    for (int i = 0; i < 100; i++) {
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
        usleep(50000);
    }
    ck_abort_msg("connect %s: %s", serial_path, strerror(errno));
    return -1;
}

START_TEST(serial_request_after_a_dead_frame_is_answered_within_seconds)
{
    int fd = serial_connect();
    struct smka_stream st;
    smka_stream_init(&st, 1);
    /* A client sent the start of a 1000-byte WRITE_FILE and vanished. */
    uint8_t dead[SMK_HEADER_SIZE + 10];
    header(dead, SMK_PROTO_VERSION, SMK_WRITE_FILE, 77, 1000);
    memset(dead + SMK_HEADER_SIZE, 'x', 10);
    raw_send(fd, dead, sizeof(dead));
    usleep(100000);
    /* The next one asks twice (a retrying ping), and waits. */
    double t0 = now_s();
    uint8_t ping[SMK_HEADER_SIZE];
    header(ping, SMK_PROTO_VERSION, SMK_PING, 9, 0);
    raw_send(fd, ping, sizeof(ping));
    raw_send(fd, ping, sizeof(ping));
    expect_error(fd, &st, 77, SMK_ETIMEDOUT);
    expect_ping_reply(fd, &st, 9);
    expect_ping_reply(fd, &st, 9);
    double secs = now_s() - t0;
    /* Before: the 10 s stall timer. */
    ck_assert_msg(secs < 5, "answered after %.1f s", secs);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(serial_frame_with_a_frame_inside_survives_a_short_pause)
{
    /* WRITE_FILE whose data is a whole PING frame: the first part ends with
     * that PING, then the sender pauses for less than the quiet time. */
    char *target = path_in_dir("framed");
    uint8_t inner[SMK_HEADER_SIZE];
    header(inner, SMK_PROTO_VERSION, SMK_PING, 5, 0);
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_write_file(&b, 6, target, 0600, inner, sizeof(inner)), 0);
    int fd = serial_connect();
    struct smka_stream st;
    smka_stream_init(&st, 1);
    raw_send(fd, b.data, b.len - 1); /* everything but the last byte... */
    usleep(400000);
    raw_send(fd, b.data + b.len - 1, 1); /* ...which comes later */
    struct smk_msg m;
    ck_assert_int_eq(raw_recv(fd, &st, &m, 15000), 1);
    ck_assert_uint_eq(m.hdr.type, SMK_WRITE_FILE_REPLY);
    ck_assert_uint_eq(m.hdr.id, 6);
    smk_buf_free(&b);
    struct stat sb;
    ck_assert_int_eq(stat(target, &sb), 0);
    ck_assert_int_eq(sb.st_size, SMK_HEADER_SIZE);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

START_TEST(serial_garbage_gets_one_error_and_the_next_frame_is_answered)
{
    int fd = serial_connect();
    struct smka_stream st;
    smka_stream_init(&st, 1);
    uint8_t *junk = random_bytes(4096, 5);
    for (size_t i = 0; i < 4096; i++)
        if (junk[i] == 'S')
            junk[i] = 's';
    raw_send(fd, junk, 4096);
    uint8_t ping[SMK_HEADER_SIZE];
    header(ping, SMK_PROTO_VERSION, SMK_PING, 3, 0);
    raw_send(fd, ping, sizeof(ping));
    expect_error(fd, &st, 0, SMK_EBADMSG);
    expect_ping_reply(fd, &st, 3);
    free(junk);
    smka_stream_free(&st);
    close(fd);
}
END_TEST

/* --- shutdown -------------------------------------------------------------- */

START_TEST(shutdown_replies_then_stops_the_agent)
{
    struct run r = client(NO_STDIN, "shutdown", (char *)NULL);
    ck_assert_msg(r.status == 0, "%s", r.err);
    ck_assert_msg(r.secs < 5, "shutdown took %.1f s", r.secs);
    run_free(&r);
    /* In --listen mode the agent stops instead of the machine. The test runs
     * in a child of the process that started the agent, so it cannot reap
     * it: a zombie is what stopping looks like from here. */
    ck_assert_msg(process_gone(agent_pid, 5), "agent still running after shutdown");
}
END_TEST

static void no_agent_setup(void)
{
    strcpy(dir, "/tmp/smk-agent-e2e-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static Suite *e2e_suite(void)
{
    Suite *s = suite_create("agent end to end");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, no_agent_setup, stop_agent);
    tcase_add_test(tc, version_and_help);
    tcase_add_test(tc, bad_address_is_a_usage_error);
    tcase_add_test(tc, missing_socket_fails_with_the_reason);
    tcase_add_test(tc, ping_wait_outlasts_a_late_agent);
    suite_add_tcase(s, tc);

    tc = tcase_create("exec");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, ping_prints_version_and_times);
    tcase_add_test(tc, exec_uname_matches_this_machine);
    tcase_add_test(tc, exec_passes_stdin_env_and_cwd);
    tcase_add_test(tc, exec_stdin_from_a_file_keeps_binary_bytes);
    tcase_add_test(tc, exec_without_stdin_sees_end_of_file);
    tcase_add_test(tc, exec_default_cwd_is_root);
    tcase_add_test(tc, exec_exit_status_and_separate_streams);
    tcase_add_test(tc, exec_killed_by_signal_is_128_plus_signal);
    tcase_add_test(tc, exec_timeout_kills_the_process_group);
    tcase_add_test(tc, exec_missing_binary_is_127);
    tcase_add_test(tc, exec_not_executable_is_126);
    tcase_add_test(tc, exec_bad_cwd_says_so);
    tcase_add_test(tc, exec_huge_output_is_capped_and_flagged);
    tcase_add_test(tc, exec_argument_limits_are_enforced_by_the_client);
    tcase_add_test(tc, exec_does_not_hold_up_other_connections);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, write_then_read_back);
    tcase_add_test(tc, write_from_stdin_replaces_the_file_whole);
    tcase_add_test(tc, write_into_a_missing_directory_fails);
    tcase_add_test(tc, write_over_the_size_limit_is_refused);
    tcase_add_test(tc, read_of_a_missing_file_fails);
    tcase_add_test(tc, read_of_a_relative_path_is_a_usage_error);
    tcase_add_test(tc, read_of_an_endless_file_is_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, garbage_gets_an_error_and_a_reset);
    tcase_add_test(tc, oversized_length_gets_an_error_with_the_id);
    tcase_add_test(tc, truncated_frame_then_hangup);
    tcase_add_test(tc, bad_frames_that_can_be_skipped_keep_the_connection);
    tcase_add_test(tc, pipelined_requests_are_answered_in_order);
    tcase_add_test(tc, stalled_frame_times_out);
    tcase_add_test(tc, hangup_during_exec_kills_the_command);
    tcase_add_test(tc, more_connections_than_handlers);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile host");
    tcase_set_timeout(tc, 240);
    tcase_add_unchecked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, every_length_field_is_bounded);
    tcase_add_test(tc, exec_of_a_missing_binary_is_a_clean_error);
    tcase_add_test(tc, exec_output_of_256_mib_is_capped_in_bounded_memory);
    tcase_add_test(tc, exec_that_never_exits_is_killed_at_the_timeout_and_reaped);
    tcase_add_test(tc, exec_does_not_wait_for_background_processes);
    tcase_add_test(tc, hangup_mid_header_or_mid_body_ends_only_that_connection);
    suite_add_tcase(s, tc);

    tc = tcase_create("serial");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, start_serial_agent, stop_serial_agent);
    tcase_add_test(tc, serial_request_after_a_dead_frame_is_answered_within_seconds);
    tcase_add_test(tc, serial_frame_with_a_frame_inside_survives_a_short_pause);
    tcase_add_test(tc, serial_garbage_gets_one_error_and_the_next_frame_is_answered);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_set_timeout(tc, 60);
    tcase_add_unchecked_fixture(tc, start_agent, stop_agent);
    tcase_add_test(tc, shutdown_replies_then_stops_the_agent);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PATH-TO-supermachine-agent\n", argv[0]);
        return 2;
    }
    agent = argv[1];
    static char wrap[512];
    snprintf(wrap, sizeof(wrap), "%s",
             getenv("SMK_TEST_WRAPPER") ? getenv("SMK_TEST_WRAPPER") : "");
    for (char *w = strtok(wrap, " "); w && n_wrapper < 15; w = strtok(NULL, " "))
        wrapper[n_wrapper++] = w;
    signal(SIGPIPE, SIG_IGN);
    return run_suite(e2e_suite(), CK_ENV);
}
