/*
 * Fuzz target for everything the agent does with bytes a hostile host
 * controls before a request reaches a handler: smk_decode() on the frame
 * (header, each message type's fields, every length and count), the
 * smk_strlist_next() walk exec.c does over argv and env, and smka_stream
 * reassembling frames from a byte stream in arbitrary read sizes, with and
 * without resync, including virtio-serial's salvage, rescan and replay of
 * a frame that stopped arriving.
 *
 * It asserts invariants, not just "no crash": decoded fields lie inside the
 * frame and within the protocol's limits, a string list walks to exactly its
 * count, what was decoded re-encodes to the same bytes, a frame's prefixes
 * only ever ask for more, and the stream hands out exactly the bytes of the
 * frame it consumed, never allocating more than one frame.
 *
 * Built two ways (see tests/agent/fuzz/README.md):
 *   - with clang -fsanitize=fuzzer,address,undefined by tests/agent/fuzz/run;
 *   - with the normal compiler plus replay.c, whose main() replays the
 *     committed corpus (the `agent-fuzz-replay` meson test).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-proto.h"
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A field of a decoded frame lies inside the frame's payload. */
static void check_in_frame(const uint8_t *frame, size_t frame_len, struct smk_bytes b, uint32_t max)
{
    CHECK(b.len <= max);
    if (b.len == 0)
        return;
    CHECK(b.ptr >= frame + SMK_HEADER_SIZE);
    CHECK(b.ptr + b.len <= frame + frame_len);
}

static void check_str(const uint8_t *frame, size_t frame_len, struct smk_bytes s, uint32_t max)
{
    check_in_frame(frame, frame_len, s, max);
    CHECK(s.len == 0 || memchr(s.ptr, 0, s.len) == NULL);
}

static void check_path(const uint8_t *frame, size_t frame_len, struct smk_bytes s)
{
    check_str(frame, frame_len, s, SMK_MAX_PATH);
    CHECK(s.len > 0 && s.ptr[0] == '/');
}

/* NUL-terminated copy of a decoded string, for the encoders. */
static char *cstr(struct smk_bytes s)
{
    char *p = malloc((size_t)s.len + 1);
    CHECK(p != NULL);
    if (s.len)
        memcpy(p, s.ptr, s.len);
    p[s.len] = '\0';
    return p;
}

/*
 * Walks a string list the way exec.c does. Checks that it yields exactly
 * `count` strings, consumes exactly raw.len bytes, and that the pool exec.c
 * sizes as raw.len (each 4-byte length prefix is room for a NUL) suffices.
 * Returns the strings as C strings (caller frees) when want is set.
 */
static char **walk(const uint8_t *frame, size_t frame_len, const struct smk_strlist *l, int is_env,
                   int want)
{
    CHECK(l->count <= (is_env ? SMK_MAX_ENV : SMK_MAX_ARGS));
    check_in_frame(frame, frame_len, l->raw, SMK_MAX_PAYLOAD);
    char **v = want ? calloc((size_t)l->count + 1, sizeof(char *)) : NULL;
    CHECK(!want || v != NULL);
    uint32_t pos = 0, n = 0;
    size_t pool = 0;
    struct smk_bytes s;
    while (smk_strlist_next(l, &pos, &s)) {
        CHECK(n < l->count);
        check_str(frame, frame_len, s, SMK_MAX_STRING);
        CHECK(s.ptr >= l->raw.ptr && s.ptr + s.len <= l->raw.ptr + l->raw.len);
        if (is_env) {
            CHECK(s.len > 0 && s.ptr[0] != '=' && memchr(s.ptr, '=', s.len) != NULL);
        }
        pool += (size_t)s.len + 1;
        if (want)
            v[n] = cstr(s);
        n++;
    }
    CHECK(n == l->count);
    CHECK(pos == l->raw.len);
    CHECK(pool <= l->raw.len);
    return v;
}

