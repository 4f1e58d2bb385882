#include "stream.h"

#include <stdlib.h>
#include <string.h>

void smk_stream_init(struct smk_stream *s, int resync)
{
    memset(s, 0, sizeof(*s));
    s->need = SMK_HEADER_SIZE;
    s->resync = resync;
}

void smk_stream_reset(struct smk_stream *s)
{
    int resync = s->resync;
    free(s->frame);
    smk_stream_init(s, resync);
}

void smk_stream_free(struct smk_stream *s)
{
    smk_stream_reset(s);
}

int smk_stream_partial(const struct smk_stream *s)
{
    return s->have > 0 && !s->done;
}

uint8_t *smk_stream_want(struct smk_stream *s, size_t *n)
{
    if (s->done) {
        int in_garbage = s->in_garbage;
        smk_stream_reset(s);
        s->in_garbage = in_garbage;
    }
    if (s->broken) {
        *n = 0;
        return NULL;
    }
    *n = s->need - s->have;
    return (s->frame ? s->frame : s->head) + s->have;
}

static int lost_sync(struct smk_stream *s, int err)
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

int smk_stream_advance(struct smk_stream *s, size_t n, struct smk_msg *msg)
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
