/*
 * smkernel — pre-built guest assets (kernel, agent, helpers) for the supermachine microVM
 * runtime, embedded compressed in the library and extracted with libarchive.
 *
 * This header is the API both per-arch sub-libraries share. Include <smkernel.h>, which picks
 * the header of the library built for your target; it includes this one.
 *
 * Conventions, for every function below unless its comment says otherwise:
 *  - returns 0 on success or a negative errno (-EINVAL, -ENOENT, ...); smk_strerror() names it;
 *  - never prints, never aborts, keeps no mutable global state; safe to call from any thread;
 *  - "path" arguments are ordinary file system paths, relative to the current directory or
 *    absolute; NULL or "" is -EINVAL.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_COMMON_H
#define SMKERNEL_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* The one place the version lives: the Meson projects read these with cc.get_define(). */
#define SMK_VERSION_MAJOR 0
#define SMK_VERSION_MINOR 1
#define SMK_VERSION_PATCH 0

#define SMK_STRINGIFY_(x) #x
#define SMK_STRINGIFY(x) SMK_STRINGIFY_(x)
#define SMK_VERSION_STRING                                                                         \
    SMK_STRINGIFY(SMK_VERSION_MAJOR)                                                               \
    "." SMK_STRINGIFY(SMK_VERSION_MINOR) "." SMK_STRINGIFY(SMK_VERSION_PATCH)

#if !(defined(__GNUC__) || defined(__clang__))
#define SMK_API
#else
#define SMK_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Asset ids. The numbering is the same on every arch so that ids can be stored and passed
 * around; an arch ships only some of them (smk_asset_get() returns NULL for the others).
 */
enum smk_asset_id {
    SMK_ASSET_KERNEL = 0,             /* both: x86_64 bzImage, aarch64 raw arm64 Image */
    SMK_ASSET_SUPERMACHINE_AGENT = 1, /* both: static in-guest agent */
    SMK_ASSET_BUSYBOX = 2,            /* x86_64: static busybox for the initramfs */
    SMK_ASSET_INIT_OCI = 3,           /* aarch64: static PID-1 shim */
    SMK_ASSET_SMPARK_KO = 4,          /* aarch64: vCPU parking kernel module */
};
#define SMK_ASSET_ID_COUNT 5

/* Everything known about one embedded asset. All pointers refer to read-only static data. */
struct smk_asset {
    enum smk_asset_id id;
    const char *name;          /* asset name: "kernel", "supermachine-agent", "busybox", ... */
    const char *file_name;     /* conventional file name: "bzImage", "Image", "smpark.ko", ... */
    const unsigned char *blob; /* the embedded compressed bytes */
    size_t blob_size;          /* their length */
    const char *codec;         /* how they are packed: "zstd" (libarchive's name for it), or
                                  "a64+zstd" (aarch64 kernel): zstd over the bytes passed through
                                  the ARM64 branch filter of assets/README.md. Every call here
                                  undoes both; a reader of .blob must too */
    uint64_t size;             /* decompressed length in bytes */
    unsigned char sha256[32];  /* SHA-256 of the decompressed bytes */
    const char *sha256_hex;    /* the same, 64 lowercase hex digits */
    unsigned int mode;         /* permission bits extraction gives the file: 0755 or 0644 */
    const char *version;       /* upstream or project version of the asset */
    const char *license;       /* SPDX license expression */
    const char *source;        /* where the bytes come from (package and version, or sources) */
};

/* The asset with this id, or NULL if the id is unknown or this arch does not ship it. */
SMK_API const struct smk_asset *smk_asset_get(enum smk_asset_id id);

/* The asset with this name ("kernel", "smpark.ko", ...) or file name ("bzImage"), or NULL. */
SMK_API const struct smk_asset *smk_asset_find(const char *name);

/* Every asset this arch ships, in id order; *count receives their number (count may be NULL). */
SMK_API const struct smk_asset *const *smk_assets(size_t *count);

