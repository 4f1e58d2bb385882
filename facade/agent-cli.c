/*
 * smkernel agent: drive the guest agent from a shell through the library's client
 * (smk_agent_*). SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include "agent-cli.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <smkernel.h>

enum {
    EXIT_FAIL = 1,
    EXIT_USAGE = 2,
    EXIT_CANNOT_RUN = 125,
    EXIT_NOT_EXEC = 126,
    EXIT_NOT_FOUND = 127
};

static const char agent_usage[] =
    "usage: smkernel agent --connect ADDR [--timeout SEC] COMMAND\n"
    "\n"
    "ADDR: unix:PATH (qemu virtio-serial chardev socket), vsock:CID:PORT, or\n"
    "hvsock:PATH:PORT (Firecracker / Cloud Hypervisor hybrid vsock).\n"
    "commands:\n"
    "  ping                         agent version, protocol, guest uptime\n"
    "  exec [--tty] [--env K=V]... [--cwd DIR] [--user UID[:GID]] -- ARGV...\n"
    "                               run ARGV, streaming stdin, stdout and stderr; signals\n"
    "                               (INT, TERM, HUP, QUIT) are forwarded; exits with the\n"
    "                               command's status (128+N for signal N)\n"
    "  cp [--mode OCTAL] LOCAL :GUESTPATH     copy into the guest\n"
    "  cp :GUESTPATH LOCAL                    copy out of the guest ('-' is stdout)\n"
    "  shutdown [--poweroff]        reboot (the default: ends qemu with -no-reboot) or power off\n"
    "--timeout bounds connecting and each request (default 30 s); exec waits for the command\n"
    "as long as it runs.\n";

__attribute__((format(printf, 1, 2))) static int usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("smkernel agent: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", agent_usage);
    return EXIT_USAGE;
}

static int failed(struct smk_agent *a, const char *what, int r)
{
    const char *msg = a ? smk_agent_error(a) : "";
    if (msg && *msg)
        fprintf(stderr, "smkernel agent: %s: %s\n", what, msg);
    else
        fprintf(stderr, "smkernel agent: %s: %s\n", what, strerror(-r));
    return EXIT_FAIL;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, -1);
            continue;
        }
        if (w <= 0)
            return -errno;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Signals reach the loop through a pipe (portable, async-signal-safe). */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    unsigned char c = (unsigned char)sig;
    int e = errno;
    ssize_t w = write(sig_pipe[1], &c, 1);
    (void)w;
    errno = e;
}

static int read_local(const char *path, uint8_t **data, size_t *len);

/* An agent of protocol 1 has no processes: the command runs to completion (EXEC) with the
 * CLI's stdin read first (at most 15 MiB), its output shown at the end. */
static int exec_batch(struct smk_agent *a, struct smk_agent_cmd *cmd, int tty_in, const char **env)
{
    uint8_t *in = NULL;
    size_t in_len = 0;
    if (!tty_in) {
        int r = read_local("-", &in, &in_len);
        if (r < 0 || in_len > (15u << 20)) {
            fprintf(stderr, "smkernel agent: exec: stdin: %s\n",
                    r < 0 ? strerror(-r) : "over the 15 MiB a protocol-1 agent takes");
            free(in);
            free(env);
            return EXIT_CANNOT_RUN;
        }
    }
    cmd->stdin_data = in;
    cmd->stdin_len = in_len;
    struct smk_agent_exec_result res;
    int r = smk_agent_exec(a, cmd, &res, -1);
    free(in);
    free(env);
    if (r < 0) {
        failed(a, "exec", r);
        return r == -ENOENT || r == -ENOTDIR   ? EXIT_NOT_FOUND
               : r == -EACCES || r == -ENOEXEC ? EXIT_NOT_EXEC
                                               : EXIT_CANNOT_RUN;
    }
    write_all(1, res.out, res.out_len);
    write_all(2, res.err, res.err_len);
    if (res.flags & (SMK_AGENT_STDOUT_TRUNCATED | SMK_AGENT_STDERR_TRUNCATED))
        fprintf(stderr, "smkernel agent: exec: output cut at 4 MiB (a protocol-1 agent)\n");
    int rc = res.status == SMK_AGENT_SIGNALED ? 128 + (res.code & 0x7f) : res.code & 0xff;
    smk_agent_exec_result_free(&res);
    return rc;
}

