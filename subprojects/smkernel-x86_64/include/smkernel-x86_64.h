/*
 * smkernel-x86_64: guest assets for x86_64 hosts (KVM): bzImage, supermachine-agent, busybox,
 * init-oci.
 * Include <smkernel.h> in arch-agnostic code; it includes this header on x86_64.
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_X86_64_H
#define SMKERNEL_X86_64_H

#if !defined(__x86_64__)
/* One line, in the words meson.build uses (tests/consumers compares them). */
/* clang-format off */
#error "smkernel-x86_64 holds the x86_64 (KVM) guest assets; this target is not x86_64. smkernel supports only aarch64 (HVF) and x86_64 (KVM) hosts; no guest kernel is bundled for this cpu family"
/* clang-format on */
#endif

#include "smkernel-common.h"
#include "smkernel-x86_64-assets.h" /* SMK_KERNEL_LEN, SMK_BUSYBOX_LEN, ... from the manifest */

#ifdef __cplusplus
extern "C" {
#endif

/* Static busybox (the initramfs's shell and tools). Same contract as smk_extract(). */
SMK_API int smk_extract_busybox_to(const char *path);
SMK_API int smk_extract_busybox_to_with_parents(const char *path);

/* init-oci: the guest's PID 1 (overlayfs container root, then the agent). As smk_extract(). */
SMK_API int smk_extract_init_oci_to(const char *path);
SMK_API int smk_extract_init_oci_to_with_parents(const char *path);

/*
 * The kernel as an ELF vmlinux for VMMs that boot it through the PVH entry point (Firecracker
 * recommends this format, Cloud Hypervisor requires it, qemu -M microvm accepts it with
 * -kernel). There is no second kernel blob: the ELF is the bzImage's own compressed payload,
 * decompressed at extraction time, byte for byte the vmlinux (stripped of symbols) that the
 * kernel build linked. It is larger than the bzImage (about 5x) and needs no decompressor at
 * boot.
 *
 * Checked before anything is published: the bzImage (as for SMK_ASSET_KERNEL), its boot
 * protocol header and payload, the payload's decompressed length, and the ELF itself
 * (64-bit x86-64 executable with loadable segments and a Xen PVH entry note,
 * XEN_ELFNOTE_PHYS32_ENTRY); any mismatch is -EBADMSG. Memory: the decoded bzImage
 * (SMK_KERNEL_LEN bytes) plus libarchive's LZ4 block buffer (8 MiB) for the duration.
 *
 * smk_stream_vmlinux() hands the ELF to write_cb in chunks of at most 1 MiB, in order; a
 * non-zero return from write_cb stops it and is returned (a positive one as -EIO). The data
 * already handed on is only known to be good once the call returns 0.
 * smk_extract_vmlinux_to*() write it to path (mode 0644) with the same guarantees and errors as
 * smk_extract(): atomic, fsynced, the target untouched on any failure.
 */
#define SMK_HAVE_VMLINUX 1
SMK_API int smk_stream_vmlinux(smk_write_fn write_cb, void *ctx);
SMK_API int smk_extract_vmlinux_to(const char *path);
SMK_API int smk_extract_vmlinux_to_with_parents(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* SMKERNEL_X86_64_H */
