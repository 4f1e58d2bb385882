/*
 * The ARM64 branch filter ("a64") of packed aarch64 kernels. SPDX-License-Identifier: MIT
 *
 * assets/pack rewrites the PC-relative target of two AArch64 instructions into an absolute one
 * before zstd compresses the kernel Image: every call of one function (BL) and every ADRP of one
 * page then carries the same bits wherever it sits, repeats zstd can find. Here it is undone.
 * The specification, with the reasons for each choice, is in assets/README.md ("The a64
 * filter"); in short, for each whole little-endian 32-bit word w at byte offset p (p = 0, 4,
 * 8, ... from the start of the file; the last 1-3 bytes of a file whose size is not a multiple
 * of 4 are never touched):
 *   BL   (w & 0xfc000000) == 0x94000000: the low 26 bits += p / 4 (encode) or -= (decode),
 *        mod 2^26;
 *   ADRP (w & 0x9f000000) == 0x90000000, its 21-bit page offset imm = immhi:immlo in
 *        [-2^17, 2^17): imm's low 18 bits += p / 4096 (encode) or -= (decode), mod 2^18, then
 *        sign-extended from bit 17 to 21 bits; an ADRP outside that range is left alone;
 *   every other word is left alone.
 * Each case maps its set of words onto itself one to one and keeps the class bits, so decode
 * undoes encode exactly for every input, code or not; the filtered stream is a bijective image of
 * the raw one, so the zstd frame's checksum over it still tells a corrupt blob.
 *
 * Header-only: the library (decode.c) and the build's blob check (tools/blobcheck.c, a native
 * build tool) run this same code.
 */
#ifndef SMK_A64_FILTER_H
#define SMK_A64_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The word w found at byte offset p of the stream, encoded or decoded. BL's result is computed
 * for every word and chosen without a branch: one word in 20 of the kernel is a BL, and a branch
 * on it mispredicted often enough to make the filter 1.4x slower (at -Os, on the Image). */
static inline uint32_t smk__a64_word(uint32_t w, uint64_t p, bool encode)
{
    uint32_t k = (uint32_t)(p >> 2); /* BL: imm26 counts words */
    uint32_t bl = 0x94000000u | ((encode ? w + k : w - k) & 0x03ffffffu);
    if ((w & 0x9f000000u) == 0x90000000u) { /* ADRP: immhi (bits 5-23), immlo (29-30) */
        uint32_t imm = ((w >> 29) & 3u) | ((w >> 3) & 0x1ffffcu);
        if (((imm + 0x20000u) & 0x1c0000u) != 0)
            return w; /* a page offset beyond +-2^17 (512 MiB): data, or not worth it */
        uint32_t pg = (uint32_t)(p >> 12);
        imm = (encode ? imm + pg : imm - pg) & 0x3ffffu;
        imm |= (0u - (imm & 0x20000u)) & 0x1c0000u;
        return (w & 0x9000001fu) | (imm & 3u) << 29 | (imm >> 2) << 5;
    }
    return (w & 0xfc000000u) == 0x94000000u ? bl : w;
}

/* A little-endian word. memcpy compiles to one load or store; the byte-wise form does not at
 * -Os, the library's optimization (this loop, the filter's whole cost, ran 15 % slower). */
static inline uint32_t smk__a64_load(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap32(w);
#endif
    return w;
}

static inline void smk__a64_store(unsigned char *p, uint32_t w)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap32(w);
#endif
    memcpy(p, &w, 4);
}

/* Convert the len / 4 whole words of src into dst (which may be src); src[0] is at byte offset
 * p of the stream, a multiple of 4. */
static inline void smk__a64_code(unsigned char *dst, const unsigned char *src, size_t len,
                                 uint64_t p, bool encode)
{
    for (size_t i = 0; i + 4 <= len; i += 4)
        smk__a64_store(dst + i, smk__a64_word(smk__a64_load(src + i), p + i, encode));
}

/* Where converted bytes go: 0, or a nonzero value that stops the stream and is returned. */
typedef int (*smk__a64_sink)(void *ctx, const unsigned char *data, size_t len);

/*
 * A stream converted chunk by chunk, in chunks split anywhere: a word split between two chunks
 * waits in buf for its other bytes. buf holds cap bytes (a multiple of 4, at least 4), owned by
 * the caller; the sink gets at most cap bytes a call, in order, each byte once.
 */
struct smk__a64_stream {
    unsigned char *buf;
    size_t cap;
    size_t used;     /* bytes in buf */
    uint64_t offset; /* stream offset of buf[0], a multiple of 4 */
    bool encode;
    smk__a64_sink sink;
    void *ctx;
};

static inline void smk__a64_init(struct smk__a64_stream *s, unsigned char *buf, size_t cap,
                                 bool encode, smk__a64_sink sink, void *ctx)
{
    *s = (struct smk__a64_stream){
        .buf = buf, .cap = cap, .encode = encode, .sink = sink, .ctx = ctx};
}

static inline int smk__a64_flush(struct smk__a64_stream *s, size_t n)
{
    int r = n ? s->sink(s->ctx, s->buf, n) : 0;
    if (r != 0)
        return r;
    memmove(s->buf, s->buf + n, s->used - n);
    s->used -= n;
    s->offset += n;
    return 0;
}

/* The next len bytes of the stream; hands on every word completed so far. */
static inline int smk__a64_feed(struct smk__a64_stream *s, const unsigned char *p, size_t len)
{
    while (len > 0) {
        size_t part = s->used % 4;
        if (part != 0) { /* complete the word the last chunk split */
            size_t k = 4 - part < len ? 4 - part : len;
            memcpy(s->buf + s->used, p, k);
            s->used += k;
            p += k;
            len -= k;
            if (s->used % 4 != 0)
                break;
            smk__a64_code(s->buf + s->used - 4, s->buf + s->used - 4, 4, s->offset + s->used - 4,
                          s->encode);
        } else if (len < 4) { /* the start of a word the next chunk completes */
            memcpy(s->buf + s->used, p, len);
            s->used += len;
            break;
        } else {
            size_t n = len & ~(size_t)3;
            if (n > s->cap - s->used)
                n = s->cap - s->used;
            smk__a64_code(s->buf + s->used, p, n, s->offset + s->used, s->encode);
            s->used += n;
            p += n;
            len -= n;
        }
        if (s->used == s->cap) {
            int r = smk__a64_flush(s, s->cap);
            if (r != 0)
                return r;
        }
    }
    return smk__a64_flush(s, s->used & ~(size_t)3);
}

/* The end of the stream: the last 1-3 bytes of a size not a multiple of 4 go on as they are. */
static inline int smk__a64_finish(struct smk__a64_stream *s)
{
    return smk__a64_flush(s, s->used);
}

#endif