static void free_list(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/*
 * Re-encodes a decoded frame with the encoder for its type. The result must
 * be the original frame's header (but for the length) and a prefix of its
 * payload: bytes after the last known field are the only thing a decoder
 * drops.
 */
static void check_roundtrip(const uint8_t *f, size_t flen, const struct smk_msg *m)
{
    struct smk_buf b = {.version = m->hdr.version};
    int r = 0;
    uint32_t id = m->hdr.id;
    char *s1 = NULL, *s2 = NULL, *s3 = NULL;
    char **argv = NULL, **env = NULL, **l3 = NULL;
    switch (m->hdr.type) {
    case SMK_PING:
    case SMK_WRITE_FILE_REPLY:
    case SMK_SHUTDOWN_REPLY:
        r = smk_encode_empty(&b, m->hdr.type, id);
        break;
    case SMK_PING_REPLY:
        s1 = cstr(m->u.ping_reply.version);
        r = smk_encode_ping_reply(&b, id, m->u.ping_reply.uptime_ns, m->u.ping_reply.ready_ns, s1);
        /* The encoder always states the version it speaks. */
        if (r == 0 && b.len >= SMK_HEADER_SIZE + 4)
            CHECK(rd32(b.data + SMK_HEADER_SIZE) == SMK_PROTO_VERSION);
        if (r == 0 && b.len >= SMK_HEADER_SIZE + 4)
            memcpy(b.data + SMK_HEADER_SIZE, f + SMK_HEADER_SIZE, 4);
        break;
    case SMK_EXEC: {
        argv = walk(f, flen, &m->u.exec.argv, 0, 1);
        env = walk(f, flen, &m->u.exec.env, 1, 1);
        s1 = cstr(m->u.exec.cwd);
        struct smk_exec_args a = {
            .argv = (const char *const *)argv,
            .argc = m->u.exec.argv.count,
            .env = (const char *const *)env,
            .envc = m->u.exec.env.count,
            .cwd = s1,
            .stdin_data = m->u.exec.stdin_data.ptr,
            .stdin_len = m->u.exec.stdin_data.len,
            .timeout_ms = m->u.exec.timeout_ms,
        };
        r = smk_encode_exec(&b, id, &a);
        break;
    }
    case SMK_EXEC_REPLY:
        r = smk_encode_exec_reply(&b, id, m->u.exec_reply.status, m->u.exec_reply.code,
                                  m->u.exec_reply.flags, m->u.exec_reply.out.ptr,
                                  m->u.exec_reply.out.len, m->u.exec_reply.err.ptr,
                                  m->u.exec_reply.err.len);
        break;
    case SMK_WRITE_FILE:
        s1 = cstr(m->u.write_file.path);
        r = smk_encode_write_file(&b, id, s1, m->u.write_file.mode, m->u.write_file.data.ptr,
                                  m->u.write_file.data.len);
        break;
    case SMK_READ_FILE:
        s1 = cstr(m->u.read_file.path);
        /* The flags field is there when the payload had room for it. */
        if (flen - SMK_HEADER_SIZE >= 8 + (size_t)m->u.read_file.path.len)
            r = smk_encode_read_file2(&b, id, s1, m->u.read_file.flags);
        else
            r = smk_encode_read_file(&b, id, s1);
        break;
    case SMK_HELLO:
        r = smk_encode_hello(&b, id, m->u.hello.max_version);
        break;
    case SMK_HELLO_REPLY:
        s1 = cstr(m->u.hello_reply.agent);
        r = smk_encode_hello_reply(&b, id, m->u.hello_reply.version, m->u.hello_reply.max_procs,
                                   m->u.hello_reply.window, s1);
        break;
    case SMK_SPAWN: {
        argv = walk(f, flen, &m->u.exec.argv, 0, 1);
        env = walk(f, flen, &m->u.exec.env, 1, 1);
        s1 = cstr(m->u.exec.cwd);
        uint32_t groups[SMK_MAX_GROUPS];
        for (uint32_t i = 0; i < m->u.exec.groups.count; i++)
            groups[i] = smk_u32list_get(&m->u.exec.groups, i);
        struct smk_spawn_args a = {
            .argv = (const char *const *)argv,
            .argc = m->u.exec.argv.count,
            .env = (const char *const *)env,
            .envc = m->u.exec.env.count,
            .cwd = s1,
            .flags = m->u.exec.flags,
            .uid = m->u.exec.uid,
            .gid = m->u.exec.gid,
            .groups = groups,
            .ngroups = m->u.exec.groups.count,
            .rows = m->u.exec.rows,
            .cols = m->u.exec.cols,
            .window = m->u.exec.window,
        };
        r = smk_encode_spawn(&b, id, &a);
        break;
    }
    case SMK_SPAWN_REPLY:
    case SMK_ATTACH_REPLY:
        r = smk_encode_spawn_reply(&b, m->hdr.type, id, m->u.spawn_reply.proc,
                                   m->u.spawn_reply.pid);
        break;
    case SMK_STDIN:
    case SMK_ACK:
    case SMK_SIGNAL:
    case SMK_RESIZE:
    case SMK_ATTACH:
    case SMK_OUTPUT:
    case SMK_EXIT:
        r = smk_encode_proc(&b, m->hdr.type, id, m->u.proc.proc, m->u.proc.a, m->u.proc.b,
                            m->u.proc.data.ptr, m->u.proc.data.len);
        break;
    case SMK_STDIN_REPLY:
    case SMK_SIGNAL_REPLY:
    case SMK_RESIZE_REPLY:
    case SMK_CONTROL_REPLY:
        r = smk_encode_empty(&b, m->hdr.type, id);
        break;
    case SMK_SET_TIME:
        r = smk_encode_set_time(&b, id, m->u.set_time.unix_ns);
        break;
    case SMK_ENTROPY:
        r = smk_encode_entropy(&b, id, m->u.entropy.flags, m->u.entropy.data.ptr,
                               m->u.entropy.data.len);
        break;
    case SMK_LINK:
        s1 = cstr(m->u.link.ifname);
        r = smk_encode_link(&b, id, s1, m->u.link.flags, m->u.link.mtu);
        break;
    case SMK_ADDR:
        s1 = cstr(m->u.addr.ifname);
        s2 = cstr(m->u.addr.cidr);
        r = smk_encode_addr(&b, id, m->u.addr.op, s1, s2);
        break;
    case SMK_ROUTE:
        s1 = cstr(m->u.route.dst);
        s2 = cstr(m->u.route.gateway);
        s3 = cstr(m->u.route.ifname);
        r = smk_encode_route(&b, id, m->u.route.op, s1, s2, s3, m->u.route.metric);
        break;
    case SMK_DNS:
        argv = walk(f, flen, &m->u.dns.servers, 0, 1);
        env = walk(f, flen, &m->u.dns.search, 0, 1);
        l3 = walk(f, flen, &m->u.dns.options, 0, 1);
        r = smk_encode_dns(&b, id, (const char *const *)argv, m->u.dns.servers.count,
                           (const char *const *)env, m->u.dns.search.count, (const char *const *)l3,
                           m->u.dns.options.count);
        break;
    case SMK_HOSTNAME:
        s1 = cstr(m->u.hostname.name);
        r = smk_encode_hostname(&b, id, s1);
        break;
    case SMK_HOSTS:
        argv = walk(f, flen, &m->u.hosts.lines, 0, 1);
        r = smk_encode_hosts(&b, id, (const char *const *)argv, m->u.hosts.lines.count);
        break;
    case SMK_READ_FILE_REPLY:
        r = smk_encode_read_reply(&b, id, m->u.read_reply.flags, m->u.read_reply.data.ptr,
                                  m->u.read_reply.data.len);
        break;
    case SMK_SHUTDOWN:
        r = smk_encode_shutdown(&b, id, m->u.shutdown.action);
        break;
    case SMK_ERROR:
        s1 = cstr(m->u.error.message);
        r = smk_encode_error(&b, id, m->u.error.code, s1);
        break;
    default:
        CHECK(!"a frame of an unknown type was accepted");
    }
    /* What the decoder accepted, the encoder must accept too. */
    CHECK(r == 0);
    CHECK(b.len >= SMK_HEADER_SIZE && b.len <= flen);
    CHECK(memcmp(b.data, f, 12) == 0);
    CHECK(rd32(b.data + 12) == b.len - SMK_HEADER_SIZE);
    CHECK(memcmp(b.data + SMK_HEADER_SIZE, f + SMK_HEADER_SIZE, b.len - SMK_HEADER_SIZE) == 0);
    /* And the re-encoded frame decodes to the same message. */
    struct smk_msg again;
    CHECK(smk_decode(b.data, b.len, &again) == (int)b.len);
    CHECK(again.hdr.type == m->hdr.type && again.hdr.id == id);
    smk_buf_free(&b);
    free(s1);
    free(s2);
    free(s3);
    free_list(argv);
    free_list(env);
    free_list(l3);
}

static int known_error(int r)
{
    switch (-r) {
    case SMK_E2BIG:
    case SMK_EINVAL:
    case SMK_ENAMETOOLONG:
    case SMK_ENOSYS:
    case SMK_EPROTO:
    case SMK_EBADMSG:
    case SMK_EMSGSIZE:
    case SMK_EPROTONOSUPPORT:
        return 1;
    default:
        return 0;
    }
}

static const uint8_t zero_union[sizeof(((struct smk_msg *)0)->u)];

/* Checks one smk_decode() result against the bytes it was given. */
static void check_decode(const uint8_t *buf, size_t len, int r, const struct smk_msg *m)
{
    size_t magic = len < 4 ? len : 4;
    int magic_ok = memcmp(buf, SMK_MAGIC, magic) == 0;
    if (r > 0) {
        size_t flen = (size_t)r;
        CHECK(magic_ok && len >= SMK_HEADER_SIZE);
        CHECK(flen == m->frame_len && flen <= len);
        CHECK(m->hdr.len <= SMK_MAX_PAYLOAD && flen == SMK_HEADER_SIZE + (size_t)m->hdr.len);
        CHECK(m->hdr.len == rd32(buf + 12) && m->hdr.id == rd32(buf + 8));
        CHECK(m->hdr.version >= SMK_PROTO_MIN_VERSION && m->hdr.version <= SMK_PROTO_VERSION);
        CHECK(m->hdr.version >= 2 || !smk_type_is_v2(m->hdr.type));
        CHECK(strcmp(smk_type_name(m->hdr.type), "?") != 0);
        const uint8_t *f = buf;
        switch (m->hdr.type) {
        case SMK_PING_REPLY:
            check_str(f, flen, m->u.ping_reply.version, SMK_MAX_VERSION);
            break;
        case SMK_EXEC:
            CHECK(m->u.exec.argv.count >= 1);
            CHECK(m->u.exec.argv.raw.len >= 4 && rd32(m->u.exec.argv.raw.ptr) > 0);
            walk(f, flen, &m->u.exec.argv, 0, 0);
            walk(f, flen, &m->u.exec.env, 1, 0);
            check_str(f, flen, m->u.exec.cwd, SMK_MAX_PATH);
            check_in_frame(f, flen, m->u.exec.stdin_data, SMK_MAX_DATA);
            break;
        case SMK_EXEC_REPLY:
            CHECK(m->u.exec_reply.status <= SMK_TIMED_OUT);
            check_in_frame(f, flen, m->u.exec_reply.out, SMK_MAX_OUTPUT);
            check_in_frame(f, flen, m->u.exec_reply.err, SMK_MAX_OUTPUT);
            break;
        case SMK_WRITE_FILE:
            check_path(f, flen, m->u.write_file.path);
            CHECK(m->u.write_file.mode <= 07777);
            check_in_frame(f, flen, m->u.write_file.data, SMK_MAX_DATA);
            break;
        case SMK_READ_FILE:
            check_path(f, flen, m->u.read_file.path);
            break;
        case SMK_READ_FILE_REPLY:
            check_in_frame(f, flen, m->u.read_reply.data, SMK_MAX_DATA);
            break;
        case SMK_SHUTDOWN:
            CHECK(m->u.shutdown.action <= SMK_SHUTDOWN_POWEROFF);
            break;
        case SMK_ERROR:
            check_str(f, flen, m->u.error.message, SMK_MAX_TEXT);
            break;
        default:
            break;
        }
        check_roundtrip(f, flen, m);
    } else if (r == 0) {
        /* A valid prefix: the magic so far, then a sound header. */
        CHECK(magic_ok);
        if (len >= SMK_HEADER_SIZE) {
            CHECK(m->hdr.len <= SMK_MAX_PAYLOAD);
            CHECK(m->frame_len == SMK_HEADER_SIZE + (size_t)m->hdr.len && m->frame_len > len);
        } else {
            CHECK(m->frame_len == 0);
        }
    } else {
        CHECK(known_error(r));
        CHECK(m->why != NULL);
        CHECK(memcmp(&m->u, zero_union, sizeof(zero_union)) == 0);
        if (r == -SMK_EBADMSG) {
            CHECK(!magic_ok && m->frame_len == 0);
        } else {
            CHECK(magic_ok && len >= SMK_HEADER_SIZE && m->hdr.id == rd32(buf + 8));
            if (m->frame_len == 0) {
                /* Only an oversized length makes a sound-magic frame unskippable. */
                CHECK(r == -SMK_EMSGSIZE && rd32(buf + 12) > SMK_MAX_PAYLOAD);
            } else {
                CHECK(m->frame_len == SMK_HEADER_SIZE + (size_t)rd32(buf + 12));
                CHECK(m->frame_len <= len);
            }
        }
    }
}

static int decode_checked(const uint8_t *buf, size_t len, struct smk_msg *m)
{
    int r = smk_decode(buf, len, m);
    check_decode(buf, len, r, m);
    return r;
}

/* A frame's proper prefixes never fail, except where the bytes so far are
 * already wrong (bad magic, oversized length); then every longer prefix
 * fails the same way. */
static void check_prefix(const uint8_t *buf, size_t len, int full_r, const struct smk_msg *full,
                         size_t k)
{
    struct smk_msg m;
    int r = decode_checked(buf, k, &m);
    if (r == 0)
        return;
    CHECK(r < 0);
    CHECK(r == -SMK_EBADMSG || (r == -SMK_EMSGSIZE && m.frame_len == 0));
    /* The full input fails the same way, since it starts with these bytes. */
    CHECK(full_r == r && full->frame_len == 0);
    (void)len;
}

/* A small deterministic generator, seeded from the input, for read sizes. */
static uint32_t next_rand(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 33);
}

