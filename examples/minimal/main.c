/*
 * The smallest use of libsmkernel: write the guest kernel to a file, and decompress it into a
 * buffer as a VMM loads it into guest memory. SPDX-License-Identifier: MIT
 *
 *     minimal DIR     writes DIR/<kernel file name>, then compares it with the buffer
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <smkernel.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const struct smk_asset *kernel = smk_asset_get(SMK_ASSET_KERNEL);
    printf("smkernel %s, %s guest kernel %s (%llu bytes)\n", smk_version(), smk_arch(),
           kernel->version, (unsigned long long)kernel->size);

    /* 1. To a file: atomically, checked, with its mode; DIR is created if missing. */
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", argv[1], kernel->file_name);
    int r = smk_extract(SMK_ASSET_KERNEL, path, SMK_EXTRACT_PARENTS);
    if (r != 0) {
        fprintf(stderr, "smk_extract %s: %s\n", path, smk_strerror(r));
        return 1;
    }
    printf("wrote %s\n", path);

    /* 2. Into memory (a VMM's guest RAM): no file system involved. */
    unsigned char *buf = malloc(kernel->size);
    if (!buf)
        return 1;
    r = smk_decompress(SMK_ASSET_KERNEL, buf, kernel->size);
    if (r != 0) {
        fprintf(stderr, "smk_decompress: %s\n", smk_strerror(r));
        free(buf);
        return 1;
    }

    /* The two are the same bytes. */
    FILE *f = fopen(path, "rb");
    unsigned char *file = malloc(kernel->size + 1);
    size_t n = f && file ? fread(file, 1, kernel->size + 1, f) : 0;
    int same = n == kernel->size && memcmp(file, buf, n) == 0;
    if (f)
        fclose(f);
    free(file);
    free(buf);
    printf("decompressed %llu bytes into memory: %s the file\n", (unsigned long long)kernel->size,
           same ? "identical to" : "DIFFERENT from");
    printf("kernel command line: %s\n", smk_kernel_cmdline());
    return same ? 0 : 1;
}
