/* What only the x86_64 library has: busybox, and its initramfs layout. SPDX-License-Identifier: MIT */
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

/* /init is a busybox shell script (src/initramfs-init.sh) that builds the overlayfs root,
 * switch_roots into it and hands over to the agent. */
const struct smk__layout_entry smk__initramfs_layout[] = {
    {"/init", -1, smk__raw_init, SMK__RAW_INIT_SIZE, 0755},
    SMK__INITRAMFS_ASSETS, /* each asset where assets/registry.tsv puts it */
};
const size_t smk__initramfs_layout_count =
    sizeof smk__initramfs_layout / sizeof smk__initramfs_layout[0];