static int cmd_exec(struct smk_agent *a, int argc, char **argv, int timeout_ms)
{
    const char **env = calloc((size_t)argc + 1, sizeof(char *));
    struct smk_agent_cmd cmd = {.env = env};
    int i = 0;
    if (!env)
        return EXIT_CANNOT_RUN;
    for (; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) {
            i++;
            break;
        }
        if (strncmp(o, "--", 2) != 0)
            break;
        if (strcmp(o, "--tty") == 0) {
            cmd.flags |= SMK_AGENT_TTY;
        } else if ((strcmp(o, "--env") == 0 || strcmp(o, "--cwd") == 0 ||
                    strcmp(o, "--user") == 0) &&
                   i + 1 >= argc) {
            free(env);
            usage("exec: %s needs a value (%s)", o,
                  o[2] == 'e'   ? "K=V"
                  : o[2] == 'c' ? "DIR"
                                : "UID[:GID]");
            return EXIT_CANNOT_RUN;
        } else if (strcmp(o, "--env") == 0) {
            if (!strchr(argv[i + 1], '=') || argv[i + 1][0] == '=') {
                usage("exec: --env wants K=V, not '%s'", argv[i + 1]);
                free(env);
                return EXIT_CANNOT_RUN;
            }
            env[cmd.envc++] = argv[++i];
        } else if (strcmp(o, "--cwd") == 0) {
            cmd.cwd = argv[++i];
        } else if (strcmp(o, "--user") == 0) {
            char *end;
            unsigned long uid = strtoul(argv[++i], &end, 10), gid = uid;
            if (*end == ':')
                gid = strtoul(end + 1, &end, 10);
            if (*end || argv[i][0] == '\0' || uid > 0xffffffffUL || gid > 0xffffffffUL) {
                usage("exec: --user wants UID[:GID] (numbers), not '%s'", argv[i]);
                free(env);
                return EXIT_CANNOT_RUN;
            }
            cmd.flags |= SMK_AGENT_USER;
            cmd.uid = (uint32_t)uid;
            cmd.gid = (uint32_t)gid;
        } else {
            usage("exec: unknown option '%s'", o);
            free(env);
            return EXIT_CANNOT_RUN;
        }
    }
    if (i >= argc) {
        free(env);
        usage("exec: no command given");
        return EXIT_CANNOT_RUN;
    }
    cmd.argv = (const char *const *)argv + i;
    cmd.argc = (size_t)(argc - i);
    int tty_in = isatty(0);
    struct winsize ws;
    if ((cmd.flags & SMK_AGENT_TTY) && tty_in && ioctl(0, TIOCGWINSZ, &ws) == 0) {
        cmd.rows = ws.ws_row;
        cmd.cols = ws.ws_col;
    }
    if (smk_agent_proto(a) < 2 && !(cmd.flags & (SMK_AGENT_TTY | SMK_AGENT_USER)))
        return exec_batch(a, &cmd, tty_in, env);
    uint32_t proc, pid;
    int r = smk_agent_spawn(a, &cmd, &proc, &pid, timeout_ms);
    free(env);
    if (r < 0) {
        failed(a, "exec", r);
        return r == -ENOENT || r == -ENOTDIR   ? EXIT_NOT_FOUND
               : r == -EACCES || r == -ENOEXEC ? EXIT_NOT_EXEC
                                               : EXIT_CANNOT_RUN;
    }

    /* The local terminal goes raw while a remote one is attached. */
    struct termios saved;
    int raw = (cmd.flags & SMK_AGENT_TTY) && tty_in && tcgetattr(0, &saved) == 0;
    if (raw) {
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(0, TCSANOW, &t);
    }
    if (pipe(sig_pipe) == 0) {
        fcntl(sig_pipe[0], F_SETFL, O_NONBLOCK);
        fcntl(sig_pipe[1], F_SETFL, O_NONBLOCK);
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH};
        for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++)
            sigaction(sigs[k], &sa, NULL);
    }
    signal(SIGPIPE, SIG_IGN);

    int stdin_open = 1, status = -1, code = 0, err = 0;
    uint8_t buf[65536];
    while (status < 0) {
        struct smk_agent_event ev;
        int k;
        while ((k = smk_agent_poll_event(a, &ev)) == 1) {
            if (ev.type == SMK_AGENT_EXIT) {
                status = ev.status;
                code = ev.code;
                break;
            }
            write_all(ev.stream == 2 ? 2 : 1, ev.data, ev.len);
        }
        if (k < 0) {
            err = k;
            break;
        }
        if (status >= 0)
            break;
        struct pollfd pf[3] = {{.fd = smk_agent_fd(a), .events = POLLIN},
                               {.fd = sig_pipe[0], .events = POLLIN},
                               {.fd = stdin_open ? 0 : -1, .events = POLLIN}};
        if (poll(pf, 3, -1) < 0 && errno != EINTR) {
            err = -errno;
            break;
        }
        if (pf[1].revents & POLLIN) {
            unsigned char s;
            while (read(sig_pipe[0], &s, 1) == 1) {
                if (s == SIGWINCH) {
                    if (raw && ioctl(0, TIOCGWINSZ, &ws) == 0)
                        smk_agent_resize(a, proc, ws.ws_row, ws.ws_col, timeout_ms);
                } else {
                    smk_agent_signal(a, proc, s, 0, timeout_ms);
                }
            }
        }
        if (pf[2].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n > 0) {
                r = smk_agent_stdin(a, proc, buf, (size_t)n, 0, timeout_ms);
            } else if (n == 0 || errno != EINTR) {
                stdin_open = 0;
                r = smk_agent_stdin(a, proc, NULL, 0, 1, timeout_ms);
            }
            /* A command that closed its stdin: the rest is not wanted. */
            if (r == -EPIPE)
                stdin_open = 0;
            else if (r < 0 && r != -ESRCH) {
                err = r;
                break;
            }
        }
    }
    if (raw)
        tcsetattr(0, TCSANOW, &saved);
    if (err < 0) {
        failed(a, "exec", err);
        return EXIT_CANNOT_RUN;
    }
    return status == SMK_AGENT_SIGNALED ? 128 + (code & 0x7f) : code & 0xff;
}

