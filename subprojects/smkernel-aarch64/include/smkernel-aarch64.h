/*
 * smkernel-aarch64: guest assets for aarch64 hosts (HVF on Apple Silicon, KVM on arm64 Linux):
 * the raw arm64 Image, supermachine-agent, init-oci and smpark.ko.
 * Include <smkernel.h> in arch-agnostic code; it includes this header on aarch64.
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_AARCH64_H
#define SMKERNEL_AARCH64_H

#if !defined(__aarch64__)
/* One line, in the words meson.build uses (tests/consumers compares them). */
/* clang-format off */
#error "smkernel-aarch64 holds the aarch64 (HVF) guest assets; this target is not aarch64. smkernel supports only aarch64 (HVF) and x86_64 (KVM) hosts; no guest kernel is bundled for this cpu family"
/* clang-format on */
#endif

#include "smkernel-common.h"
#include "smkernel-aarch64-assets.h" /* SMK_KERNEL_LEN, SMK_INIT_OCI_LEN, ... from the manifest */

#ifdef __cplusplus
extern "C" {
#endif

/* init-oci: the guest's PID 1 (overlayfs container root, then the agent). As smk_extract(). */
SMK_API int smk_extract_init_oci_to(const char *path);
SMK_API int smk_extract_init_oci_to_with_parents(const char *path);

/* smpark.ko: parks the secondary vCPUs for consistent snapshots. As smk_extract(). */
SMK_API int smk_extract_smpark_ko_to(const char *path);
SMK_API int smk_extract_smpark_ko_to_with_parents(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* SMKERNEL_AARCH64_H */
