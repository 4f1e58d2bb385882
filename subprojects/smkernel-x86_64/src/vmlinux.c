/*
 * The x86_64 kernel as a PVH-bootable ELF vmlinux, derived from the embedded bzImage.
 * SPDX-License-Identifier: MIT
 *
 * A bzImage is the real-mode setup code, then the decompressor, which carries the kernel's
 * ELF image (vmlinux stripped of symbols, "vmlinux.bin") compressed as its payload. The boot
 * protocol header says where that payload is (payload_offset, payload_length since protocol
 * 2.08), the kernel's LZ4 payload is the legacy LZ4 stream format followed by the decompressed
 * length as a little-endian u32 (Kbuild's size_append). Decompressing it gives back the ELF
 * the kernel build linked, byte for byte, so no second kernel blob is needed: PVH VMMs
 * (Firecracker, Cloud Hypervisor, qemu -M microvm) load that ELF and jump to the entry point
 * in its XEN_ELFNOTE_PHYS32_ENTRY note.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <archive.h>
#include <archive_entry.h>

#include "internal.h"
#include "smkernel-x86_64.h"
#include "vmlinux.h"

/* Boot protocol header fields (Documentation/arch/x86/boot.rst). */
#define BZ_SETUP_SECTS 0x1f1
#define BZ_HEADER_MAGIC 0x202 /* "HdrS" */
#define BZ_VERSION 0x206
#define BZ_PAYLOAD_OFFSET 0x248
#define BZ_PAYLOAD_LENGTH 0x24c
#define BZ_MIN_SIZE 0x250

/* ELF64 (only what is checked here; <elf.h> is not on every host this builds for). */
#define EH_SIZE 64
#define PH_SIZE 56
#define SH_SIZE 64
#define PT_LOAD_ 1
#define PT_NOTE_ 4
#define EM_X86_64_ 62
#define ET_EXEC_ 2
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define NOTES_MAX (64u << 10)

static uint32_t le16(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const unsigned char *p)
{
    return le16(p) | le16(p + 2) << 16;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Where the decompressed ELF ends, what it must contain, and what has been seen so far. */
struct elf_scan {
    uint64_t end; /* file size implied by the headers */
    uint64_t note_off, note_len;
    unsigned char *notes; /* the PT_NOTE bytes, collected as they stream past */
    bool header_seen;
};

/*
 * Checks the ELF header and program headers (which follow it at the start of vmlinux) and
 * sets where the file ends: the ELF the build produced, without anything appended to the
 * payload after it (relocation tables when the kernel is built with KASLR).
 */
static int parse_header(struct elf_scan *s, const unsigned char *h, size_t len)
{
    if (len < EH_SIZE || memcmp(h, "\177ELF", 4) != 0 || h[4] != 2 /* 64-bit */ ||
        h[5] != 1 /* little-endian */ || le16(h + 16) != ET_EXEC_ || le16(h + 18) != EM_X86_64_)
        return -EBADMSG;
    uint64_t phoff = le64(h + 32), shoff = le64(h + 40);
    uint32_t phentsize = le16(h + 54), phnum = le16(h + 56);
    uint32_t shentsize = le16(h + 58), shnum = le16(h + 60);
    if (phentsize != PH_SIZE || phnum == 0 || (shnum != 0 && shentsize != SH_SIZE) || phoff > len ||
        (uint64_t)phnum * PH_SIZE > len - phoff)
        return -EBADMSG;
    s->end = shoff + (uint64_t)shnum * SH_SIZE;
    if (phoff + (uint64_t)phnum * PH_SIZE > s->end)
        s->end = phoff + (uint64_t)phnum * PH_SIZE;
    bool loadable = false;
    for (uint32_t i = 0; i < phnum; i++) {
        const unsigned char *ph = h + phoff + (uint64_t)i * PH_SIZE;
        uint32_t type = le32(ph);
        uint64_t off = le64(ph + 8), filesz = le64(ph + 32);
        if (off > UINT64_MAX - filesz)
            return -EBADMSG;
        if (off + filesz > s->end)
            s->end = off + filesz;
        if (type == PT_LOAD_ && filesz > 0)
            loadable = true;
        if (type == PT_NOTE_ && s->note_len == 0) {
            if (filesz == 0 || filesz > NOTES_MAX)
                return -EBADMSG;
            s->note_off = off;
            s->note_len = filesz;
        }
    }
    if (!loadable || s->note_len == 0)
        return -EBADMSG;
    s->notes = malloc(s->note_len);
    if (!s->notes)
        return -ENOMEM;
    s->header_seen = true;
    return 0;
}

/* Is there an XEN_ELFNOTE_PHYS32_ENTRY note ("Xen", type 18) among the collected notes? */
static bool has_pvh_entry(const struct elf_scan *s)
{
    const unsigned char *p = s->notes;
    uint64_t left = s->note_len;
    while (left >= 12) {
        uint64_t namesz = le32(p), descsz = le32(p + 4);
        uint32_t type = le32(p + 8);
        uint64_t size = 12 + ((namesz + 3) & ~3ull) + ((descsz + 3) & ~3ull);
        if (size > left)
            return false;
        if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && memcmp(p + 12, "Xen", 4) == 0 &&
            descsz >= 4)
            return true;
        p += size;
        left -= size;
    }
    return false;
}

/* Copies the part of [pos, pos + len) that overlaps the note segment into s->notes. */
static void collect_notes(struct elf_scan *s, uint64_t pos, const unsigned char *data, size_t len)
{
    uint64_t lo = pos > s->note_off ? pos : s->note_off;
    uint64_t hi = pos + len < s->note_off + s->note_len ? pos + len : s->note_off + s->note_len;
    if (lo < hi)
        memcpy(s->notes + (lo - s->note_off), data + (lo - pos), hi - lo);
}