/*
 * Integrity. Every call that reads an asset (extract, decompress, stream, asset_path,
 * write_initramfs) checks it as it decodes: the exact decompressed size, and the checksum of
 * the content, the XXH64 the zstd frame carries (libzstd verifies it at the end of the frame),
 * or SHA-256 for a blob without one. A corrupt blob is -EBADMSG before anything is published.
 * The SHA-256 in the descriptor is checked for every blob at build time and by
 * smk_verify_file(); it is not a tamper seal at run time, since it lives beside the blob.
 */

/* Flags for smk_extract(). */
#define SMK_EXTRACT_PARENTS 0x1u /* create missing parent directories (0755), like mkdir -p */

/*
 * Write the decompressed asset to path, replacing any existing file.
 *
 * The bytes are streamed in constant memory into a temporary file in path's directory, flushed
 * with fsync, checked (see "Integrity" above), given the asset's mode and renamed over
 * path. A reader of path sees the old file or the complete new one, never a partial one; on any
 * failure path is left as it was and no temporary file remains.
 * Durability: 0 means the new file and its name are on stable storage: the file is fsynced
 * before it is published and the directory after (and each directory SMK_EXTRACT_PARENTS
 * creates, in its parent), so a power cut after the call returned 0 leaves the complete new
 * file at path (on macOS fsync is F_FULLFSYNC, which reaches the media). A failure of that last
 * directory sync is returned as its error although path then already holds the new, complete
 * file; every other failure leaves path as it was. Concurrent extractions of the
 * same asset to one path from many threads or processes all succeed with the right bytes.
 * A symlink at path is replaced, never followed. On Linux the temporary is an O_TMPFILE with no
 * name while it is written; a process killed in the microseconds between naming it and the
 * rename (or, without O_TMPFILE, during the write) leaves a ".smk-tmp-*" file, which the next
 * successful extraction into that directory removes once it can prove the file is one of
 * its own temporaries (its name carries a tag of its directory) and that its writer is gone. That
 * sweep reads at most 1024 directory entries, so a write costs the same in a directory of any
 * size (in a larger one a stale temporary may stay).
 *
 * Returns 0, or:
 *  -EINVAL   path NULL or empty, unknown flags, or id out of range
 *  -ENOENT   id not shipped on this arch, or a parent directory is missing (without
 *            SMK_EXTRACT_PARENTS)
 *  -EISDIR   path names a directory
 *  -EEXIST   path is a FIFO, socket or device node: refused, never opened nor replaced
 *  -ELOOP    too many symbolic links in the parent path
 *  -ENOTDIR  a component of the parent path is not a directory
 *  -EACCES / -EPERM / -EROFS   the directory cannot be written
 *  -ENOSPC / -EDQUOT / -EFBIG / -EIO   writing failed (the target is untouched)
 *  -ENAMETOOLONG   path too long
 *  -EBADMSG  the embedded blob is corrupt (decoding, size or checksum failed)
 *  -ENOMEM   out of memory, also when the decoder library cannot allocate its window: every
 *            call that decodes (extract, decompress, stream, asset_path, initramfs) says
 *            -ENOMEM, never -EBADMSG, for a shortage of memory
 */
SMK_API int smk_extract(enum smk_asset_id id, const char *path, unsigned int flags);

/*
 * Extract every asset this arch ships into dir, each under its file_name and atomically as
 * smk_extract() does, concurrently (one thread per asset, joined before returning: decoding
 * one asset overlaps writing another). flags: SMK_EXTRACT_PARENTS creates dir like mkdir -p.
 * Returns 0, or the error of the first failing asset in id order (the others that succeeded
 * stay written, each complete); -EINVAL for a NULL or empty dir or unknown flags.
 * Resources: each worker thread gets a 256 KiB stack of its own, whatever the process's
 * defaults; the calling thread needs only what smk_extract() needs (it works on a 32 KiB
 * stack). All at once take up to 3 file descriptors per asset; an asset that fails for want of
 * resources (-EMFILE, -ENFILE, -ENOMEM, -EAGAIN, or a thread that cannot start) is retried one
 * by one after the others finished, which needs only 3 descriptors: a resource limit never
 * leaves some assets written and others not while one at a time would have worked.
 */
SMK_API int smk_extract_all(const char *dir, unsigned int flags);

