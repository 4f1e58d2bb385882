#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static char default_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/* Everything the child needs, prepared before fork so the child only has to
 * call async-signal-safe functions. */
struct plan {
    char *pool; /* the request's strings, NUL-terminated */
    char **argv;
    char **envp; /* entries point into pool or into environ */
    const char *cwd;
    const char *path; /* PATH value used to look up argv[0] */
};

static void plan_free(struct plan *p)
{
    free(p->pool);
    free(p->argv);
    free(p->envp);
}

static size_t name_len(const char *entry)
{
    const char *eq = strchr(entry, '=');
    return eq ? (size_t)(eq - entry) : strlen(entry);
}

static char *copy_out(char **pool, struct smk_bytes b)
{
    char *s = *pool;
    if (b.len)
        memcpy(s, b.ptr, b.len);
    s[b.len] = '\0';
    *pool += b.len + 1;
    return s;
}

static int plan_build(const struct smk_msg *req, struct plan *p)
{
    const struct smk_strlist *av = &req->u.exec.argv, *ev = &req->u.exec.env;
    size_t n_environ = 0;
    while (environ && environ[n_environ])
        n_environ++;

    /* Each string's 4-byte length prefix is room enough for its NUL. */
    size_t pool_len = av->raw.len + ev->raw.len + req->u.exec.cwd.len + 1;
    memset(p, 0, sizeof(*p));
    p->pool = malloc(pool_len);
    p->argv = calloc(av->count + 1, sizeof(char *));
    p->envp = calloc(n_environ + ev->count + 2, sizeof(char *));
    if (!p->pool || !p->argv || !p->envp) {
        plan_free(p);
        return -ENOMEM;
    }

    char *pool = p->pool;
    struct smk_bytes s;
    uint32_t pos = 0;
    for (size_t i = 0; smk_strlist_next(av, &pos, &s); i++)
        p->argv[i] = copy_out(&pool, s);

    /* The agent's own environment, with the request's entries replacing
     * same-named ones. */
    char **req_env = p->envp + n_environ + 1;
    size_t n_req = 0;
    pos = 0;
    while (smk_strlist_next(ev, &pos, &s))
        req_env[n_req++] = copy_out(&pool, s);
    size_t k = 0;
    for (size_t i = 0; i < n_environ; i++) {
        size_t nl = name_len(environ[i]);
        int replaced = 0;
        for (size_t j = 0; j < n_req && !replaced; j++)
            replaced = name_len(req_env[j]) == nl && memcmp(req_env[j], environ[i], nl) == 0;
        if (!replaced)
            p->envp[k++] = environ[i];
    }
    memmove(p->envp + k, req_env, n_req * sizeof(char *));
    k += n_req;
    p->envp[k] = NULL;
    for (size_t i = 0; i < k; i++)
        if (strncmp(p->envp[i], "PATH=", 5) == 0)
            p->path = p->envp[i] + 5;
    if (!p->path) {
        p->envp[k++] = default_path;
        p->envp[k] = NULL;
        p->path = default_path + 5;
    }

    p->cwd = req->u.exec.cwd.len ? copy_out(&pool, req->u.exec.cwd) : NULL;
    return 0;
}

enum { STAGE_EXEC, STAGE_CHDIR, STAGE_USER, STAGE_TTY };

__attribute__((noreturn)) static void child_fail(int report_fd, int stage, int err)
{
    int msg[2] = {stage, err};
    ssize_t w = write(report_fd, msg, sizeof(msg));
    (void)w;
    _exit(127);
}

/* Looks argv[0] up in PATH the way execvp() does, but in the request's PATH
 * rather than the agent's. */
__attribute__((noreturn)) static void child_exec(const struct plan *p, int report_fd)
{
    if (p->cwd && chdir(p->cwd) < 0)
        child_fail(report_fd, STAGE_CHDIR, errno);
    const char *file = p->argv[0];
    if (strchr(file, '/')) {
        execve(file, p->argv, p->envp);
        child_fail(report_fd, STAGE_EXEC, errno);
    }
    int err = ENOENT;
    size_t flen = strlen(file);
    for (const char *dir = p->path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        char cand[PATH_MAX];
        if (dlen + 1 + flen < sizeof(cand)) {
            memcpy(cand, dlen ? dir : ".", dlen ? dlen : 1);
            size_t at = dlen ? dlen : 1;
            cand[at++] = '/';
            memcpy(cand + at, file, flen + 1);
            execve(cand, p->argv, p->envp);
            if (errno == EACCES)
                err = EACCES;
            else if (errno != ENOENT && errno != ENOTDIR)
                child_fail(report_fd, STAGE_EXEC, errno);
        }
        if (!*end)
            break;
        dir = end;
    }
    child_fail(report_fd, STAGE_EXEC, err);
}

