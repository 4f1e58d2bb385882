/* What only the aarch64 library has: init-oci, smpark.ko, and its initramfs layout.
 * SPDX-License-Identifier: MIT */
#include "internal.h"
#include "smkernel-aarch64.h"

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

/* init-oci is PID 1 itself: it builds the overlayfs root and starts the agent. */
const struct smk__layout_entry smk__initramfs_layout[] = {
    {"/init", SMK_ASSET_INIT_OCI, NULL, 0, 0755},
    {"/sbin/supermachine-agent", SMK_ASSET_SUPERMACHINE_AGENT, NULL, 0, 0755},
    {"/lib/modules/smpark.ko", SMK_ASSET_SMPARK_KO, NULL, 0, 0644},
};
const size_t smk__initramfs_layout_count =
    sizeof smk__initramfs_layout / sizeof smk__initramfs_layout[0];
