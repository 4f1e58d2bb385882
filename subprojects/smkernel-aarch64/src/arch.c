/* What only the aarch64 library has: init-oci, smpark.ko, and its initramfs layout.
 * SPDX-License-Identifier: MIT */
#include "internal.h"
#include "smkernel-aarch64.h"
#include "embed.h"

int smk_extract_init_oci_to(const char *path)
{
    return smk_extract(SMK_ASSET_INIT_OCI, path, 0);
}

int smk_extract_init_oci_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_INIT_OCI, path, SMK_EXTRACT_PARENTS);
}

int smk_extract_smpark_ko_to(const char *path)
{
    return smk_extract(SMK_ASSET_SMPARK_KO, path, 0);
}

int smk_extract_smpark_ko_to_with_parents(const char *path)
{
    return smk_extract(SMK_ASSET_SMPARK_KO, path, SMK_EXTRACT_PARENTS);
}

/* init-oci is PID 1 itself (/init): it builds the overlayfs root and starts the agent. Each
 * asset goes where assets/registry.tsv puts it. */
const struct smk__layout_entry smk__initramfs_layout[] = {SMK__INITRAMFS_ASSETS};
const size_t smk__initramfs_layout_count =
    sizeof smk__initramfs_layout / sizeof smk__initramfs_layout[0];