static void child_setup(int in, int out, int err)
{
    /* Its own session, so a timeout can kill everything it started. */
    setsid();
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    /* An init that started the agent may have leaked descriptors into it. */
    close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Ignored signals stay ignored across exec; the agent ignores SIGPIPE. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
}

struct capture {
    int fd;
    uint8_t *buf;
    size_t len, cap;
    int truncated;
};

/* Reads what is there, at most max_reads times so a child that writes
 * without pause cannot starve the timeout check; keeps reading past the cap
 * so the child never blocks on a full pipe. */
static void capture_drain(struct capture *c, int max_reads)
{
    while (c->fd >= 0 && max_reads-- > 0) {
        uint8_t scratch[16384];
        uint8_t *dst = scratch;
        size_t room = sizeof(scratch);
        if (c->len < SMK_MAX_OUTPUT) {
            if (c->len == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 65536;
                if (cap > SMK_MAX_OUTPUT)
                    cap = SMK_MAX_OUTPUT;
                uint8_t *p = realloc(c->buf, cap);
                if (p) {
                    c->buf = p;
                    c->cap = cap;
                }
            }
            if (c->len < c->cap) {
                dst = c->buf + c->len;
                room = c->cap - c->len;
            }
        }
        ssize_t r = read(c->fd, dst, room);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            return;
        if (r <= 0) {
            close(c->fd);
            c->fd = -1;
            return;
        }
        if (dst == scratch)
            c->truncated = 1;
        else
            c->len += (size_t)r;
    }
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Whether the peer has gone away. A virtio-serial port reports that as a
 * hang-up; a socket as end of file, told apart from a pipelined request by
 * peeking. */
static int peer_gone(int fd, int is_serial, short revents, int *watch)
{
    if (is_serial)
        return (revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0)
        *watch = 0;
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
}

int smka_exec(const struct smk_msg *req, int peer_fd, int peer_is_serial,
              struct smka_exec_result *res, char *why, size_t why_len)
{
    memset(res, 0, sizeof(*res));
    struct plan plan;
    if (plan_build(req, &plan) < 0) {
        snprintf(why, why_len, "out of memory");
        return -ENOMEM;
    }

    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(rep, O_CLOEXEC) < 0) {
        int e = errno;
        snprintf(why, why_len, "pipe: %s", strerror(e));
        for (int i = 0; i < 2; i++) {
            close_fd(&in[i]);
            close_fd(&out[i]);
            close_fd(&err[i]);
            close_fd(&rep[i]);
        }
        plan_free(&plan);
        return -e;
    }

    pid_t pid = fork();
    if (pid == 0) {
        child_setup(in[0], out[1], err[1]);
        child_exec(&plan, rep[1]);
    }
    int fork_errno = errno;
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&rep[1]);

    int report[2] = {0, 0};
    ssize_t got = -1;
    if (pid > 0) {
        /* End of file here means the exec succeeded (close-on-exec). */
        do
            got = read(rep[0], report, sizeof(report));
        while (got < 0 && errno == EINTR);
    }
    close_fd(&rep[0]);
    if (pid < 0 || got == (ssize_t)sizeof(report)) {
        int e = pid < 0 ? fork_errno : report[1];
        if (pid < 0)
            snprintf(why, why_len, "fork: %s", strerror(e));
        else if (report[0] == STAGE_CHDIR)
            snprintf(why, why_len, "chdir %s: %s", plan.cwd, strerror(e));
        else
            snprintf(why, why_len, "%s: %s", plan.argv[0], strerror(e));
        if (pid > 0)
            waitpid(pid, NULL, 0);
        close_fd(&in[1]);
        close_fd(&out[0]);
        close_fd(&err[0]);
        plan_free(&plan);
        return -e;
    }
    plan_free(&plan);

    struct capture cout = {.fd = out[0]}, cerr = {.fd = err[0]};
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(cout.fd, F_SETFL, O_NONBLOCK);
    fcntl(cerr.fd, F_SETFL, O_NONBLOCK);
    const uint8_t *in_data = req->u.exec.stdin_data.ptr;
    size_t in_left = req->u.exec.stdin_data.len;
    if (in_left == 0)
        close_fd(&in[1]);

#ifdef SYS_pidfd_open
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#else
    int pidfd = -1;
