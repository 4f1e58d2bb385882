/*
 * A program built against an installed smkernel with nothing but
 * `cc pkgconfig-consumer.c $(pkg-config --cflags --libs [--static] smkernel)`: extracts every
 * asset the library lists into DIR and verifies each file. SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <smkernel.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    if (strcmp(smk_version(), SMK_VERSION_STRING) != 0) {
        fprintf(stderr, "FAIL: the library says version %s, its header %s\n", smk_version(),
                SMK_VERSION_STRING);
        return 1;
    }
    size_t n = 0;
    const struct smk_asset *const *assets = smk_assets(&n);
    printf("libsmkernel %s for %s: %zu assets\n", smk_version(), smk_arch(), n);
    if (n == 0)
        return 1;

    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct smk_asset *a = assets[i];
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], a->file_name);
        int rc = smk_extract(a->id, path, 0);
        if (rc == 0)
            rc = smk_verify_file(a->id, path);
        struct stat st;
        if (rc == 0 && stat(path, &st) != 0)
            rc = -1;
        if (rc != 0) {
            fprintf(stderr, "FAIL: %s -> %s: %s\n", a->name, path,
                    rc == -1 ? "vanished after extraction" : smk_strerror(rc));
            failed = 1;
        } else if ((uint64_t)st.st_size != a->size || (st.st_mode & 07777) != a->mode) {
            fprintf(stderr, "FAIL: %s: %llu bytes mode %04o, want %llu bytes mode %04o\n", a->name,
                    (unsigned long long)st.st_size, (unsigned)(st.st_mode & 07777),
                    (unsigned long long)a->size, a->mode);
            failed = 1;
        } else {
            printf("ok %s -> %s (%llu bytes, sha256 %.16s...)\n", a->name, path,
                   (unsigned long long)a->size, a->sha256_hex);
        }
    }
    return failed;
}
