/* What only the x86_64 library has: busybox, init-oci, and its initramfs layout.
 * SPDX-License-Identifier: MIT */
#include "internal.h"
#include "smkernel-x86_64.h"
#include "embed.h"

int smk_extract_busybox_to(const char *path)
{
    return smk_extract(SMK_ASSET_BUSYBOX, path, 0);
}

int smk_extract_busybox_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_BUSYBOX, path, SMK_EXTRACT_PARENTS);
}

int smk_extract_init_oci_to(const char *path)
{
    return smk_extract(SMK_ASSET_INIT_OCI, path, 0);
}

int smk_extract_init_oci_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_INIT_OCI, path, SMK_EXTRACT_PARENTS);
}

/* init-oci is PID 1 itself (/init): it builds the overlayfs root and starts the agent; busybox
 * is the agent's shell. Each asset goes where assets/registry.tsv puts it. */
const struct smk__layout_entry smk__initramfs_layout[] = {SMK__INITRAMFS_ASSETS};
const size_t smk__initramfs_layout_count =
    sizeof smk__initramfs_layout / sizeof smk__initramfs_layout[0];
