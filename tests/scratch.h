/* A scratch directory for each test of the facade-level suites: scratch_make() in the
 * fixture's setup, scratch_remove() in its teardown, at() for paths inside it. Header-only:
 * every function is static inline, so a suite that does not use one gets no warning. */
#ifndef SMK_TESTS_SCRATCH_H
#define SMK_TESTS_SCRATCH_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

static char tmp[256]; /* the running test's scratch directory */

/* Makes a fresh /tmp/smk-NAME-XXXXXX (mode 0700) and puts its path in tmp. */
static inline void scratch_make(const char *name)
{
    snprintf(tmp, sizeof tmp, "/tmp/smk-%s-XXXXXX", name);
    ck_assert_ptr_nonnull(mkdtemp(tmp));
}

/* Removes tmp and all it holds. Returns 0, or -1 after saying what was left behind. */
static inline int scratch_remove(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) == 0)
        return 0;
    fprintf(stderr, "could not remove %s\n", tmp);
    return -1;
}

/* "TMP/REL" in one of eight rotating buffers: valid until the eighth call after this one. */
static inline char *at(const char *rel)
{
    static char buf[8][1024];
    static unsigned int i;
    char *p = buf[i++ % 8];
    snprintf(p, 1024, "%.255s/%.700s", tmp, rel);
    return p;
}

#endif
