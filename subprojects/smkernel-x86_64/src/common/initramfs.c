/*
 * The initramfs writer: a cpio "newc" archive, written with libarchive, whose entries have fixed
 * owners, times and inode numbers so the same inputs always give the same bytes. One generator
 * feeds every output: a file (atomically), a caller's buffer, a callback, or a byte count.
 * SPDX-License-Identifier: MIT
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

/* Directories every guest root needs before devtmpfs, proc and sysfs are mounted on them. */
static const char *const base_dirs[] = {"/bin",  "/dev", "/etc",  "/lib", "/mnt", "/proc",
                                        "/root", "/run", "/sbin", "/sys", "/tmp", "/usr"};

/* Beyond the fixed directories, parents of extra files are added on demand; bounded by this. */
#define MAX_DIRS 256

/* The output is handed on in blocks of this size (the last one shorter): few, large writes. */
#define OUT_BLOCK (256u * 1024)

/* cpio newc stores a file's size in 8 hex digits. */
#define NEWC_MAX_SIZE 0xffffffffull

/* A host file that says it is empty may not be (/proc, /sys): it is read to its end, up to this. */
#define PSEUDO_MAX (16u * 1024 * 1024)

struct writer {
    struct archive *ar;
    struct archive_entry *entry;
    smk_write_fn out; /* where the archive's bytes go */
    void *out_ctx;
    unsigned char *block; /* OUT_BLOCK bytes, filled before out() is called */
    size_t used;
    int err;  /* first error from out(), which libarchive cannot carry */
    long ino; /* next inode number: fixed sequence, for reproducible archives */
    char *dirs[MAX_DIRS];
    size_t ndirs;
};

static int flush(struct writer *w)
{
    if (w->used == 0)
        return 0;
    int r = w->out(w->out_ctx, w->block, w->used);
    w->used = 0;
    return r < 0 ? r : r > 0 ? -EIO : 0;
}

static la_ssize_t write_cb(struct archive *ar, void *ctx, const void *buf, size_t len)
{
    struct writer *w = ctx;
    const unsigned char *p = buf;
    for (size_t left = len; left > 0;) {
        size_t n = OUT_BLOCK - w->used < left ? OUT_BLOCK - w->used : left;
        memcpy(w->block + w->used, p, n);
        w->used += n;
        p += n;
        left -= n;
        int r = w->used == OUT_BLOCK ? flush(w) : 0;
        if (r != 0) {
            w->err = r;
            archive_set_error(ar, -r, "write failed");
            return -1;
        }
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
                  uint64_t size, bool console)
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
    if (console) { /* /dev/console: character device 5:1 on every Linux */
        archive_entry_set_rdevmajor(e, 5);
        archive_entry_set_rdevminor(e, 1);
    }
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
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, path, len);
    copy[len] = '\0';
    w->dirs[w->ndirs++] = copy;
    return header(w, copy, AE_IFDIR, 0755, 0, false);
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
    int r = header(w, path, AE_IFREG, mode, a->size, false);
    return r ? r : smk__decode(a, data_cb, w);
}

static int add_memory(struct writer *w, const char *path, const void *data, size_t size,
                      unsigned int mode)
{
    int r = header(w, path, AE_IFREG, mode, size, false);
    return r ? r : (size ? data_cb(w, data, size) : 0);
}

static ssize_t read_some(int fd, void *buf, size_t len)
{
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    return n;
}

