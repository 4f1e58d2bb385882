/* GENERATED from smkernel-x86_64/include/smkernel-agent-restore.h by sync-shared sha256:910a72980795 */
/*
 * smkernel-agent-restore: what a VMM sends a guest right after restoring it from a snapshot,
 * in one call, over the agent client of smkernel-agent.h. docs/SNAPSHOTS.md has the whole
 * procedure (what to do before the capture on each arch, and why each step is needed).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef SMKERNEL_AGENT_RESTORE_H
#define SMKERNEL_AGENT_RESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "smkernel-agent.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a restored guest is told. Zero-initialise it and fill in what applies. */
struct smk_agent_restore {
    /* Wall clock, ns since the epoch; 0: the host's CLOCK_REALTIME read just before it is
     * sent. A restored guest's clock continues from the capture. */
    uint64_t unix_ns;
    /* Bytes mixed into the guest's pool, credited, before the CRNG is reseeded (at most
     * 4096); NULL: 64 bytes of the host's getrandom(). Clones of one snapshot share their
     * CRNG state until this: give each clone its own bytes. */
    const void *entropy;
    size_t entropy_len;
    /* The clone's own name; NULL: unchanged. */
    const char *hostname;
    /* Interface to re-address (e.g. "eth0"); NULL: no address change. */
    const char *ifname;
    /* CIDR the snapshot carried, removed first ("10.0.2.10/24"); NULL: none. */
    const char *old_addr;
    /* CIDR of this clone, added, and the interface brought up; NULL: none. */
    const char *addr;
};

/*
 * Sends, in this order, each step waiting for its reply: the clock (smk_agent_set_time), so
 * that what follows is stamped right; the entropy and a CRNG reseed (smk_agent_reseed,
 * credited); the hostname (smk_agent_hostname); the old address removed, the new one added
 * and the link up (smk_agent_addr, smk_agent_link). Stops at the first step that fails and
 * returns its error (smk_agent_error() has the agent's message); the steps before it took
 * effect. timeout_ms bounds the whole call (< 0: no bound; a step that would start after
 * it is spent is not sent: -ETIMEDOUT).
 * Returns 0; -EINVAL (a or r NULL, entropy_len > 4096, entropy_len without entropy, old_addr
 * or addr without ifname); -ENOSYS (the agent speaks protocol 1: no guest control); an
 * error of getrandom(); or an error of the step, as the smk_agent_* call returns it.
 */
SMK_API int smk_agent_after_restore(struct smk_agent *a, const struct smk_agent_restore *r,
                                    int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif /* SMKERNEL_AGENT_RESTORE_H */
