/* GENERATED from smkernel-x86_64/tests/corrupt-probe.c by sync-shared sha256:3e7801ae1fe7 */
/*
 * corrupt-probe ASSET: run against a library built (with -Dblobcheck=false) from a blob that
 * tests/standalone/check-subproject.py corrupted on purpose. Every way of getting at ASSET
 * must return -EBADMSG and write nothing: no target, an old target untouched, no file in the
 * cache, no temporary anywhere; every other asset must still work. Prints one line per check
 * and exits 1 if any failed. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include SMK_ARCH_HEADER

static int failures;
static char dir[64];

static void check(int ok, const char *what, int got)
{
    printf("%s %s (%d: %s)\n", ok ? "ok  " : "FAIL", what, got, smk_strerror(got));
    failures += !ok;
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += e->d_name[0] != '.' || strncmp(e->d_name, ".smk-tmp-", 9) == 0;
    if (d)
        closedir(d);
    return n;
}

static int nothing_in_cache(const char *path)
{
    /* Only directories may exist below the cache root: no file, no temporary. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -z \"$(find '%s' ! -type d 2>/dev/null)\"", path);
    return system(cmd) == 0;
}

static int noop(void *ctx, const void *data, size_t len)
{
    (void)data;
    *(size_t *)ctx += len;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: corrupt-probe ASSET\n");
        return 2;
    }
    const struct smk_asset *bad = smk_asset_find(argv[1]);
    if (!bad) {
        fprintf(stderr, "corrupt-probe: no asset %s here\n", argv[1]);
        return 2;
    }
    snprintf(dir, sizeof dir, "/tmp/smk-corrupt-XXXXXX");
    if (!mkdtemp(dir))
        return 2;
    char path[256], cache[256], out[1024];

    void *buf = malloc(bad->size);
    int r = smk_decompress(bad->id, buf, bad->size);
    check(r == -EBADMSG, "smk_decompress returns -EBADMSG", r);
    free(buf);
    size_t streamed = 0;
    r = smk_stream(bad->id, noop, &streamed);
    check(r == -EBADMSG, "smk_stream returns -EBADMSG", r);

    snprintf(path, sizeof path, "%s/new", dir);
    r = smk_extract(bad->id, path, 0);
    check(r == -EBADMSG && access(path, F_OK) != 0, "smk_extract to a new path: nothing written",
          r);
    snprintf(path, sizeof path, "%s/old", dir);
    FILE *f = fopen(path, "w");
    fputs("old", f);
    fclose(f);
    r = smk_extract(bad->id, path, 0);
    struct stat st;
    check(r == -EBADMSG && stat(path, &st) == 0 && st.st_size == 3,
          "smk_extract over an old file: untouched", r);
    check(count_entries(dir) == 1, "no temporary file left", 0);

    snprintf(cache, sizeof cache, "%s/cache", dir);
    setenv("SMKERNEL_CACHE_DIR", cache, 1);
    r = smk_asset_path(bad->id, out, sizeof out);
    check(r == -EBADMSG && nothing_in_cache(cache), "smk_asset_path: nothing in the cache", r);

    r = smk_asset_open(bad->id);
    check(r == -EBADMSG && nothing_in_cache(cache), "smk_asset_open: no descriptor, nothing cached",
          r);

    /* The initramfs holds some assets (not the kernel): it must refuse a corrupt one. */
    snprintf(path, sizeof path, "%s/initrd", dir);
    r = smk_write_initramfs(path, NULL, 0, 0);
    int in_initramfs = bad->id != SMK_ASSET_KERNEL;
    check(in_initramfs ? r == -EBADMSG && access(path, F_OK) != 0 : r == 0,
          in_initramfs ? "smk_write_initramfs refuses the corrupt asset"
                       : "smk_write_initramfs (kernel not in it) still works",
          r);

    uint64_t size = 0;
    r = smk_initramfs_size(NULL, 0, &size);
    check(in_initramfs ? r == -EBADMSG : r == 0 && size > 0, "smk_initramfs_size, the same", r);

    /* Corruption is per asset: the others are fine. */
    size_t n;
    const struct smk_asset *const *all = smk_assets(&n);
    for (size_t i = 0; i < n; i++) {
        if (all[i] == bad)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, all[i]->file_name);
        r = smk_extract(all[i]->id, path, 0);
        char what[128];
        snprintf(what, sizeof what, "the intact %s still extracts", all[i]->name);
        check(r == 0 && smk_verify_file(all[i]->id, path) == 0, what, r);
    }

    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "corrupt-probe: could not remove %s\n", dir);
    printf("%s\n", failures ? "corrupt-probe: FAILED" : "corrupt-probe: all checks passed");
    return failures ? 1 : 0;
}
