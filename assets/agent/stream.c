#include "stream.h"

#include <stdlib.h>
#include <string.h>

void smka_stream_init(struct smka_stream *s, int resync)
{
    memset(s, 0, sizeof(*s));
    s->need = SMK_HEADER_SIZE;
    s->resync = resync;
}

/* Back to waiting for a header; the backlog and the garbage state stay. */
static void next_frame(struct smka_stream *s)
{
    free(s->frame);
    s->frame = NULL;
    s->have = 0;
    s->need = SMK_HEADER_SIZE;
    s->done = 0;
}

void smka_stream_reset(struct smka_stream *s)
{
    int resync = s->resync;
    free(s->frame);
    free(s->backlog);
    smka_stream_init(s, resync);
}

void smka_stream_free(struct smka_stream *s)
{
    smka_stream_reset(s);
}

int smka_stream_partial(const struct smka_stream *s)
{
    return s->have > 0 && !s->done;
}

uint8_t *smka_stream_want(struct smka_stream *s, size_t *n)
{
    if (s->done)
        next_frame(s);
    if (s->broken) {
        *n = 0;
        return NULL;
    }
    *n = s->need - s->have;
    return (s->frame ? s->frame : s->head) + s->have;
}

static int lost_sync(struct smka_stream *s, int err)
{
    if (!s->resync) {
        s->broken = 1;
        return err;
    }
    /* The bytes left after the skip are at most a magic prefix, so they
     * cannot fail again until more arrive. */
    size_t skip = 1 + smk_find_magic(s->head + 1, s->have - 1);
    memmove(s->head, s->head + skip, s->have - skip);
    s->have -= skip;
    /* One report per run of garbage, not one per byte. */
    if (s->in_garbage)
        return 0;
    s->in_garbage = 1;
    return err;
}

int smka_stream_advance(struct smka_stream *s, size_t n, struct smk_msg *msg)
{
    s->have += n;
    if (!s->frame) {
        int r = smk_decode(s->head, s->have, msg);
        if (msg->frame_len == 0)
            return r < 0 ? lost_sync(s, r) : 0;
        s->in_garbage = 0;
        if (r != 0) {
            s->done = 1;
            return r > 0 ? 1 : r;
        }
        s->frame = malloc(msg->frame_len);
        if (!s->frame) {
            msg->frame_len = 0;
            msg->why = "out of memory for the frame";
            return lost_sync(s, -SMK_ENOMEM);
        }
        memcpy(s->frame, s->head, SMK_HEADER_SIZE);
        s->need = msg->frame_len;
        return 0;
    }
    if (s->have < s->need)
        return 0;
    int r = smk_decode(s->frame, s->have, msg);
    s->done = 1;
    return r > 0 ? 1 : r;
}

void smka_stream_rescan(struct smka_stream *s)
{
    if (!smka_stream_partial(s))
        return;
    const uint8_t *bytes = s->frame ? s->frame : s->head;
    size_t from = 1 + smk_find_magic(bytes + 1, s->have - 1);
    size_t keep = s->have - from, rest = s->backlog_len - s->backlog_off;
    uint8_t *b = keep ? malloc(keep + rest) : NULL;
    if (b) {
        /* Set-aside bytes not replayed yet came after this frame's. */
        memcpy(b, bytes + from, keep);
        if (rest)
            memcpy(b + keep, s->backlog + s->backlog_off, rest);
        free(s->backlog);
        s->backlog = b;
        s->backlog_len = keep + rest;
        s->backlog_off = 0;
    }
    next_frame(s);
}

/* Whether buf[0..len) is one or more whole, valid frames back to back. */
static int whole_frames(const uint8_t *buf, size_t len)
{
    while (len > 0) {
        struct smk_msg m;
        int r = smk_decode(buf, len, &m);
        if (r <= 0)
            return 0;
        buf += r;
        len -= (size_t)r;
    }
    return 1;
}

int smka_stream_salvage(struct smka_stream *s)
{
    if (!smka_stream_partial(s) || smka_stream_backlog(s))
        return 0;
    const uint8_t *bytes = s->frame ? s->frame : s->head;
    size_t at = 1;
    for (int tries = 0; tries < SMKA_STREAM_SALVAGE_TRIES && at < s->have; tries++) {
        at += smk_find_magic(bytes + at, s->have - at);
        if (at + SMK_HEADER_SIZE > s->have)
            return 0;
        if (whole_frames(bytes + at, s->have - at)) {
            size_t keep = s->have - at;
            uint8_t *b = malloc(keep);
            if (!b)
                return 0;
            memcpy(b, bytes + at, keep);
            free(s->backlog);
            s->backlog = b;
            s->backlog_len = keep;
            s->backlog_off = 0;
            next_frame(s);
            return 1;
        }
        at++;
    }
    return 0;
}

int smka_stream_backlog(const struct smka_stream *s)
{
    return s->backlog_off < s->backlog_len;
}

int smka_stream_replay(struct smka_stream *s, struct smk_msg *msg)
{
    size_t n;
    uint8_t *dst = smka_stream_want(s, &n);
    if (!dst) {
        free(s->backlog);
        s->backlog = NULL;
        s->backlog_len = s->backlog_off = 0;
    }
    if (!dst || !smka_stream_backlog(s))
        return 0;
    size_t left = s->backlog_len - s->backlog_off;
    if (n > left)
        n = left;
    memcpy(dst, s->backlog + s->backlog_off, n);
    s->backlog_off += n;
    if (s->backlog_off == s->backlog_len) {
        free(s->backlog);
        s->backlog = NULL;
        s->backlog_len = s->backlog_off = 0;
    }
    return smka_stream_advance(s, n, msg);
}