/* A file whose st_size is 0 (/proc, /sys report that for files with content): read to EOF. */
static int add_pseudo_file(struct writer *w, const char *path, int fd, unsigned int mode)
{
    size_t cap = 65536, used = 0;
    unsigned char *buf = malloc(cap);
    int r = buf ? 0 : -ENOMEM;
    while (r == 0) {
        if (used == cap) {
            if (cap == PSEUDO_MAX) {
                r = -EFBIG;
                break;
            }
            unsigned char *more = realloc(buf, cap * 2);
            if (!more) {
                r = -ENOMEM;
                break;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t n = read_some(fd, buf + used, cap - used);
        if (n < 0)
            r = -errno;
        else if (n == 0)
            break;
        else
            used += (size_t)n;
    }
    if (r == 0)
        r = add_memory(w, path, buf, used, mode);
    free(buf);
    return r;
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
    if (r == 0 && (uint64_t)st.st_size > NEWC_MAX_SIZE)
        r = -EFBIG;
    if (r == 0 && st.st_size == 0) {
        r = add_pseudo_file(w, path, fd, mode);
        close(fd);
        return r;
    }
    if (r == 0)
        r = header(w, path, AE_IFREG, mode, (uint64_t)st.st_size, false);
    unsigned char *buf = r == 0 ? malloc(SMK_CHUNK) : NULL;
    if (r == 0 && !buf)
        r = -ENOMEM;
    /* The header promised st_size bytes; a file that shrinks under us is an error, not padding. */
    for (uint64_t left = (uint64_t)st.st_size; r == 0 && left > 0;) {
        ssize_t n = read_some(fd, buf, left < SMK_CHUNK ? (size_t)left : SMK_CHUNK);
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
    if (!p || p[0] != '/' || p[1] == '\0' || p[strlen(p) - 1] == '/')
        return -EINVAL;
    if (strlen(p) >= PATH_MAX)
        return -ENAMETOOLONG;
    /* Every component a plain name: no empty one, no "." or ".." (the kernel would drop or
     * resolve them, and the entry would land elsewhere or nowhere), none over NAME_MAX. */
    for (const char *c = p + 1;;) {
        const char *end = strchr(c, '/');
        size_t n = end ? (size_t)(end - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return -EINVAL;
        if (n > NAME_MAX)
            return -ENAMETOOLONG;
        if (!end)
            break;
        c = end + 1;
    }
    if (!f->host_path && !f->data && f->size > 0)
        return -EINVAL;
    if (!f->host_path && (uint64_t)f->size > NEWC_MAX_SIZE)
        return -EFBIG;
    if (f->mode & ~07777u)
        return -EINVAL;
    return 0;
}

static int check_extras(const struct smk_initramfs_file *extra, size_t n_extra)
{
    if (n_extra && !extra)
        return -EINVAL;
    for (size_t i = 0; i < n_extra; i++) {
        int r = check_extra(&extra[i]);
        if (r != 0)
            return r;
    }
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
        r = header(w, "/dev/console", AE_IFCHR, 0600, 0, true);
    for (size_t i = 0; r == 0 && i < smk__initramfs_layout_count; i++) {
        const struct smk__layout_entry *e = &smk__initramfs_layout[i];
        if (replaced(e->guest_path, extra, n_extra))
            continue;
        r = add_parents(w, e->guest_path);
        if (r == 0)
            r = add_asset(w, e->guest_path, e->asset, e->mode);
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
    if (r == 0)
        r = flush(w);
    return r;
}

/* Inode numbers count up from the one the kernel's own generator (usr/gen_init_cpio.c) starts
 * at. Any fixed start gives reproducible bytes: the kernel reads a newc inode number only to link
 * a regular file of nlink >= 2 (init/initramfs.c), which this archive never has. */
#define FIRST_INO 721

/* The one generator: the whole archive, in blocks of OUT_BLOCK, to out. */
static int generate(const struct smk_initramfs_file *extra, size_t n_extra, smk_write_fn out,
                    void *out_ctx)
{
    struct writer w = {.ar = archive_write_new(),
                       .entry = archive_entry_new(),
                       .block = malloc(OUT_BLOCK),
                       .out = out,
                       .out_ctx = out_ctx,
                       .ino = FIRST_INO};
    int r = w.ar && w.entry && w.block ? 0 : -ENOMEM;
    /* No blocking and no padding: the archive is exactly what the kernel reads, and our own
     * block buffer decides the size of each write. */
    if (r == 0 && (archive_write_set_format_cpio_newc(w.ar) != ARCHIVE_OK ||
                   archive_write_add_filter_none(w.ar) != ARCHIVE_OK ||
                   archive_write_set_bytes_per_block(w.ar, 0) != ARCHIVE_OK))
        r = -ENOMEM;
    if (r == 0 && archive_write_open(w.ar, &w, NULL, write_cb, NULL) != ARCHIVE_OK)
        r = ar_err(&w);
    if (r == 0)
        r = write_all_entries(&w, extra, n_extra);
    if (w.ar)
        archive_write_free(w.ar);
    if (w.entry)
        archive_entry_free(w.entry);
    free(w.block);
    for (size_t i = 0; i < w.ndirs; i++)
        free(w.dirs[i]);
    return r;
}

static int to_fd(void *ctx, const void *data, size_t len)
{
    return smk__write_all(*(int *)ctx, data, len);
}

int smk_write_initramfs(const char *path, const struct smk_initramfs_file *extra, size_t n_extra,
                        unsigned int flags)
{
    if (flags & ~SMK_EXTRACT_PARENTS)
        return -EINVAL;
    int r = check_extras(extra, n_extra);
    if (r != 0)
        return r;
    struct smk__atomic t;
    r = smk__atomic_begin(&t, path, flags);
    if (r != 0)
        return r;
    r = generate(extra, n_extra, to_fd, &t.fd);
    if (r == 0)
        return smk__atomic_commit(&t, 0644, NULL);
    smk__atomic_abort(&t);
    return r;
}

int smk_stream_initramfs(const struct smk_initramfs_file *extra, size_t n_extra,
                         smk_write_fn write_cb, void *ctx)
{
    if (!write_cb)
        return -EINVAL;
    int r = check_extras(extra, n_extra);
    return r ? r : generate(extra, n_extra, write_cb, ctx);
}

static int count(void *ctx, const void *data, size_t len)
{
    (void)data;
    *(uint64_t *)ctx += len;
    return 0;
}

int smk_initramfs_size(const struct smk_initramfs_file *extra, size_t n_extra, uint64_t *size)
{
    if (!size)
        return -EINVAL;
    uint64_t total = 0;
    int r = smk_stream_initramfs(extra, n_extra, count, &total);
    if (r == 0)
        *size = total;
    return r;
}

struct outbuf {
    unsigned char *p;
    size_t size, used;
};

static int to_buffer(void *ctx, const void *data, size_t len)
{
    struct outbuf *b = ctx;
    if (len > b->size - b->used)
        return -ENOBUFS;
    memcpy(b->p + b->used, data, len);
    b->used += len;
    return 0;
}

int smk_write_initramfs_buf(void *buf, size_t buf_size, const struct smk_initramfs_file *extra,
                            size_t n_extra, size_t *written)
{
    if (!buf || !written)
        return -EINVAL;
    struct outbuf b = {buf, buf_size, 0};
    int r = smk_stream_initramfs(extra, n_extra, to_buffer, &b);
    if (r == 0)
        *written = b.used;
    return r;
}