/*
 * Finds the payload in a decoded bzImage: checks the boot protocol header and returns the
 * LZ4 stream (without the trailing length) and the length it promises.
 */
static int find_payload(const unsigned char *bz, size_t size, const unsigned char **lz4,
                        size_t *lz4_len, uint32_t *out_len)
{
    if (size < BZ_MIN_SIZE || memcmp(bz + BZ_HEADER_MAGIC, "HdrS", 4) != 0 ||
        le16(bz + BZ_VERSION) < 0x208)
        return -EBADMSG;
    size_t setup = bz[BZ_SETUP_SECTS] ? bz[BZ_SETUP_SECTS] : 4;
    uint64_t start = (setup + 1) * 512 + (uint64_t)le32(bz + BZ_PAYLOAD_OFFSET);
    uint64_t len = le32(bz + BZ_PAYLOAD_LENGTH);
    static const unsigned char lz4_legacy_magic[4] = {0x02, 0x21, 0x4c, 0x18};
    if (len < 8 || start > size || len > size - start ||
        memcmp(bz + start, lz4_legacy_magic, 4) != 0)
        return -EBADMSG;
    *lz4 = bz + start;
    *lz4_len = len - 4;
    *out_len = le32(bz + start + len - 4);
    return 0;
}

/* Decompresses the payload, handing on the ELF's bytes (and only those) to cb. */
static int inflate_elf(const unsigned char *lz4, size_t lz4_len, uint32_t out_len, smk_write_fn cb,
                       void *ctx)
{
    struct archive *ar = archive_read_new();
    if (!ar)
        return -ENOMEM;
    struct elf_scan scan = {0};
    int ret = -EBADMSG;
    if (archive_read_support_filter_lz4(ar) != ARCHIVE_OK ||
        archive_read_support_format_raw(ar) != ARCHIVE_OK) {
        ret = -ENOMEM;
        goto out;
    }
    struct archive_entry *entry;
    if (archive_read_open_memory(ar, lz4, lz4_len) != ARCHIVE_OK ||
        archive_read_next_header(ar, &entry) != ARCHIVE_OK) {
        ret = archive_errno(ar) == ENOMEM ? -ENOMEM : -EBADMSG;
        goto out;
    }
    uint64_t total = 0;
    for (;;) {
        const void *block;
        size_t len;
        la_int64_t offset;
        int r = archive_read_data_block(ar, &block, &len, &offset);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK || (uint64_t)offset != total) {
            ret = archive_errno(ar) == ENOMEM ? -ENOMEM : -EBADMSG;
            goto out;
        }
        if (len > out_len - total)
            goto out;
        if (!scan.header_seen) {
            /* The first block (8 MiB for legacy LZ4) holds the ELF and program headers. */
            int pr = parse_header(&scan, block, len);
            if (pr != 0) {
                ret = pr;
                goto out;
            }
            if (scan.end > out_len)
                goto out;
        }
        collect_notes(&scan, total, block, len);
        size_t keep =
            total >= scan.end ? 0 : (size_t)(scan.end - total < len ? scan.end - total : len);
        for (size_t done = 0; done < keep;) {
            size_t n = keep - done < SMK_CHUNK ? keep - done : SMK_CHUNK;
            int cr = cb(ctx, (const unsigned char *)block + done, n);
            if (cr != 0) {
                ret = cr < 0 ? cr : -EIO;
                goto out;
            }
            done += n;
        }
        total += len;
    }
    if (total == out_len && scan.header_seen && has_pvh_entry(&scan))
        ret = 0;
out:
    free(scan.notes);
    archive_read_free(ar);
    return ret;
}

int smk__vmlinux_from_bzimage(const unsigned char *bz, size_t size, smk_write_fn cb, void *ctx)
{
    const unsigned char *lz4;
    size_t lz4_len;
    uint32_t out_len;
    int r = find_payload(bz, size, &lz4, &lz4_len, &out_len);
    return r != 0 ? r : inflate_elf(lz4, lz4_len, out_len, cb, ctx);
}

int smk_stream_vmlinux(smk_write_fn write_cb, void *ctx)
{
    if (!write_cb)
        return -EINVAL;
    int err;
    const struct smk_asset *a = smk__lookup(SMK_ASSET_KERNEL, &err);
    if (!a)
        return err;
    unsigned char *bz = malloc(a->size);
    if (!bz)
        return -ENOMEM;
    int r = smk_decompress(SMK_ASSET_KERNEL, bz, a->size);
    if (r == 0)
        r = smk__vmlinux_from_bzimage(bz, a->size, write_cb, ctx);
    free(bz);
    return r;
}

static int to_atomic(void *ctx, const void *data, size_t len)
{
    struct smk__atomic *t = ctx;
    return smk__write_all(t->fd, data, len);
}

static int extract_vmlinux(const char *path, unsigned int flags)
{
    struct smk__atomic t;
    int r = smk__atomic_begin(&t, path, flags);
    if (r != 0)
        return r;
    r = smk_stream_vmlinux(to_atomic, &t);
    if (r != 0) {
        smk__atomic_abort(&t);
        return r;
    }
    return smk__atomic_commit(&t, 0644, NULL);
}

int smk_extract_vmlinux_to(const char *path)
{
    return extract_vmlinux(path, 0);
}

int smk_extract_vmlinux_to_with_parents(const char *path)
{
    return extract_vmlinux(path, SMK_EXTRACT_PARENTS);
}
