/* GENERATED from smkernel-x86_64/src/common/initramfs.c by sync-shared sha256:79fbe922742d */
/*
 * The initramfs writer: a cpio "newc" archive, written with libarchive, whose entries have fixed
 * owners, times and inode numbers so the same inputs always give the same bytes.
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "internal.h"

/* Directories every guest root needs before devtmpfs, proc and sysfs are mounted on them. */
static const char *const base_dirs[] = {"/bin", "/dev", "/etc", "/lib", "/mnt", "/proc",
                                        "/root", "/run", "/sbin", "/sys", "/tmp", "/usr"};

/* Beyond the fixed directories, parents of extra files are added on demand; bounded by this. */
#define MAX_DIRS 256

struct writer {
    struct archive *ar;
    struct archive_entry *entry;
    int fd;
    int err;     /* first errno from our write callback, which libarchive cannot carry */
    long ino;    /* next inode number: fixed sequence, for reproducible archives */
    char *dirs[MAX_DIRS];
    size_t ndirs;
};

static la_ssize_t write_cb(struct archive *ar, void *ctx, const void *buf, size_t len)
{
    struct writer *w = ctx;
    int r = smk__write_all(w->fd, buf, len);
    if (r != 0) {
        w->err = r;
        archive_set_error(ar, -r, "write failed");
        return -1;
    }
    return (la_ssize_t)len;
}

static int ar_err(struct writer *w)
{
    if (w->err)
        return w->err;
    int e = archive_errno(w->ar);
    return e > 0 ? -e : -EIO;
}

static int header(struct writer *w, const char *path, unsigned int type, unsigned int mode,
                  uint64_t size, dev_t rdev)
{
    struct archive_entry *e = w->entry;
    archive_entry_clear(e);
    /* newc names have no leading slash, like the kernel's own gen_init_cpio output. */
    archive_entry_copy_pathname(e, path[0] == '/' ? path + 1 : path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, (mode_t)mode);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, 0, 0);
    archive_entry_set_ino(e, w->ino++);
    archive_entry_set_nlink(e, type == AE_IFDIR ? 2 : 1);
    if (rdev)
        archive_entry_set_rdev(e, rdev);
    return archive_write_header(w->ar, e) == ARCHIVE_OK ? 0 : ar_err(w);
}

static bool have_dir(const struct writer *w, const char *path, size_t len)
{
    for (size_t i = 0; i < w->ndirs; i++)
        if (strlen(w->dirs[i]) == len && memcmp(w->dirs[i], path, len) == 0)
            return true;
    return false;
}

static int add_dir(struct writer *w, const char *path, size_t len)
{
    if (have_dir(w, path, len))
        return 0;
    if (w->ndirs == MAX_DIRS)
        return -E2BIG;
    char *copy = strndup(path, len);
    if (!copy)
        return -ENOMEM;
    w->dirs[w->ndirs++] = copy;
    return header(w, copy, AE_IFDIR, 0755, 0, 0);
}

/* Every ancestor directory of path, shallowest first. */
static int add_parents(struct writer *w, const char *path)
{
    for (const char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        int r = add_dir(w, path, (size_t)(p - path));
        if (r != 0)
            return r;
    }
    return 0;
}

static int data_cb(void *ctx, const void *data, size_t len)
{
    struct writer *w = ctx;
    la_ssize_t n = archive_write_data(w->ar, data, len);
    return n == (la_ssize_t)len ? 0 : ar_err(w);
}

static int add_asset(struct writer *w, const char *path, int id, unsigned int mode)
{
    int err;
    const struct smk_asset *a = smk__lookup((enum smk_asset_id)id, &err);
    if (!a)
        return err;
    int r = header(w, path, AE_IFREG, mode, a->size, 0);
    return r ? r : smk__decode(a, data_cb, w);
}

static int add_memory(struct writer *w, const char *path, const void *data, size_t size,
                      unsigned int mode)
{
    int r = header(w, path, AE_IFREG, mode, size, 0);
    return r ? r : (size ? data_cb(w, data, size) : 0);
}

