/*
 * smkernel — the guest runtime of the supermachine microVM (a guest kernel for this host's
 * arch, the in-guest agent and helpers), embedded in the library: no network, no files to
 * fetch. This facade header gives the API of the per-arch library this build ships:
 *
 *   both     smk_extract_kernel_to[_with_parents], smk_extract_supermachine_agent_to[...],
 *            smk_extract_init_oci_to[...], SMK_KERNEL_LEN, SMK_SUPERMACHINE_AGENT_LEN,
 *            SMK_INIT_OCI_LEN (SMK_HAVE_INIT_OCI), and the generic API of
 *            <smkernel-common.h>: descriptors, smk_extract, smk_decompress, smk_stream,
 *            smk_verify_file, smk_asset_path, smk_write_initramfs, smk_strerror, smk_version
 *   x86_64   smk_extract_busybox_to[_with_parents], SMK_BUSYBOX_LEN       (SMK_HAVE_BUSYBOX)
 *   aarch64  smk_extract_smpark_ko_to[...], SMK_SMPARK_KO_LEN     (SMK_HAVE_SMPARK_KO)
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_H
#define SMKERNEL_H

/* An install holds the headers of one arch: say so, rather than "file not found". */
#if defined(__x86_64__)
#if defined(__has_include)
#if !__has_include(<smkernel-x86_64.h>)
#error "this smkernel was built for another host arch: rebuild it for x86_64 (KVM) hosts"
#endif
#endif
#include <smkernel-x86_64.h>
#elif defined(__aarch64__)
#if defined(__has_include)
#if !__has_include(<smkernel-aarch64.h>)
#error "this smkernel was built for another host arch: rebuild it for aarch64 (HVF) hosts"
#endif
#endif
#include <smkernel-aarch64.h>
#else
/* One line, in the words meson.build uses (tests/consumers compares them). */
/* clang-format off */
#error "smkernel supports only aarch64 (HVF) and x86_64 (KVM) hosts; no guest kernel is bundled for this cpu family"
/* clang-format on */
#endif

#endif /* SMKERNEL_H */