#endif
    uint32_t timeout_ms = req->u.exec.timeout_ms;
    int64_t deadline = timeout_ms ? smka_now_ms() + timeout_ms : -1;
    int watch_peer = peer_fd >= 0, status = 0, exited = 0, timed_out = 0, cancelled = 0;
    int64_t hup_since = -1, peer_recheck = 0;
    int poll_errno = 0;
    while (!exited && !timed_out && !cancelled && !poll_errno) {
        struct pollfd pf[5];
        int n = 0, i_in = -1, i_out = -1, i_err = -1, i_pid = -1, i_peer = -1;
        if (in[1] >= 0)
            pf[i_in = n++] = (struct pollfd){.fd = in[1], .events = POLLOUT};
        if (cout.fd >= 0)
            pf[i_out = n++] = (struct pollfd){.fd = cout.fd, .events = POLLIN};
        if (cerr.fd >= 0)
            pf[i_err = n++] = (struct pollfd){.fd = cerr.fd, .events = POLLIN};
        if (pidfd >= 0)
            pf[i_pid = n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        /* A serial hang-up that may be transient is looked at again later,
         * not spun on (poll reports it at once for as long as it lasts). */
        int peer_due = smka_now_ms() >= peer_recheck;
        if (watch_peer && peer_due)
            pf[i_peer = n++] =
                (struct pollfd){.fd = peer_fd, .events = peer_is_serial ? 0 : POLLIN | POLLRDHUP};
        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - smka_now_ms();
            wait_ms = left < 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        if (watch_peer && !peer_due && (wait_ms < 0 || wait_ms > SERIAL_HUP_RECHECK_MS))
            wait_ms = SERIAL_HUP_RECHECK_MS;
        /* Without a pidfd (kernels before 5.3) the exit is found by polling. */
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > 50))
            wait_ms = 50;
        int r = poll(pf, (nfds_t)n, wait_ms);
        if (r < 0 && errno != EINTR)
            poll_errno = errno;
        if (r <= 0) {
            if (deadline >= 0 && smka_now_ms() >= deadline)
                timed_out = 1;
            else if (pidfd < 0 && waitpid(pid, &status, WNOHANG) == pid)
                exited = 1;
            continue;
        }
        if (i_in >= 0 && pf[i_in].revents) {
            ssize_t w = write(in[1], in_data, in_left);
            if (w > 0) {
                in_data += w;
                in_left -= (size_t)w;
            }
            /* A child that stops reading its stdin early is not an error. */
            if (in_left == 0 || (w < 0 && errno != EAGAIN && errno != EINTR))
                close_fd(&in[1]);
        }
        if (i_out >= 0 && pf[i_out].revents)
            capture_drain(&cout, 64);
        if (i_err >= 0 && pf[i_err].revents)
            capture_drain(&cerr, 64);
        if (i_peer >= 0 && !pf[i_peer].revents)
            hup_since = -1;
        if (i_peer >= 0 && pf[i_peer].revents &&
            peer_gone(peer_fd, peer_is_serial, pf[i_peer].revents, &watch_peer)) {
            /* A serial hang-up is believed once it has lasted (smka_hup_lasted). */
            int64_t now = smka_now_ms();
            if (!peer_is_serial || smka_hup_lasted(&hup_since, now, SERIAL_HUP_GRACE_MS))
                cancelled = 1;
            else
                peer_recheck = now + SERIAL_HUP_RECHECK_MS;
        }
        if (i_pid >= 0 && pf[i_pid].revents && waitpid(pid, &status, 0) == pid)
            exited = 1;
    }
    if (!exited) {
        kill(-pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    /* What the child wrote before it ended is in the pipes by now; output of
     * background processes it left behind is not waited for. */
    capture_drain(&cout, 256);
    capture_drain(&cerr, 256);
    close_fd(&cout.fd);
    close_fd(&cerr.fd);
    close_fd(&in[1]);
    if (pidfd >= 0)
        close(pidfd);

    if (cancelled || poll_errno) {
        free(cout.buf);
        free(cerr.buf);
        if (poll_errno)
            snprintf(why, why_len, "poll: %s", strerror(poll_errno));
        else
            snprintf(why, why_len, "peer went away; process group killed");
        return cancelled ? -ECANCELED : -poll_errno;
    }
    if (timed_out) {
        res->status = SMK_TIMED_OUT;
        res->code = SIGKILL;
    } else if (WIFSIGNALED(status)) {
        res->status = SMK_SIGNALED;
        res->code = (uint32_t)WTERMSIG(status);
    } else {
        res->status = SMK_EXITED;
        res->code = (uint32_t)WEXITSTATUS(status);
    }
    res->flags = (cout.truncated ? SMK_EXEC_STDOUT_TRUNCATED : 0) |
                 (cerr.truncated ? SMK_EXEC_STDERR_TRUNCATED : 0);
    res->out = cout.buf;
    res->out_len = cout.len;
    res->err = cerr.buf;
    res->err_len = cerr.len;
    return 0;
}

static int open_pty(int *master, char *slave, size_t slave_len)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return -errno;
    if (grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, slave, slave_len) != 0) {
        int e = errno;
        close(m);
        return -e;
    }
    *master = m;
    return 0;
}

