/* Asset lookup, version and error strings. SPDX-License-Identifier: MIT */
#include "internal.h"

#include <errno.h>
#include <string.h>

const struct smk_asset *smk__lookup(enum smk_asset_id id, int *err)
{
    if ((unsigned int)id >= SMK_ASSET_ID_COUNT) {
        *err = -EINVAL;
        return NULL;
    }
    const struct smk_asset *a = smk__asset_by_id[id];
    *err = a ? 0 : -ENOENT;
    return a;
}

const struct smk_asset *smk_asset_get(enum smk_asset_id id)
{
    int err;
    return smk__lookup(id, &err);
}

const struct smk_asset *smk_asset_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < smk__asset_count; i++) {
        const struct smk_asset *a = smk__asset_list[i];
        if (strcmp(a->name, name) == 0 || strcmp(a->file_name, name) == 0)
            return a;
    }
    return NULL;
}

const struct smk_asset *const *smk_assets(size_t *count)
{
    if (count)
        *count = smk__asset_count;
    return smk__asset_list;
}

const char *smk_version(void)
{
    return SMK_VERSION_STRING;
}

const char *smk_arch(void)
{
    return smk__arch;
}

const char *smk_kernel_cmdline(void)
{
    return smk__kernel_cmdline;
}

/* strerror() is not guaranteed thread-safe and its words are not about assets; these are. */
const char *smk_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
    case -EINVAL:
        return "invalid argument";
    case -ENOENT:
        return "no such file, directory or asset (on this arch)";
    case -EEXIST:
        return "target exists and is not a regular file or symlink (FIFO, socket, device)";
    case -EISDIR:
        return "target is a directory";
    case -ENOTDIR:
        return "a path component is not a directory";
    case -EACCES:
        return "permission denied";
    case -EPERM:
        return "operation not permitted (untrusted owner or permissions)";
    case -EROFS:
        return "read-only file system";
    case -ENOSPC:
        return "no space left on device";
    case -EDQUOT:
        return "disk quota exceeded";
    case -EFBIG:
        return "file too large";
    case -EIO:
        return "input/output error";
    case -ENAMETOOLONG:
        return "path too long";
    case -ELOOP:
        return "too many levels of symbolic links";
    case -EBADMSG:
        return "corrupt data: decoding failed, or size or checksum mismatch";
    case -ENOMEM:
        return "out of memory";
    case -ENOBUFS:
        return "buffer too small for the decompressed asset";
    case -ERANGE:
        return "buffer too small for the result";
    case -EMFILE:
    case -ENFILE:
        return "too many open files";
    case -EINTR:
        return "interrupted";
    case -EAGAIN:
        return "resource temporarily unavailable, or changed meanwhile: try again";
    case -EBUSY:
        return "resource busy";
    case -ETXTBSY:
        return "text file busy";
    case -EXDEV:
        return "cross-device link";
    case -E2BIG:
        return "too many entries";
    default:
        return "unknown error";
    }
}