/* The seed's API: the same as smk_extract() for one asset, without or with SMK_EXTRACT_PARENTS.
 * "Overwrites any existing file; the parent dir must exist" (the _with_parents form creates it). */
SMK_API int smk_extract_kernel_to(const char *path);
SMK_API int smk_extract_kernel_to_with_parents(const char *path);
SMK_API int smk_extract_supermachine_agent_to(const char *path);
SMK_API int smk_extract_supermachine_agent_to_with_parents(const char *path);

/*
 * Decompress the asset into buf (no file system involved: e.g. straight into guest memory).
 * buf_size must be at least the asset's size (SMK_<ASSET>_LEN or smk_asset_get()->size); the
 * digest is checked before returning 0. Returns 0, -EINVAL (NULL buf, bad id), -ENOENT (not on
 * this arch), -ENOBUFS (buf_size too small; nothing written), -EBADMSG (corrupt blob: buf's
 * contents are then unspecified), -ENOMEM.
 */
SMK_API int smk_decompress(enum smk_asset_id id, void *buf, size_t buf_size);

/*
 * Stream the decompressed asset to a callback, in chunks of at most 1 MiB, in constant memory.
 * write_cb returns 0 to continue or a negative errno to stop (which smk_stream returns). The
 * digest is checked after the last chunk: on -EBADMSG the bytes already delivered are wrong.
 */
typedef int (*smk_write_fn)(void *ctx, const void *data, size_t len);
SMK_API int smk_stream(enum smk_asset_id id, smk_write_fn write_cb, void *ctx);

/*
 * Check a file on disk against the asset: 0 if it holds exactly the asset's bytes, -EBADMSG if
 * it differs (size or digest), -ENOENT / -EACCES / -EISDIR ... if it cannot be read.
 */
SMK_API int smk_verify_file(enum smk_asset_id id, const char *path);

/*
 * The path of the asset in the per-user cache, extracting it there first if needed.
 *
 * The cache root is $SMKERNEL_CACHE_DIR, else $XDG_CACHE_HOME/smkernel, else
 * $HOME/.cache/smkernel (relative values of the XDG and HOME forms are ignored, as the XDG spec
 * says); the asset lives at ROOT/<version>-<arch>/<sha256 prefix>/<file_name>, so libraries of
 * different versions or blobs never share a file. The first call extracts (atomically, as
 * smk_extract); later calls from any process only check the directories (below) and stat the
 * file: its owner, type, mode, size and the modification time extraction stamped on it,
 * re-extracting when any of those is off (about 20 system calls; docs/RELIABILITY.md). The root is created 0700; an existing root or subdirectory that is not owned by
 * this user or is writable by group or others is refused with -EPERM rather than used.
 * Every directory above the root, up to /, is checked as OpenSSH checks the parents of its
 * files: owned by root or this user, and not writable by group or others unless it is sticky
 * (like /tmp) and the next directory down is this user's or root's; else -EPERM. Symlinks in the root's
 * path are resolved first, then every level is opened without following any, and the path
 * returned is the resolved one: a path through directories only this user and root can change.
 * A setuid or setgid program ignores the three variables (secure_getenv) and uses the home
 * directory from the password database.
 *
 * Writes the NUL-terminated path into buf. Returns 0, -ERANGE if buf_size is too small (nothing
 * useful in buf), -ENOENT if no cache root can be determined (no variable set and no home
 * directory), -EPERM for an untrusted directory, -EINVAL for a ".." below a missing part of the
 * root, or any error of smk_extract().
 */
SMK_API int smk_asset_path(enum smk_asset_id id, char *buf, size_t buf_size);

/*
 * The cached asset as an open file: like smk_asset_path() (same checks, extracting when
 * needed), but returns a read-only descriptor (O_CLOEXEC) of the checked file itself, so that
 * nothing can be swapped between the check and the caller's use. The caller closes it.
 * Returns the descriptor (>= 0), or the errors of smk_asset_path() (no -ERANGE), or -EAGAIN if
 * the file changed again right after being extracted twice.
 */
SMK_API int smk_asset_open(enum smk_asset_id id);

