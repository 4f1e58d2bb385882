/*
 * smkernel-x86_64: guest assets for x86_64 hosts (KVM): bzImage, supermachine-agent, busybox.
 * Include <smkernel.h> in arch-agnostic code; it includes this header on x86_64.
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_X86_64_H
#define SMKERNEL_X86_64_H

#if !defined(__x86_64__)
#error "smkernel-x86_64 holds the x86_64 (KVM) guest assets; this target is not x86_64. smkernel supports only aarch64 (HVF) and x86_64 (KVM) hosts; no guest kernel is bundled for this cpu family"
#endif

#include "smkernel-common.h"
#include "smkernel-x86_64-assets.h" /* SMK_KERNEL_LEN, SMK_BUSYBOX_LEN, ... from the manifest */

#ifdef __cplusplus
extern "C" {
#endif

/* Static busybox (the initramfs's shell and tools). Same contract as smk_extract(). */
SMK_API int smk_extract_busybox_to(const char *path);
SMK_API int smk_extract_busybox_to_with_parents(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* SMKERNEL_X86_64_H */
