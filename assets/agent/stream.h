/*
 * Reassembles frames from a byte stream (vsock, a unix socket, or a
 * virtio-serial port). No I/O: the caller reads into the buffer that
 * smka_stream_want() hands out and reports the count to smka_stream_advance().
 * Only as many bytes as the current frame still needs are ever asked for, so
 * no byte of the next frame is consumed early.
 */
#ifndef SMKA_AGENT_STREAM_H
#define SMKA_AGENT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "agent-proto.h"

struct smka_stream {
    uint8_t head[SMK_HEADER_SIZE];
    uint8_t *frame;   /* whole frame, allocated once its header is sound */
    size_t have;      /* bytes of the current frame received */
    size_t need;      /* bytes the current frame needs in total */
    int resync;       /* after garbage, hunt for the next magic instead of giving up */
    int in_garbage;   /* the current garbage run has been reported already */
    int done;         /* a frame was handed out and is released on the next want */
    int broken;       /* lost sync without resync: only smka_stream_reset() helps */
    uint8_t *backlog; /* bytes set aside by smka_stream_rescan(), to be fed again */
    size_t backlog_len, backlog_off;
};

/* resync: for transports without connections (virtio-serial), where the only
 * way back to a frame boundary is to look for the next magic. */
void smka_stream_init(struct smka_stream *s, int resync);

/* Drops any partial frame and set-aside bytes, e.g. when the peer went away. */
void smka_stream_reset(struct smka_stream *s);

/*
 * Gives up on the partial frame without losing what may follow it: when a
 * virtio-serial client vanished mid-frame and the next one's bytes were
 * appended to it. The bytes after its first byte are set aside, from the
 * next magic on, and fed again by smka_stream_replay().
 */
void smka_stream_rescan(struct smka_stream *s);

/*
 * Gives up on the partial frame if it ends in one or more whole, valid
 * frames back to back (from a magic after its first byte to the last byte
 * received): what a virtio-serial client's request looks like when it was
 * appended to a frame whose sender vanished. Those frames are set aside for
 * smka_stream_replay() and 1 is returned; otherwise nothing changes and 0 is
 * returned. Looks at SMKA_STREAM_SALVAGE_TRIES magics at most.
 */
int smka_stream_salvage(struct smka_stream *s);
#define SMKA_STREAM_SALVAGE_TRIES 64

/* Whether set-aside bytes wait for smka_stream_replay(). */
int smka_stream_backlog(const struct smka_stream *s);

/* Feeds set-aside bytes instead of reading; returns as smka_stream_advance(). */
int smka_stream_replay(struct smka_stream *s, struct smk_msg *msg);

void smka_stream_free(struct smka_stream *s);

/* Whether part of a frame has been received. */
int smka_stream_partial(const struct smka_stream *s);

/* Where to read next and how many bytes at most (*n > 0); NULL when the
 * stream is broken. */
uint8_t *smka_stream_want(struct smka_stream *s, size_t *n);

/*
 * Accounts n bytes just read. Returns 1 when a frame is complete and decoded
 * into *msg, 0 when more bytes are needed, or minus an SMK_E* code for a bad
 * frame (see smk_decode(); msg->frame_len == 0 means the stream was out of
 * sync: with resync it is already hunting, without it the stream is broken).
 * Pointers in *msg stay valid until the next smka_stream_want() or reset.
 */
int smka_stream_advance(struct smka_stream *s, size_t n, struct smk_msg *msg);

#endif
