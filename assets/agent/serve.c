#define _GNU_SOURCE
#include "agent.h"
#include "version.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#define MAX_CONNS 8             /* socket connections served at once */
#define DISCOVERY_FAST_MS 1000  /* retry interval while no transport is up */
#define DISCOVERY_SLOW_MS 10000 /* ... and for the other one once one is */
#define SERIAL_RESTART_MS 1000

struct server {
    const struct smka_serve_opts *opts;
    struct smka_conn_ctx ctx;
    int pid1;
    int sfd;
    int listen_fd;     /* vsock, or the unix socket of --listen */
    int listen_serial; /* --listen serial-unix:PATH: connections served as the serial port */
    pid_t serial_pid;
    pid_t conns[MAX_CONNS];
    int nconns;
    int64_t next_discovery;
    int vsock_reported, serial_reported; /* failures are logged once */
    sigset_t old_mask;
};

static void mark_ready(struct server *s)
{
    if (s->ctx.ready_ns)
        return;
    s->ctx.ready_ns = smka_boottime_ns();
    smka_log("%s ready after %llu ms", SMKA_AGENT_VERSION,
             (unsigned long long)(s->ctx.ready_ns / 1000000));
}

static int listen_vsock(unsigned port)
{
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int read_small_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -errno;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\0'))
        n--;
    buf[n] = '\0';
    return 0;
}

/* /dev/virtio-ports/NAME would need udev; the port's name is in sysfs. */
static int open_serial(const char *name, char *dev, size_t dev_len)
{
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir)
        return -ENOENT;
    int r = -ENOENT;
    struct dirent *e;
    while ((e = readdir(dir))) {
        char path[300], port[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
        if (read_small_file(path, port, sizeof(port)) < 0 || strcmp(port, name) != 0)
            continue;
        snprintf(dev, dev_len, "/dev/%s", e->d_name);
        int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        r = fd < 0 ? -errno : fd;
        break;
    }
    closedir(dir);
    return r;
}

static pid_t spawn(struct server *s, int fd, int serial)
{
    pid_t pid = fork();
    if (pid == 0) {
        sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
        close(s->sfd);
        if (s->listen_fd >= 0)
            close(s->listen_fd);
        if (serial)
            smka_serve_serial(fd, &s->ctx);
        else
            smka_serve_stream(fd, &s->ctx);
        _exit(0);
    }
    if (pid < 0)
        smka_log("fork: %s", strerror(errno));
    close(fd);
    return pid;
}

static void discover(struct server *s)
{
    if (s->listen_fd < 0) {
        int fd = listen_vsock(s->opts->vsock_port);
        if (fd >= 0) {
            s->listen_fd = fd;
            mark_ready(s);
            smka_log("listening on vsock port %u", s->opts->vsock_port);
        } else if (!s->vsock_reported) {
            s->vsock_reported = 1;
            smka_log("vsock port %u: %s; will retry", s->opts->vsock_port, strerror(-fd));
        }
    }
    if (s->serial_pid == 0) {
        char dev[300] = "";
        int fd = open_serial(s->opts->serial_name, dev, sizeof(dev));
        if (fd >= 0) {
            mark_ready(s);
            s->serial_pid = spawn(s, fd, 1);
            if (s->serial_pid < 0)
                s->serial_pid = 0;
            else
                smka_log("serving virtio-serial port %s (%s)", s->opts->serial_name, dev);
        } else if (!s->serial_reported) {
            s->serial_reported = 1;
            if (dev[0])
                smka_log("virtio-serial port %s (%s): %s; will retry", s->opts->serial_name, dev,
                         strerror(-fd));
            else
                smka_log("virtio-serial port %s not found; will retry", s->opts->serial_name);
        }
    }
    int any_up = s->listen_fd >= 0 || s->serial_pid > 0;
    s->next_discovery = smka_now_ms() + (any_up ? DISCOVERY_SLOW_MS : DISCOVERY_FAST_MS);
}

static void reap(struct server *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == s->serial_pid) {
            s->serial_pid = 0;
            s->serial_reported = 0;
            int64_t soon = smka_now_ms() + SERIAL_RESTART_MS;
            if (s->next_discovery > soon)
                s->next_discovery = soon;
            continue;
        }
        for (int i = 0; i < s->nconns; i++) {
            if (s->conns[i] == pid) {
                s->conns[i] = s->conns[--s->nconns];
                break;
            }
        }
    }
}