static int add_host_file(struct writer *w, const char *path, const char *host, unsigned int mode)
{
    int fd = open(host, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    int r = fstat(fd, &st) == 0 ? 0 : -errno;
    if (r == 0 && !S_ISREG(st.st_mode))
        r = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
    if (r == 0)
        r = header(w, path, AE_IFREG, mode, (uint64_t)st.st_size, 0);
    unsigned char *buf = r == 0 ? malloc(SMK_CHUNK) : NULL;
    if (r == 0 && !buf)
        r = -ENOMEM;
    /* The header promised st_size bytes; a file that changes under us is an error, not padding. */
    for (uint64_t left = (uint64_t)st.st_size; r == 0 && left > 0;) {
        ssize_t n = read(fd, buf, left < SMK_CHUNK ? (size_t)left : SMK_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            r = n < 0 ? -errno : -EIO;
        else {
            r = data_cb(w, buf, (size_t)n);
            left -= (uint64_t)n;
        }
    }
    free(buf);
    close(fd);
    return r;
}

static int check_extra(const struct smk_initramfs_file *f)
{
    const char *p = f->guest_path;
    if (!p || p[0] != '/' || p[1] == '\0' || p[strlen(p) - 1] == '/' || strlen(p) >= PATH_MAX)
        return -EINVAL;
    for (const char *c = p; (c = strstr(c, "/..")) != NULL; c += 3)
        if (c[3] == '/' || c[3] == '\0')
            return -EINVAL;
    if (strstr(p, "//") || strstr(p, "/./"))
        return -EINVAL;
    if (!f->host_path && !f->data && f->size > 0)
        return -EINVAL;
    if (f->mode & ~07777u)
        return -EINVAL;
    return 0;
}

static bool replaced(const char *path, const struct smk_initramfs_file *extra, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(extra[i].guest_path, path) == 0)
            return true;
    return false;
}

static int write_all_entries(struct writer *w, const struct smk_initramfs_file *extra,
                             size_t n_extra)
{
    int r = 0;
    for (size_t i = 0; r == 0 && i < sizeof base_dirs / sizeof base_dirs[0]; i++)
        r = add_dir(w, base_dirs[i], strlen(base_dirs[i]));
    /* The kernel opens /dev/console for PID 1 before any devtmpfs exists. */
    if (r == 0)
        r = header(w, "/dev/console", AE_IFCHR, 0600, 0, makedev(5, 1));
    for (size_t i = 0; r == 0 && i < smk__initramfs_layout_count; i++) {
        const struct smk__layout_entry *e = &smk__initramfs_layout[i];
        if (replaced(e->guest_path, extra, n_extra))
            continue;
        r = add_parents(w, e->guest_path);
        if (r == 0)
            r = e->asset >= 0 ? add_asset(w, e->guest_path, e->asset, e->mode)
                              : add_memory(w, e->guest_path, e->data, e->size, e->mode);
    }
    for (size_t i = 0; r == 0 && i < n_extra; i++) {
        const struct smk_initramfs_file *f = &extra[i];
        r = add_parents(w, f->guest_path);
        if (r == 0)
            r = f->host_path ? add_host_file(w, f->guest_path, f->host_path, f->mode)
                             : add_memory(w, f->guest_path, f->data, f->size, f->mode);
    }
    if (r == 0 && archive_write_close(w->ar) != ARCHIVE_OK)
        r = ar_err(w);
    return r;
}

int smk_write_initramfs(const char *path, const struct smk_initramfs_file *extra, size_t n_extra,
                        unsigned int flags)
{
    if (flags & ~SMK_EXTRACT_PARENTS || (n_extra && !extra))
        return -EINVAL;
    for (size_t i = 0; i < n_extra; i++) {
        int r = check_extra(&extra[i]);
        if (r != 0)
            return r;
    }
    struct smk__atomic t;
    int r = smk__atomic_begin(&t, path, flags);
    if (r != 0)
        return r;

    struct writer w = {.ar = archive_write_new(), .entry = archive_entry_new(), .fd = t.fd,
                       .ino = 721};
    if (!w.ar || !w.entry)
        r = -ENOMEM;
    /* Block size 512 with no padding of the last block: the archive is exactly what the
     * kernel reads, nothing more. */
    if (r == 0 && (archive_write_set_format_cpio_newc(w.ar) != ARCHIVE_OK ||
                   archive_write_add_filter_none(w.ar) != ARCHIVE_OK ||
                   archive_write_set_bytes_per_block(w.ar, 512) != ARCHIVE_OK ||
                   archive_write_set_bytes_in_last_block(w.ar, 1) != ARCHIVE_OK))
        r = -ENOMEM;
    if (r == 0 && archive_write_open(w.ar, &w, NULL, write_cb, NULL) != ARCHIVE_OK)
        r = ar_err(&w);
    if (r == 0)
        r = write_all_entries(&w, extra, n_extra);
    if (w.ar)
        archive_write_free(w.ar);
    if (w.entry)
        archive_entry_free(w.entry);
    for (size_t i = 0; i < w.ndirs; i++)
        free(w.dirs[i]);
    if (r == 0)
        return smk__atomic_commit(&t, 0644, NULL);
    smk__atomic_abort(&t);
    return r;
}
