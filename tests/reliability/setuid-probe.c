/*
 * Prints smk_cache_dir()'s result and path; test_reliability.c runs it setuid root as another
 * user with a hostile environment. Linked with the static core: a setuid program ignores the
 * build tree's $ORIGIN run paths. SPDX-License-Identifier: MIT
 */
#include <limits.h>
#include <stdio.h>

#include <smkernel.h>

int main(void)
{
    char buf[PATH_MAX] = "";
    int r = smk_cache_dir(buf, sizeof buf);
    printf("%d %s\n", r, buf);
    return 0;
}