static size_t chunk(uint64_t *rng, size_t want)
{
    uint32_t x = next_rand(rng);
    size_t n;
    switch (x & 3) {
    case 0:
        n = 1;
        break;
    case 1:
        n = 1 + (x >> 2) % 7;
        break;
    default:
        n = want;
        break;
    }
    return n < want ? n : want;
}

static void check_stream_frame(const struct smka_stream *st, const uint8_t *data, size_t consumed,
                               const struct smk_msg *m)
{
    /* The stream never reads ahead: a finished frame is exactly the last
     * bytes it was given, and decodes to the same thing on its own. */
    CHECK(m->frame_len >= SMK_HEADER_SIZE && m->frame_len <= consumed);
    CHECK(m->frame_len <= SMK_HEADER_SIZE + (size_t)SMK_MAX_PAYLOAD);
    const uint8_t *bytes = st->frame ? st->frame : st->head;
    CHECK(memcmp(bytes, data + consumed - m->frame_len, m->frame_len) == 0);
}

/* Salvage either changes nothing, or gives up the partial frame and sets
 * aside one or more whole, valid frames from its tail. */
static void check_salvage(struct smka_stream *st)
{
    size_t have = st->have;
    const uint8_t *bytes = st->frame ? st->frame : st->head;
    uint8_t *copy = malloc(have);
    CHECK(copy != NULL);
    memcpy(copy, bytes, have);
    if (!smka_stream_salvage(st)) {
        CHECK(smka_stream_partial(st) && st->have == have && !smka_stream_backlog(st));
        CHECK(memcmp(st->frame ? st->frame : st->head, copy, have) == 0);
        free(copy);
        return;
    }
    CHECK(!smka_stream_partial(st) && smka_stream_backlog(st));
    size_t len = st->backlog_len;
    CHECK(st->backlog_off == 0 && len >= SMK_HEADER_SIZE && len < have);
    CHECK(memcmp(st->backlog, copy + have - len, len) == 0);
    const uint8_t *p = st->backlog;
    while (len > 0) {
        struct smk_msg m;
        int r = decode_checked(p, len, &m);
        CHECK(r > 0);
        p += r;
        len -= (size_t)r;
    }
    free(copy);
}

