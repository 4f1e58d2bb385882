#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

/* Kernel interface file systems (values from <linux/magic.h>): their files
 * must be written in place, a temporary file cannot be created or renamed
 * there. */
static int is_pseudo_fs(const char *dir)
{
    struct statfs sfs;
    if (statfs(dir, &sfs) < 0)
        return 0;
    switch ((unsigned long)sfs.f_type) {
    case 0x9fa0:     /* proc */
    case 0x62656572: /* sysfs */
    case 0x27e0eb:   /* cgroup */
    case 0x63677270: /* cgroup2 */
    case 0x64626720: /* debugfs */
    case 0x74726163: /* tracefs */
    case 0x73636673: /* securityfs */
    case 0x62656570: /* configfs */
        return 1;
    default:
        return 0;
    }
}

static int fail(char *why, size_t why_len, int err, const char *what, const char *path)
{
    snprintf(why, why_len, "%s %s: %s", what, path, strerror(err));
    return -err;
}

static int write_in_place(const char *path, uint32_t mode, const uint8_t *data, size_t len,
                          char *why, size_t why_len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, (mode_t)mode);
    if (fd < 0)
        return fail(why, why_len, errno, "open", path);
    int r = smk_write_all(fd, data, len, -1);
    if (close(fd) < 0 && r == 0)
        r = -errno;
    return r < 0 ? fail(why, why_len, -r, "write", path) : 0;
}

int smk_write_file(const char *path, uint32_t mode, const uint8_t *data, size_t len, char *why,
                   size_t why_len)
{
    char dir_buf[PATH_MAX], base_buf[PATH_MAX], tmp[PATH_MAX];
    snprintf(dir_buf, sizeof(dir_buf), "%s", path);
    snprintf(base_buf, sizeof(base_buf), "%s", path);
    const char *dir = dirname(dir_buf), *base = basename(base_buf);
    struct stat st;
    int exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return fail(why, why_len, EISDIR, "write", path);
    /* Device nodes and FIFOs are written through, not replaced. */
    if ((exists && !S_ISREG(st.st_mode)) || is_pseudo_fs(dir))
        return write_in_place(path, mode, data, len, why, why_len);

    /* A temporary file renamed over the target: readers see the old or the
     * new contents, never a half-written file. */
    int n = snprintf(tmp, sizeof(tmp), "%s/.%s.smk-XXXXXX", strcmp(dir, "/") ? dir : "", base);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return fail(why, why_len, ENAMETOOLONG, "write", path);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return fail(why, why_len, errno, "create temporary file for", path);
    const char *what = "write";
    int r = smk_write_all(fd, data, len, -1);
    if (r == 0 && fchmod(fd, (mode_t)mode) < 0) {
        r = -errno;
        what = "chmod";
    }
    if (r == 0 && fsync(fd) < 0) {
        r = -errno;
        what = "fsync";
    }
    if (close(fd) < 0 && r == 0) {
        r = -errno;
        what = "close";
    }
    if (r == 0 && rename(tmp, path) < 0) {
        r = -errno;
        what = "rename to";
    }
    if (r < 0) {
        unlink(tmp);
        return fail(why, why_len, -r, what, path);
    }
    return 0;
}

int smk_read_file(const char *path, uint8_t **data, size_t *len, int *truncated, char *why,
                  size_t why_len)
{
    /* Non-blocking, so /dev/kmsg or an empty FIFO ends the read instead of
     * stalling the agent. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fail(why, why_len, errno, "open", path);
    /* One byte past the cap tells a file of exactly the cap from a longer one. */
    size_t limit = (size_t)SMK_MAX_DATA + 1, cap = 65536, n = 0;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
        cap = (size_t)st.st_size + 1 < limit ? (size_t)st.st_size + 1 : limit;
    uint8_t *buf = malloc(cap);
    int err = buf ? 0 : ENOMEM;
    while (!err && n < limit) {
        if (n == cap) {
            size_t ncap = cap * 2 < limit ? cap * 2 : limit;
            uint8_t *p = realloc(buf, ncap);
            if (!p) {
                err = ENOMEM;
                break;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0)
            err = errno;
        else if (r == 0)
            break;
        else
            n += (size_t)r;
    }
    close(fd);
    if (err) {
        free(buf);
        return fail(why, why_len, err, "read", path);
    }
    *truncated = n > SMK_MAX_DATA;
    *len = *truncated ? SMK_MAX_DATA : n;
    *data = buf;
    return 0;
}
