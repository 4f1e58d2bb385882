#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;

void smka_log_to_kmsg(void)
{
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0)
        log_fd = fd;
}

void smka_log(const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "supermachine-agent: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole when several processes log. */
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
}

int64_t smka_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t smka_boottime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void smka_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int remaining(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - smka_now_ms();
    return left < 0 ? 0 : left > 0x7fffffff ? 0x7fffffff : (int)left;
}

ssize_t smka_read_some(int fd, void *buf, size_t len, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : smka_now_ms() + timeout_ms;
    for (;;) {
        ssize_t r = read(fd, buf, len);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            return -errno;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, remaining(deadline));
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

int smka_write_all(int fd, const void *buf, size_t len, int timeout_ms)
{
    return smka_write_all_hup(fd, buf, len, timeout_ms, 0);
}

int smka_write_all_hup(int fd, const void *buf, size_t len, int timeout_ms, int hup_grace_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : smka_now_ms() + timeout_ms;
    int64_t hup_since = -1;
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w > 0) {
            p += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno != EAGAIN)
            return -errno;
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int n = poll(&pf, 1, remaining(deadline));
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0 && errno != EINTR)
            return -errno;
        /* A virtio-serial port whose host side is gone never becomes
         * writable again; it only reports the hang-up, which may be one
         * that passes (smka_hup_lasted). */
        if (n > 0 && !(pf.revents & POLLOUT) && (pf.revents & (POLLHUP | POLLERR | POLLNVAL))) {
            if (smka_hup_lasted(&hup_since, smka_now_ms(), hup_grace_ms) || (pf.revents & POLLNVAL))
                return -EPIPE;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

int smka_hup_lasted(int64_t *since, int64_t now, int grace_ms)
{
    if (*since < 0)
        *since = now;
    return now - *since >= grace_ms;
}

int smka_slurp(const char *path, size_t max, uint8_t **data, size_t *len)
{
    int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    size_t cap = 65536, n = 0;
    uint8_t *buf = malloc(cap);
    int err = buf ? 0 : -ENOMEM;
    while (!err) {
        if (n == cap) {
            if (cap > max) {
                err = -EFBIG;
                break;
            }
            uint8_t *p = realloc(buf, cap * 2);
            if (!p) {
                err = -ENOMEM;
                break;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = smka_read_some(fd, buf + n, cap - n, -1);
        if (r < 0)
            err = (int)r;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    if (!err && n > max)
        err = -EFBIG;
    if (fd != 0)
        close(fd);
    if (err) {
        free(buf);
        return err;
    }
    *data = buf;
    *len = n;
    return 0;
}