static int read_local(const char *path, uint8_t **data, size_t *len)
{
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 65536, n = 0;
    uint8_t *p = malloc(cap);
    int r = 0;
    for (;;) {
        if (!p) {
            r = -ENOMEM;
            break;
        }
        if (n == cap) {
            if (cap >= (16u << 20)) {
                r = -EFBIG;
                break;
            }
            uint8_t *q = realloc(p, cap * 2);
            if (!q) {
                r = -ENOMEM;
                break;
            }
            p = q;
            cap *= 2;
        }
        ssize_t k = read(fd, p + n, cap - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = -errno;
            break;
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    if (fd != 0)
        close(fd);
    if (r < 0) {
        free(p);
        return r;
    }
    *data = p;
    *len = n;
    return 0;
}

static int cmd_cp(struct smk_agent *a, int argc, char **argv, int timeout_ms)
{
    uint32_t mode = 0644;
    int i = 0;
    if (i < argc && strcmp(argv[i], "--mode") == 0) {
        if (i + 1 >= argc)
            return usage("cp: --mode needs a value (OCTAL)");
        char *end;
        unsigned long m = strtoul(argv[i + 1], &end, 8);
        if (*end || !argv[i + 1][0] || m > 07777)
            return usage("cp: --mode '%s' is not an octal mode (0 to 7777)", argv[i + 1]);
        mode = (uint32_t)m;
        i += 2;
    }
    if (i < argc && strcmp(argv[i], "--") == 0)
        i++;
    if (argc - i != 2)
        return usage("cp: expected a source and a destination, %d argument%s given", argc - i,
                     argc - i == 1 ? "" : "s");
    const char *src = argv[i], *dst = argv[i + 1];
    if (dst[0] == ':' && src[0] != ':') {
        uint8_t *data = NULL;
        size_t len = 0;
        int r = read_local(src, &data, &len);
        if (r < 0) {
            fprintf(stderr, "smkernel agent: cp: %s: %s\n", src,
                    r == -EFBIG ? "larger than the 15 MiB limit" : strerror(-r));
            return EXIT_FAIL;
        }
        r = smk_agent_write_file(a, dst + 1, mode, data, len, timeout_ms);
        free(data);
        return r < 0 ? failed(a, "cp", r) : 0;
    }
    if (src[0] == ':' && dst[0] != ':') {
        void *data;
        size_t len;
        int truncated = 0;
        int r = smk_agent_read_file(a, src + 1, 0, &data, &len, &truncated, timeout_ms);
        if (r < 0)
            return failed(a, "cp", r);
        int fd =
            strcmp(dst, "-") == 0 ? 1 : open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write_all(fd, data, len) < 0) {
            fprintf(stderr, "smkernel agent: cp: %s: %s\n", dst, strerror(errno));
            free(data);
            return EXIT_FAIL;
        }
        if (fd != 1)
            close(fd);
        free(data);
        if (truncated) {
            fprintf(stderr, "smkernel agent: cp: %s: truncated at 15 MiB\n", src + 1);
            return EXIT_FAIL;
        }
        return 0;
    }
    return usage("cp: exactly one side is a guest path, written :PATH");
}

int smk_cli_agent(int argc, char **argv)
{
    const char *addr = NULL;
    int timeout_ms = 30000;
    int i = 0;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if ((strcmp(argv[i], "--connect") == 0 || strcmp(argv[i], "--timeout") == 0) &&
            i + 1 >= argc)
            return usage("%s needs a value (%s)", argv[i], argv[i][2] == 'c' ? "ADDR" : "seconds");
        if (strcmp(argv[i], "--connect") == 0) {
            addr = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0) {
            char *end;
            double s = strtod(argv[++i], &end);
            if (*end || !(s > 0 && s < 2000000))
                return usage("--timeout wants seconds (more than 0), not '%s'", argv[i]);
            timeout_ms = (int)(s * 1000);
        } else if (strcmp(argv[i], "--help") == 0) {
            fputs(agent_usage, stdout);
            return 0;
        } else {
            return usage("unknown option '%s'", argv[i]);
        }
    }
    if (!addr)
        return usage("--connect ADDR is required");
    if (i >= argc)
        return usage("no command given");
    const char *cmd = argv[i++];
    if (strcmp(cmd, "ping") && strcmp(cmd, "exec") && strcmp(cmd, "cp") && strcmp(cmd, "shutdown"))
        return usage("unknown command '%s'", cmd);
    struct smk_agent *a = NULL;
    int r = smk_agent_connect(addr, timeout_ms, &a);
    if (r < 0) {
        fprintf(stderr, "smkernel agent: connect %s: %s\n", addr, strerror(-r));
        return strcmp(cmd, "exec") == 0 ? EXIT_CANNOT_RUN : EXIT_FAIL;
    }
    int rc;
    if (strcmp(cmd, "ping") == 0) {
        struct smk_agent_info info;
        r = smk_agent_ping(a, &info, timeout_ms);
        if (r < 0)
            rc = failed(a, "ping", r);
        else
            rc = printf("version=%s proto=%u negotiated=%d uptime_ns=%llu ready_ns=%llu\n",
                        info.version, info.proto, smk_agent_proto(a),
                        (unsigned long long)info.uptime_ns, (unsigned long long)info.ready_ns) < 0;
    } else if (strcmp(cmd, "exec") == 0) {
        rc = cmd_exec(a, argc - i, argv + i, timeout_ms);
    } else if (strcmp(cmd, "cp") == 0) {
        rc = cmd_cp(a, argc - i, argv + i, timeout_ms);
    } else {
        int poweroff = i < argc && strcmp(argv[i], "--poweroff") == 0;
        if (i + poweroff != argc)
            rc = usage("shutdown takes only --poweroff, not '%s'", argv[i + poweroff]);
        else
            rc = (r = smk_agent_shutdown(a, poweroff, timeout_ms)) < 0 ? failed(a, "shutdown", r)
                                                                       : 0;
    }
    smk_agent_close(a);
    return rc;
}