/* Returns 1 when the agent should stop (it is not PID 1 and was asked to). */
static int handle_signals(struct server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap(s);
            break;
        case SIGTERM:
        case SIGINT:
            if (!s->pid1)
                return 1;
            smka_log("signal %u: rebooting", si.ssi_signo);
            smka_pid1_shutdown(SMK_SHUTDOWN_REBOOT);
            break;
        case SIGUSR2:
        case SIGPWR:
            smka_log("signal %u: powering off", si.ssi_signo);
            smka_pid1_shutdown(SMK_SHUTDOWN_POWEROFF);
            break;
        }
    }
    return 0;
}

static void accept_one(struct server *s)
{
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            smka_log("accept: %s", strerror(errno));
        return;
    }
    pid_t pid = spawn(s, fd, s->listen_serial);
    if (pid > 0)
        s->conns[s->nconns++] = pid;
}

static void stop_children(struct server *s)
{
    for (int i = 0; i < s->nconns; i++)
        kill(s->conns[i], SIGTERM);
    if (s->serial_pid > 0)
        kill(s->serial_pid, SIGTERM);
}

int smka_serve(const struct smka_serve_opts *opts)
{
    struct server s = {.opts = opts, .pid1 = getpid() == 1, .sfd = -1, .listen_fd = -1};
    s.ctx.test_mode = opts->listen != NULL;
    int stderr_open = fcntl(2, F_GETFD) >= 0;
    if (!s.ctx.test_mode)
        smka_setup_system();
    smka_open_std_fds();
    if (!stderr_open)
        smka_log_to_kmsg();
    if (chdir("/") < 0)
        smka_log("chdir /: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (s.pid1) {
        sigaddset(&mask, SIGUSR2);
        sigaddset(&mask, SIGPWR);
    }
    sigprocmask(SIG_BLOCK, &mask, &s.old_mask);
    s.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sfd < 0) {
        smka_log("signalfd: %s", strerror(errno));
        return 1;
    }

    if (s.ctx.test_mode) {
        /* serial-unix: each connection is served the way the virtio-serial
         * port is (resync, hang-up grace, no end of connection), so tests
         * can reach that code without a VM. */
        const char *path = NULL;
        if (strncmp(opts->listen, "unix:", 5) == 0) {
            path = opts->listen + 5;
        } else if (strncmp(opts->listen, "serial-unix:", 12) == 0) {
            path = opts->listen + 12;
            s.listen_serial = 1;
        } else {
            smka_log("--listen %s: only unix:PATH and serial-unix:PATH are supported",
                     opts->listen);
            return 1;
        }
        s.listen_fd = listen_unix(path);
        if (s.listen_fd < 0) {
            smka_log("listen %s: %s", opts->listen, strerror(-s.listen_fd));
            return 1;
        }
        mark_ready(&s);
    }

    for (;;) {
        int64_t now = smka_now_ms();
        int pending = !s.ctx.test_mode && (s.listen_fd < 0 || s.serial_pid == 0);
        if (pending && now >= s.next_discovery) {
            discover(&s);
            continue;
        }
        struct pollfd pf[2] = {{.fd = s.sfd, .events = POLLIN}, {.fd = -1}};
        if (s.listen_fd >= 0 && s.nconns < MAX_CONNS)
            pf[1] = (struct pollfd){.fd = s.listen_fd, .events = POLLIN};
        int64_t wait = pending ? s.next_discovery - now : -1;
        if (poll(pf, 2, wait > 0x7fffffff ? 0x7fffffff : (int)wait) < 0 && errno != EINTR) {
            smka_log("poll: %s", strerror(errno));
            smka_sleep_ms(100);
            continue;
        }
        if ((pf[0].revents & POLLIN) && handle_signals(&s))
            break;
        if (pf[1].revents & POLLIN)
            accept_one(&s);
    }
    stop_children(&s);
    if (s.ctx.test_mode)
        unlink(strchr(opts->listen, ':') + 1);
    return 0;
}