/* The cache root smk_asset_path() would use (not created). Returns 0, -ERANGE, -ENOENT. */
SMK_API int smk_cache_dir(char *buf, size_t buf_size);

/* One extra file for smk_write_initramfs(): from a host file, or from memory when host_path
 * is NULL. Parent directories of guest_path are added as needed (0755). */
struct smk_initramfs_file {
    const char *guest_path; /* absolute path inside the initramfs, e.g. "/bin/tool" */
    const char *host_path;  /* file to copy, or NULL to use data/size */
    const void *data;
    size_t size;
    unsigned int mode; /* permission bits, e.g. 0755 */
};

/*
 * Write a bootable initramfs (cpio "newc", uncompressed, byte-for-byte reproducible) for this
 * arch's kernel to path, atomically as smk_extract() does (flags: SMK_EXTRACT_PARENTS).
 *  x86_64:  /init (init-oci: overlayfs root, switch_root, starts the agent), /bin/busybox,
 *           /sbin/supermachine-agent
 *  aarch64: /init (init-oci), /sbin/supermachine-agent, /lib/modules/smpark.ko
 * plus /dev/console and the usual empty directories, then the n_extra caller files, which may
 * add to or replace those. A host_path file is copied as it is when opened; one whose size is 0
 * (as /proc and /sys report for files with content) is read to its end instead, up to 16 MiB
 * (-EFBIG beyond). The archive is written in blocks of 256 KiB. Returns 0, the errors of
 * smk_extract(), and:
 *  -EINVAL        a bad extra entry: guest_path not absolute, empty, ending in '/', or with an
 *                 empty, "." or ".." component; NULL data with size > 0; mode beyond 07777
 *  -ENAMETOOLONG  a guest_path component over 255 bytes, or a guest_path of PATH_MAX or more
 *  -EFBIG         a file of 4 GiB or more (cpio newc stores sizes in 32 bits)
 *  -E2BIG         the extras need more than 256 directories
 *  errors opening or reading a host_path (-ENOENT, -EACCES, -EISDIR; -EINVAL if not a regular file)
 */
SMK_API int smk_write_initramfs(const char *path, const struct smk_initramfs_file *extra,
                                size_t n_extra, unsigned int flags);

/*
 * The same initramfs, in memory (for a VMM that loads it into guest RAM as it does the
 * kernel). The three calls produce exactly the bytes smk_write_initramfs() writes, and return
 * its errors (except those of writing a file):
 *  smk_initramfs_size()      its exact length, in *size (builds the archive to count it: it
 *                            costs as much as writing it);
 *  smk_write_initramfs_buf() into buf; *written receives the length. -ENOBUFS if buf_size is
 *                            too small (buf's contents then unspecified), -EINVAL for a NULL
 *                            buf or written;
 *  smk_stream_initramfs()    to write_cb in chunks of at most 256 KiB, as smk_stream() does; a
 *                            negative return of write_cb stops it and is returned.
 * A host_path file that changes between a size query and the write changes the length.
 */
SMK_API int smk_initramfs_size(const struct smk_initramfs_file *extra, size_t n_extra,
                               uint64_t *size);
SMK_API int smk_write_initramfs_buf(void *buf, size_t buf_size,
                                    const struct smk_initramfs_file *extra, size_t n_extra,
                                    size_t *written);
SMK_API int smk_stream_initramfs(const struct smk_initramfs_file *extra, size_t n_extra,
                                 smk_write_fn write_cb, void *ctx);

/* A short English description of a negative errno this library returned. Never NULL. */
SMK_API const char *smk_strerror(int err);

/* The library's version, "MAJOR.MINOR.PATCH". */
SMK_API const char *smk_version(void);

/* The guest arch this library ships assets for: "x86_64" or "aarch64". */
SMK_API const char *smk_arch(void);

/* The kernel command line the shipped kernel is tuned for (console, quiet boot); append yours. */
SMK_API const char *smk_kernel_cmdline(void);

#ifdef __cplusplus
}
#endif

/* The host-side client of the guest agent (smk_agent_*), and its post-restore call. */
#include "smkernel-agent.h"
#include "smkernel-agent-restore.h"

#endif /* SMKERNEL_COMMON_H */
