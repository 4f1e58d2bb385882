/* GENERATED from smkernel-x86_64/src/common/agent-restore.c by sync-shared sha256:366661d590a4 */
/*
 * smk_agent_after_restore (smkernel-agent-restore.h): the post-restore steps of
 * docs/SNAPSHOTS.md as one call over the public agent client.
 */
#if defined(__linux__) && !defined(SMK_PORTABLE)
#define _GNU_SOURCE
#endif
#include "smkernel-agent-restore.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h> /* getentropy (glibc, musl, macOS) */
#if defined(__APPLE__)
#include <sys/random.h>
#endif

#define DEFAULT_ENTROPY 64
#define MAX_ENTROPY 4096

struct budget {
    int forever;
    struct timespec end;
};

static void budget_start(struct budget *b, int timeout_ms)
{
    b->forever = timeout_ms < 0;
    clock_gettime(CLOCK_MONOTONIC, &b->end);
    if (b->forever)
        return;
    b->end.tv_sec += timeout_ms / 1000;
    b->end.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (b->end.tv_nsec >= 1000000000L) {
        b->end.tv_sec++;
        b->end.tv_nsec -= 1000000000L;
    }
}

/* The timeout of the next step in *ms, or -ETIMEDOUT once the budget is spent (so that no
 * request is sent that could not be waited for). */
static int budget_left(const struct budget *b, int *ms)
{
    if (b->forever) {
        *ms = -1;
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t left =
        (int64_t)(b->end.tv_sec - now.tv_sec) * 1000 + (b->end.tv_nsec - now.tv_nsec) / 1000000L;
    if (left <= 0)
        return -ETIMEDOUT;
    *ms = left > 0x7fffffff ? 0x7fffffff : (int)left;
    return 0;
}

int smk_agent_after_restore(struct smk_agent *a, const struct smk_agent_restore *r, int timeout_ms)
{
    if (!a || !r || r->entropy_len > MAX_ENTROPY || (r->entropy_len && !r->entropy) ||
        ((r->addr || r->old_addr) && !r->ifname))
        return -EINVAL;
    if (smk_agent_proto(a) < 2)
        return -ENOSYS;
    struct budget b;
    budget_start(&b, timeout_ms);
    int ms, e;

    uint64_t ns = r->unix_ns;
    if (!ns) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    if ((e = budget_left(&b, &ms)) < 0 || (e = smk_agent_set_time(a, ns, ms)) < 0)
        return e;

    unsigned char own[DEFAULT_ENTROPY];
    const void *entropy = r->entropy;
    size_t len = r->entropy_len;
    if (!entropy) {
        if (getentropy(own, sizeof own) != 0)
            return -errno;
        entropy = own;
        len = sizeof own;
    }
    if ((e = budget_left(&b, &ms)) == 0)
        e = smk_agent_reseed(a, entropy, len, 1, ms);
    /* The host's bytes are the clone's CRNG seed: leave no copy behind. */
    for (volatile unsigned char *p = own; p < own + sizeof own; p++)
        *p = 0;
    if (e < 0)
        return e;

    if (r->hostname &&
        ((e = budget_left(&b, &ms)) < 0 || (e = smk_agent_hostname(a, r->hostname, ms)) < 0))
        return e;
    if (r->old_addr && ((e = budget_left(&b, &ms)) < 0 ||
                        (e = smk_agent_addr(a, 1, r->ifname, r->old_addr, ms)) < 0))
        return e;
    if (r->addr) {
        if ((e = budget_left(&b, &ms)) < 0 ||
            (e = smk_agent_addr(a, 0, r->ifname, r->addr, ms)) < 0)
            return e;
        if ((e = budget_left(&b, &ms)) < 0 || (e = smk_agent_link(a, r->ifname, 1, 0, ms)) < 0)
            return e;
    }
    return 0;
}