/*
 * Feeds data to a stream in pseudo-random read sizes, as conn.c does.
 * With resync, sometimes gives up on a partial frame the way the serial
 * stall path does (smka_stream_rescan) and replays the set-aside bytes.
 */
static void run_stream(const uint8_t *data, size_t size, int resync, uint64_t seed)
{
    struct smka_stream st;
    smka_stream_init(&st, resync);
    uint64_t rng = seed;
    size_t off = 0, frames = 0;
    /* Bytes fed to the stream (fresh or replayed), for the no-read-ahead
     * check; a rescan moves the window, so only fresh runs are compared. */
    int replayed = 0;
    for (int guard = 0; guard < 1 << 20; guard++) {
        struct smk_msg m;
        int k;
        if (smka_stream_backlog(&st)) {
            replayed = 1;
            size_t before = st.backlog_len - st.backlog_off;
            k = smka_stream_replay(&st, &m);
            CHECK(st.backlog_len - st.backlog_off <= before);
        } else {
            if (off == size) {
                if (resync && smka_stream_partial(&st)) {
                    /* The serial stall path: give up, look for a later frame. */
                    size_t had = st.have;
                    smka_stream_rescan(&st);
                    CHECK(!smka_stream_partial(&st));
                    CHECK(st.backlog_len - st.backlog_off < had);
                    if (smka_stream_backlog(&st)) {
                        CHECK(memcmp(st.backlog, SMK_MAGIC,
                                     st.backlog_len < 4 ? st.backlog_len : 4) == 0);
                        continue;
                    }
                }
                break;
            }
            size_t n;
            uint8_t *p = smka_stream_want(&st, &n);
            if (!p) {
                CHECK(!resync && st.broken);
                break;
            }
            CHECK(n > 0 && st.need <= SMK_HEADER_SIZE + (size_t)SMK_MAX_PAYLOAD);
            CHECK(st.have + n == st.need);
            n = chunk(&rng, n);
            if (n > size - off)
                n = size - off;
            memcpy(p, data + off, n);
            off += n;
            k = smka_stream_advance(&st, n, &m);
            /* Sometimes the line goes quiet in the middle of a frame: the
             * serial handler tries to salvage whole requests at its end,
             * and after a long stall rescans. */
            if (k == 0 && resync && smka_stream_partial(&st)) {
                uint32_t x = next_rand(&rng);
                if ((x & 7) == 0)
                    check_salvage(&st);
                else if ((x & 63) == 1)
                    smka_stream_rescan(&st);
                if (!smka_stream_partial(&st))
                    continue;
            }
        }
        if (k > 0) {
            frames++;
            struct smk_msg again;
            const uint8_t *bytes = st.frame ? st.frame : st.head;
            CHECK(smk_decode(bytes, m.frame_len, &again) == (int)m.frame_len);
            check_decode(bytes, m.frame_len, (int)m.frame_len, &m);
            if (!replayed)
                check_stream_frame(&st, data, off, &m);
        } else if (k < 0) {
            CHECK(known_error(k) || k == -SMK_ENOMEM);
            CHECK(m.why != NULL);
            if (m.frame_len == 0 && !resync)
                CHECK(st.broken);
        }
    }
    smka_stream_free(&st);
    (void)frames;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct smk_msg m, m2;
    int r = decode_checked(data, size, &m);

    /* Deterministic, and extra bytes after a whole frame change nothing. */
    CHECK(smk_decode(data, size, &m2) == r);
    /* (Field by field: struct padding is not part of the result.) */
    CHECK(m2.hdr.version == m.hdr.version && m2.hdr.type == m.hdr.type);
    CHECK(m2.hdr.id == m.hdr.id && m2.hdr.len == m.hdr.len);
    CHECK(m2.frame_len == m.frame_len && m2.why == m.why);
    if (r > 0 || (r < 0 && m.frame_len > 0)) {
        CHECK(smk_decode(data, m.frame_len, &m2) == r);
        CHECK(m2.hdr.id == m.hdr.id && m2.hdr.type == m.hdr.type);
    }

    /* Prefixes: every length up to a header and a bit, and just short of
     * the frame's end. */
    size_t end = r > 0 || m.frame_len ? m.frame_len : size;
    for (size_t k = 0; k < end && k <= SMK_HEADER_SIZE + 8; k++)
        check_prefix(data, size, r, &m, k);
    if (end > 0)
        check_prefix(data, size, r, &m, end - 1);

    /* Where a frame can start. */
    size_t at = smk_find_magic(data, size);
    CHECK(at <= size);
    if (at < size)
        CHECK(memcmp(data + at, SMK_MAGIC, size - at < 4 ? size - at : 4) == 0);
    for (size_t i = 0; i < at && i + 4 <= size; i++)
        CHECK(memcmp(data + i, SMK_MAGIC, 4) != 0);

    /* The same bytes as a stream, as a socket and as virtio-serial sees them. */
    uint64_t seed = 1469598103934665603ull;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 1099511628211ull;
    seed ^= size;
    run_stream(data, size, 0, seed);
    run_stream(data, size, 1, seed);
    return 0;
}
