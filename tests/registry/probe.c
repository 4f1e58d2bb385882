/*
 * registry-probe INITRAMFS: what the library linked here ships, for check-registry.py.
 * Prints "asset<TAB>id<TAB>name<TAB>file<TAB>mode" for each asset of smk_assets(), then writes the
 * default initramfs to INITRAMFS and prints "initramfs<TAB>/path<TAB>mode" for each file in it.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>
#include <smkernel.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: registry-probe INITRAMFS\n");
        return 2;
    }
    size_t n = 0;
    const struct smk_asset *const *list = smk_assets(&n);
    for (size_t i = 0; i < n; i++)
        printf("asset\t%d\t%s\t%s\t%04o\n", (int)list[i]->id, list[i]->name, list[i]->file_name,
               (unsigned)list[i]->mode);
    int r = smk_write_initramfs(argv[1], NULL, 0, 0);
    if (r != 0) {
        fprintf(stderr, "registry-probe: smk_write_initramfs: %s\n", smk_strerror(r));
        return 1;
    }
    struct archive *ar = archive_read_new();
    archive_read_support_format_cpio(ar);
    archive_read_support_filter_all(ar);
    if (archive_read_open_filename(ar, argv[1], 1 << 16) != ARCHIVE_OK) {
        fprintf(stderr, "registry-probe: %s: %s\n", argv[1], archive_error_string(ar));
        archive_read_free(ar);
        return 1;
    }
    struct archive_entry *e;
    while ((r = archive_read_next_header(ar, &e)) == ARCHIVE_OK)
        if (archive_entry_filetype(e) == AE_IFREG)
            printf("initramfs\t/%s\t%04o\n", archive_entry_pathname(e),
                   (unsigned)(archive_entry_perm(e) & 07777));
    int bad = r != ARCHIVE_EOF;
    if (bad)
        fprintf(stderr, "registry-probe: %s: %s\n", argv[1], archive_error_string(ar));
    archive_read_free(ar);
    return bad;
}
