/* x86_64 internal: the PVH vmlinux inside a bzImage. SPDX-License-Identifier: MIT */
#ifndef SMK_VMLINUX_H
#define SMK_VMLINUX_H

#include <stddef.h>

#include "internal.h"

/* Hands the ELF vmlinux in the decoded bzImage bz[0..size) to cb (see smk_stream_vmlinux). */
SMK_HIDDEN int smk__vmlinux_from_bzimage(const unsigned char *bz, size_t size, smk_write_fn cb,
                                         void *ctx);

#endif