int smka_spawn(const struct smk_msg *req, struct smka_spawned *sp, char *why, size_t why_len)
{
    memset(sp, 0, sizeof(*sp));
    sp->in = sp->out = sp->err = -1;
    struct plan plan;
    if (plan_build(req, &plan) < 0) {
        snprintf(why, why_len, "out of memory");
        return -ENOMEM;
    }
    uint32_t flags = req->u.exec.flags;
    gid_t groups[SMK_MAX_GROUPS];
    size_t ngroups = req->u.exec.groups.count;
    for (size_t i = 0; i < ngroups; i++)
        groups[i] = smk_u32list_get(&req->u.exec.groups, (uint32_t)i);

    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    int master = -1;
    char slave[128];
    int r = 0;
    if (pipe2(rep, O_CLOEXEC) < 0)
        r = -errno;
    else if (flags & SMK_SPAWN_TTY)
        r = open_pty(&master, slave, sizeof(slave));
    else if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0)
        r = -errno;
    if (r < 0) {
        snprintf(why, why_len, "%s: %s", (flags & SMK_SPAWN_TTY) ? "pty" : "pipe", strerror(-r));
        for (int i = 0; i < 2; i++) {
            close_fd(&in[i]);
            close_fd(&out[i]);
            close_fd(&err[i]);
            close_fd(&rep[i]);
        }
        close_fd(&master);
        plan_free(&plan);
        return r;
    }
    if (master >= 0 && (req->u.exec.rows || req->u.exec.cols)) {
        struct winsize ws = {.ws_row = (unsigned short)req->u.exec.rows,
                             .ws_col = (unsigned short)req->u.exec.cols};
        ioctl(master, TIOCSWINSZ, &ws);
    }

    pid_t pid = fork();
    if (pid == 0) {
        if (master >= 0) {
            setsid();
            int s = open(slave, O_RDWR | O_NOCTTY);
            if (s < 0 || ioctl(s, TIOCSCTTY, 0) < 0)
                child_fail(rep[1], STAGE_TTY, errno);
            child_setup(s, s, s);
        } else {
            child_setup(in[0], out[1], err[1]);
        }
        if (flags & SMK_SPAWN_USER) {
            if (setgroups(ngroups, groups) < 0 || setgid(req->u.exec.gid) < 0 ||
                setuid(req->u.exec.uid) < 0)
                child_fail(rep[1], STAGE_USER, errno);
        }
        child_exec(&plan, rep[1]);
    }
    int fork_errno = errno;
    close_fd(&in[0]);
    close_fd(&out[1]);
    close_fd(&err[1]);
    close_fd(&rep[1]);
    int report[2] = {0, 0};
    ssize_t got = -1;
    if (pid > 0) {
        do
            got = read(rep[0], report, sizeof(report));
        while (got < 0 && errno == EINTR);
    }
    close_fd(&rep[0]);
    if (pid < 0 || got == (ssize_t)sizeof(report)) {
        int e = pid < 0 ? fork_errno : report[1];
        if (pid < 0)
            snprintf(why, why_len, "fork: %s", strerror(e));
        else if (report[0] == STAGE_CHDIR)
            snprintf(why, why_len, "chdir %s: %s", plan.cwd, strerror(e));
        else if (report[0] == STAGE_USER)
            snprintf(why, why_len, "switching to uid %u gid %u: %s", req->u.exec.uid,
                     req->u.exec.gid, strerror(e));
        else if (report[0] == STAGE_TTY)
            snprintf(why, why_len, "controlling terminal %s: %s", slave, strerror(e));
        else
            snprintf(why, why_len, "%s: %s", plan.argv[0], strerror(e));
        if (pid > 0)
            waitpid(pid, NULL, 0);
        close_fd(&in[1]);
        close_fd(&out[0]);
        close_fd(&err[0]);
        close_fd(&master);
        plan_free(&plan);
        return -e;
    }
    plan_free(&plan);
    sp->pid = pid;
    if (master >= 0) {
        sp->tty = 1;
        sp->in = master;
        sp->out = dup(master);
        if (sp->out >= 0)
            fcntl(sp->out, F_SETFD, FD_CLOEXEC);
    } else {
        sp->in = in[1];
        sp->out = out[0];
        sp->err = err[0];
    }
    int fds[3] = {sp->in, sp->out, sp->err};
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            fcntl(fds[i], F_SETFL, O_NONBLOCK);
    return 0;
}

void smka_exec_result_free(struct smka_exec_result *res)
{
    free(res->out);
    free(res->err);
    memset(res, 0, sizeof(*res));
}
