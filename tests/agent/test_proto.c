/* Unit tests of the agent's protocol code: agent-proto.c (encoder, decoder) and
 * stream.c (frame reassembly). No I/O. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-proto.h"
#include "stream.h"
#include "../run-suite.h"

static int bytes_eq(struct smk_bytes b, const void *p, size_t len)
{
    return b.len == len && (len == 0 || memcmp(b.ptr, p, len) == 0);
}

static int str_eq(struct smk_bytes b, const char *s)
{
    return bytes_eq(b, s, strlen(s));
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A hand-made frame: header plus raw payload, for what the encoder refuses
 * to produce. */
struct raw {
    uint8_t *p;
    size_t len, cap;
};

static void raw_put(struct raw *r, const void *p, size_t n)
{
    if (r->len + n > r->cap) {
        r->cap = (r->len + n) * 2 + 64;
        r->p = realloc(r->p, r->cap);
        ck_assert_ptr_nonnull(r->p);
    }
    if (n)
        memcpy(r->p + r->len, p, n);
    r->len += n;
}

static void raw_u32(struct raw *r, uint32_t v)
{
    uint8_t b[4];
    put32(b, v);
    raw_put(r, b, 4);
}

static void raw_str(struct raw *r, const char *s, size_t n)
{
    raw_u32(r, (uint32_t)n);
    raw_put(r, s, n);
}

static void raw_header(struct raw *r, uint16_t version, uint16_t type, uint32_t id)
{
    uint8_t h[SMK_HEADER_SIZE] = {'S', 'M', 'K', 'A'};
    h[4] = (uint8_t)version;
    h[5] = (uint8_t)(version >> 8);
    h[6] = (uint8_t)type;
    h[7] = (uint8_t)(type >> 8);
    put32(h + 8, id);
    raw_put(r, h, sizeof(h));
}

/* Patches the payload length to what follows the header. */
static void raw_seal(struct raw *r)
{
    put32(r->p + 12, (uint32_t)(r->len - SMK_HEADER_SIZE));
}

static int decode_all(const struct smk_buf *b, struct smk_msg *m)
{
    return smk_decode(b->data, b->len, m);
}

/* One valid frame of each message type. */
#define N_SAMPLES 34
#define N_V1_SAMPLES 11
static const uint32_t sample_groups[] = {10, 20, 65534};
static const char *const sample_servers[] = {"10.0.2.3", "fd00::3"};
static const char *const sample_search[] = {"smk.test"};
static const char *const sample_options[] = {"ndots:2", "edns0"};
static const char *const sample_hosts[] = {"10.0.2.9 db.smk.test db", "fd00::9 db6"};
static const char *const sample_argv[] = {"/bin/sh", "-c", "echo \"$X\"", ""};
static const char *const sample_env[] = {"X=1", "EMPTY=", "A=b=c"};
static const uint8_t binary[] = {0, 1, 2, 0xff, 'S', 'M', 'K', 'A', 0};

static void encode_sample(int i, struct smk_buf *b, uint32_t id)
{
    struct smk_exec_args ea = {.argv = sample_argv,
                               .argc = 4,
                               .env = sample_env,
                               .envc = 3,
                               .cwd = "/tmp",
                               .stdin_data = binary,
                               .stdin_len = sizeof(binary),
                               .timeout_ms = 1500};
    int r = -1;
    switch (i) {
    case 0:
        r = smk_encode_empty(b, SMK_PING, id);
        break;
    case 1:
        r = smk_encode_ping_reply(b, id, 123456789012ull, 42ull, "0.1.0");
        break;
    case 2:
        r = smk_encode_exec(b, id, &ea);
        break;
    case 3:
        r = smk_encode_exec_reply(b, id, SMK_SIGNALED, 9, SMK_EXEC_STDERR_TRUNCATED, "out", 3,
                                  binary, sizeof(binary));
        break;
    case 4:
        r = smk_encode_write_file(b, id, "/etc/hostname", 0644, binary, sizeof(binary));
        break;
    case 5:
        r = smk_encode_empty(b, SMK_WRITE_FILE_REPLY, id);
        break;
    case 6:
        r = smk_encode_read_file(b, id, "/proc/cpuinfo");
        break;
    case 7:
        r = smk_encode_read_reply(b, id, SMK_READ_TRUNCATED, binary, sizeof(binary));
        break;
    case 8:
        r = smk_encode_shutdown(b, id, SMK_SHUTDOWN_POWEROFF);
        break;
    case 9:
        r = smk_encode_empty(b, SMK_SHUTDOWN_REPLY, id);
        break;
    case 10:
        r = smk_encode_error(b, id, 2, "open /nope: No such file or directory");
        break;
    /* Version 2. */
    case 11:
        r = smk_encode_hello(b, id, 2);
        break;
    case 12:
        r = smk_encode_hello_reply(b, id, 2, 32, 262144, "0.1.0");
        break;
    case 13: {
        struct smk_spawn_args sa = {.argv = sample_argv,
                                    .argc = 4,
                                    .env = sample_env,
                                    .envc = 3,
                                    .cwd = "/tmp",
                                    .flags = SMK_SPAWN_TTY | SMK_SPAWN_USER,
                                    .uid = 1000,
                                    .gid = 1001,
                                    .groups = sample_groups,
                                    .ngroups = 3,
                                    .rows = 24,
                                    .cols = 80,
                                    .window = 65536};
        r = smk_encode_spawn(b, id, &sa);
        break;
    }
    case 14:
        r = smk_encode_spawn_reply(b, SMK_SPAWN_REPLY, id, 3, 4242);
        break;
    case 15:
        r = smk_encode_proc(b, SMK_STDIN, id, 3, SMK_STDIN_CLOSE, 0, binary, sizeof(binary));
        break;
    case 16:
        r = smk_encode_proc(b, SMK_ACK, id, 3, 65536, 0, NULL, 0);
        break;
    case 17:
        r = smk_encode_proc(b, SMK_SIGNAL, id, 3, 15, SMK_SIGNAL_GROUP, NULL, 0);
        break;
    case 18:
        r = smk_encode_proc(b, SMK_RESIZE, id, 3, 40, 100, NULL, 0);
        break;
    case 19:
        r = smk_encode_proc(b, SMK_ATTACH, id, 3, 131072, 0, NULL, 0);
        break;
    case 20:
        r = smk_encode_spawn_reply(b, SMK_ATTACH_REPLY, id, 3, 4242);
        break;
    case 21:
        r = smk_encode_proc(b, SMK_OUTPUT, id, 3, 2, 0, binary, sizeof(binary));
        break;
    case 22:
        r = smk_encode_proc(b, SMK_EXIT, id, 3, SMK_SIGNALED, 15, NULL, 0);
        break;
    case 23:
        r = smk_encode_set_time(b, id, 1893456000000000000ull);
        break;
    case 24:
        r = smk_encode_entropy(b, id, SMK_ENTROPY_CREDIT, binary, sizeof(binary));
        break;
    case 25:
        r = smk_encode_link(b, id, "eth0", SMK_LINK_SET_STATE | SMK_LINK_UP | SMK_LINK_SET_MTU,
                            1400);
        break;
    case 26:
        r = smk_encode_addr(b, id, SMK_NET_ADD, "eth0", "fd00::2/64");
        break;
    case 27:
        r = smk_encode_route(b, id, SMK_NET_DEL, "default", "10.0.2.2", "eth0", 100);
        break;
    case 28:
        r = smk_encode_dns(b, id, sample_servers, 2, sample_search, 1, sample_options, 2);
        break;
    case 29:
        r = smk_encode_hostname(b, id, "smk-guest");
        break;
    case 30:
        r = smk_encode_hosts(b, id, sample_hosts, 2);
        break;
    case 31:
        r = smk_encode_empty(b, SMK_STDIN_REPLY, id);
        break;
    case 32:
        r = smk_encode_empty(b, SMK_CONTROL_REPLY, id);
        break;
    case 33:
        r = smk_encode_read_file2(b, id, "/etc/passwd", SMK_READ_NOFOLLOW);
        break;
    }
    ck_assert_int_eq(r, 0);
}

/* encode_sample() for a buffer where the encoder must refuse with code. */
static void encode_sample_expect(int i, struct smk_buf *b, int code)
{
    struct smk_buf probe = {.version = 2};
    encode_sample(i, &probe, 1);
    /* Re-run the same encoder into b by sample index, checking its result. */
    smk_buf_free(&probe);
    switch (i) {
    case 11:
        ck_assert_int_eq(smk_encode_hello(b, 1, 2), code);
        break;
    case 16:
        ck_assert_int_eq(smk_encode_proc(b, SMK_ACK, 1, 3, 1, 0, NULL, 0), code);
        break;
    case 23:
        ck_assert_int_eq(smk_encode_set_time(b, 1, 1), code);
        break;
    case 29:
        ck_assert_int_eq(smk_encode_hostname(b, 1, "x"), code);
        break;
    default:
        break;
    }
}

/* --- round trips ------------------------------------------------------- */

START_TEST(roundtrip_ping)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(smk_encode_empty(&b, SMK_PING, 7), 0);
    ck_assert_uint_eq(b.len, SMK_HEADER_SIZE);
    ck_assert_mem_eq(b.data, "SMKA\x02\x00\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00", 16);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_PING);
    ck_assert_uint_eq(m.hdr.id, 7);
    ck_assert_uint_eq(m.hdr.version, 2);
    /* A version-1 frame, as a version-1 client sends it (the PROTOCOL.md example). */
    smk_buf_free(&b);
    b.version = 1;
    ck_assert_int_eq(smk_encode_empty(&b, SMK_PING, 7), 0);
    ck_assert_mem_eq(b.data, "SMKA\x01\x00\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00", 16);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.version, 1);
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_ping_reply)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(1, &b, 0xdeadbeef);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_PING_REPLY);
    ck_assert_uint_eq(m.hdr.id, 0xdeadbeef);
    ck_assert_uint_eq(m.u.ping_reply.proto, SMK_PROTO_VERSION);
    ck_assert(m.u.ping_reply.uptime_ns == 123456789012ull);
    ck_assert(m.u.ping_reply.ready_ns == 42ull);
    ck_assert(str_eq(m.u.ping_reply.version, "0.1.0"));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_exec)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(2, &b, 1);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC);
    ck_assert_uint_eq(m.u.exec.timeout_ms, 1500);
    ck_assert_uint_eq(m.u.exec.argv.count, 4);
    struct smk_bytes s;
    uint32_t pos = 0;
    for (int i = 0; i < 4; i++) {
        ck_assert(smk_strlist_next(&m.u.exec.argv, &pos, &s));
        ck_assert(str_eq(s, sample_argv[i]));
    }
    ck_assert(!smk_strlist_next(&m.u.exec.argv, &pos, &s));
    ck_assert_uint_eq(m.u.exec.env.count, 3);
    pos = 0;
    for (int i = 0; i < 3; i++) {
        ck_assert(smk_strlist_next(&m.u.exec.env, &pos, &s));
        ck_assert(str_eq(s, sample_env[i]));
    }
    ck_assert(!smk_strlist_next(&m.u.exec.env, &pos, &s));
    ck_assert(str_eq(m.u.exec.cwd, "/tmp"));
    ck_assert(bytes_eq(m.u.exec.stdin_data, binary, sizeof(binary)));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_exec_minimal)
{
    const char *argv[] = {"true"};
    struct smk_exec_args ea = {.argv = argv, .argc = 1};
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), 0);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.exec.argv.count, 1);
    ck_assert_uint_eq(m.u.exec.env.count, 0);
    ck_assert_uint_eq(m.u.exec.cwd.len, 0);
    ck_assert_uint_eq(m.u.exec.stdin_data.len, 0);
    ck_assert_uint_eq(m.u.exec.timeout_ms, 0);
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_exec_reply)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(3, &b, 2);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_EXEC_REPLY);
    ck_assert_uint_eq(m.u.exec_reply.status, SMK_SIGNALED);
    ck_assert_uint_eq(m.u.exec_reply.code, 9);
    ck_assert_uint_eq(m.u.exec_reply.flags, SMK_EXEC_STDERR_TRUNCATED);
    ck_assert(str_eq(m.u.exec_reply.out, "out"));
    ck_assert(bytes_eq(m.u.exec_reply.err, binary, sizeof(binary)));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_write_file)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(4, &b, 3);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_WRITE_FILE);
    ck_assert(str_eq(m.u.write_file.path, "/etc/hostname"));
    ck_assert_uint_eq(m.u.write_file.mode, 0644);
    ck_assert(bytes_eq(m.u.write_file.data, binary, sizeof(binary)));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_read_file)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(6, &b, 4);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_READ_FILE);
    ck_assert(str_eq(m.u.read_file.path, "/proc/cpuinfo"));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_read_reply)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(7, &b, 5);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_READ_FILE_REPLY);
    ck_assert_uint_eq(m.u.read_reply.flags, SMK_READ_TRUNCATED);
    ck_assert(bytes_eq(m.u.read_reply.data, binary, sizeof(binary)));
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_shutdown)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(8, &b, 6);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_SHUTDOWN);
    ck_assert_uint_eq(m.u.shutdown.action, SMK_SHUTDOWN_POWEROFF);
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_empty_replies)
{
    const uint16_t types[] = {SMK_WRITE_FILE_REPLY, SMK_SHUTDOWN_REPLY};
    for (size_t i = 0; i < 2; i++) {
        struct smk_buf b = {0};
        struct smk_msg m;
        ck_assert_int_eq(smk_encode_empty(&b, types[i], 99), 0);
        ck_assert_int_eq(decode_all(&b, &m), SMK_HEADER_SIZE);
        ck_assert_uint_eq(m.hdr.type, types[i]);
        ck_assert_uint_eq(m.hdr.id, 99);
        smk_buf_free(&b);
    }
}
END_TEST

START_TEST(roundtrip_error)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(10, &b, 8);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_ERROR);
    ck_assert_uint_eq(m.u.error.code, 2);
    ck_assert(str_eq(m.u.error.message, "open /nope: No such file or directory"));
    smk_buf_free(&b);
}
END_TEST

START_TEST(error_message_is_cut_at_the_limit)
{
    char *text = malloc(SMK_MAX_TEXT * 3 + 1);
    memset(text, 'x', SMK_MAX_TEXT * 3);
    text[SMK_MAX_TEXT * 3] = '\0';
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(smk_encode_error(&b, 1, 22, text), 0);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.error.message.len, SMK_MAX_TEXT);
    smk_buf_free(&b);
    free(text);
}
END_TEST

START_TEST(frames_concatenate)
{
    struct smk_buf b = {0};
    for (int i = 0; i < N_SAMPLES; i++)
        encode_sample(i, &b, (uint32_t)i + 100);
    size_t off = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        struct smk_msg m;
        int r = smk_decode(b.data + off, b.len - off, &m);
        ck_assert_int_gt(r, 0);
        ck_assert_uint_eq(m.hdr.id, (uint32_t)i + 100);
        off += (size_t)r;
    }
    ck_assert_uint_eq(off, b.len);
    smk_buf_free(&b);
}
END_TEST

START_TEST(trailing_payload_bytes_are_ignored)
{
    struct smk_buf b = {0};
    encode_sample(_i, &b, 5);
    struct raw r = {0};
    raw_put(&r, b.data, b.len);
    raw_put(&r, "future", 6);
    raw_seal(&r);
    struct smk_msg m;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), (int)r.len);
    ck_assert_uint_eq(m.hdr.id, 5);
    free(r.p);
    smk_buf_free(&b);
}
END_TEST

/* --- version 2 ------------------------------------------------------------ */

START_TEST(roundtrip_any_sample)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(_i, &b, 31);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.id, 31);
    ck_assert_uint_eq(m.hdr.version, SMK_PROTO_VERSION);
    ck_assert_str_ne(smk_type_name(m.hdr.type), "?");
    smk_buf_free(&b);
}
END_TEST

START_TEST(roundtrip_v2_fields)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    encode_sample(13, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_SPAWN);
    ck_assert_uint_eq(m.u.exec.flags, SMK_SPAWN_TTY | SMK_SPAWN_USER);
    ck_assert_uint_eq(m.u.exec.argv.count, 4);
    ck_assert_uint_eq(m.u.exec.env.count, 3);
    ck_assert(str_eq(m.u.exec.cwd, "/tmp"));
    ck_assert_uint_eq(m.u.exec.uid, 1000);
    ck_assert_uint_eq(m.u.exec.gid, 1001);
    ck_assert_uint_eq(m.u.exec.groups.count, 3);
    ck_assert_uint_eq(smk_u32list_get(&m.u.exec.groups, 2), 65534);
    ck_assert_uint_eq(smk_u32list_get(&m.u.exec.groups, 3), 0);
    ck_assert_uint_eq(m.u.exec.rows, 24);
    ck_assert_uint_eq(m.u.exec.cols, 80);
    ck_assert_uint_eq(m.u.exec.window, 65536);
    smk_buf_free(&b);

    encode_sample(12, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.hello_reply.version, 2);
    ck_assert_uint_eq(m.u.hello_reply.max_procs, 32);
    ck_assert_uint_eq(m.u.hello_reply.window, 262144);
    ck_assert(str_eq(m.u.hello_reply.agent, "0.1.0"));
    smk_buf_free(&b);

    encode_sample(21, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.hdr.type, SMK_OUTPUT);
    ck_assert_uint_eq(m.u.proc.proc, 3);
    ck_assert_uint_eq(m.u.proc.a, 2);
    ck_assert(bytes_eq(m.u.proc.data, binary, sizeof(binary)));
    smk_buf_free(&b);

    encode_sample(22, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.proc.a, SMK_SIGNALED);
    ck_assert_uint_eq(m.u.proc.b, 15);
    smk_buf_free(&b);

    encode_sample(23, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.set_time.unix_ns, 1893456000000000000ull);
    smk_buf_free(&b);

    encode_sample(27, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.route.op, SMK_NET_DEL);
    ck_assert(str_eq(m.u.route.dst, "default"));
    ck_assert(str_eq(m.u.route.gateway, "10.0.2.2"));
    ck_assert(str_eq(m.u.route.ifname, "eth0"));
    ck_assert_uint_eq(m.u.route.metric, 100);
    smk_buf_free(&b);

    encode_sample(28, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.dns.servers.count, 2);
    ck_assert_uint_eq(m.u.dns.search.count, 1);
    ck_assert_uint_eq(m.u.dns.options.count, 2);
    smk_buf_free(&b);

    encode_sample(33, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.read_file.flags, SMK_READ_NOFOLLOW);
    smk_buf_free(&b);
    /* Without the appended field (a version-1 READ_FILE) the flags are 0. */
    encode_sample(6, &b, 9);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.read_file.flags, 0);
    smk_buf_free(&b);
}
END_TEST

/* Every version-2 message is refused in a version-1 frame (a v1 peer never sends one). */
START_TEST(v2_messages_need_a_v2_frame)
{
    for (int i = N_V1_SAMPLES; i < N_SAMPLES; i++) {
        struct smk_buf b = {0};
        encode_sample(i, &b, 5);
        struct smk_msg m;
        if (i == 33) { /* READ_FILE is a version-1 message */
            smk_buf_free(&b);
            continue;
        }
        b.data[4] = 1;
        ck_assert_int_eq(smk_decode(b.data, b.len, &m), -SMK_ENOSYS);
        ck_assert_uint_eq(m.frame_len, b.len);
        smk_buf_free(&b);
        b.version = 1;
        encode_sample_expect(i, &b, -SMK_ENOSYS);
        ck_assert_uint_eq(b.len, 0);
        smk_buf_free(&b);
    }
}
END_TEST

START_TEST(v2_limits)
{
    struct smk_buf b = {0};
    uint32_t groups[SMK_MAX_GROUPS + 1] = {0};
    const char *argv[] = {"x"};
    struct smk_spawn_args sa = {
        .argv = argv, .argc = 1, .groups = groups, .ngroups = SMK_MAX_GROUPS};
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), 0);
    sa.ngroups++;
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), -SMK_E2BIG);
    sa.ngroups = 0;
    sa.window = SMK_MAX_WINDOW;
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), 0);
    sa.window++;
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), -SMK_EINVAL);
    sa.window = 0;
    sa.rows = 65536;
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), -SMK_EINVAL);
    sa.rows = 0;
    sa.argc = 0;
    ck_assert_int_eq(smk_encode_spawn(&b, 1, &sa), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_SIGNAL, 1, 1, 0, 0, NULL, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_SIGNAL, 1, 1, 65, 0, NULL, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_SIGNAL, 1, 1, 64, 0, NULL, 0), 0);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_RESIZE, 1, 1, 65536, 1, NULL, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_ACK, 1, 1, SMK_MAX_WINDOW + 1, 0, NULL, 0),
                     -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_OUTPUT, 1, 1, 3, 0, NULL, 0), -SMK_EPROTO);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_EXIT, 1, 1, 2, 0, NULL, 0), -SMK_EPROTO);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_PING, 1, 1, 0, 0, NULL, 0), -SMK_EINVAL);
    uint8_t *big = calloc(1, SMK_MAX_CHUNK + 1);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_OUTPUT, 1, 1, 1, 0, big, SMK_MAX_CHUNK), 0);
    ck_assert_int_eq(smk_encode_proc(&b, SMK_OUTPUT, 1, 1, 1, 0, big, SMK_MAX_CHUNK + 1),
                     -SMK_EMSGSIZE);
    ck_assert_int_eq(smk_encode_entropy(&b, 1, 0, big, SMK_MAX_ENTROPY), 0);
    ck_assert_int_eq(smk_encode_entropy(&b, 1, 0, big, SMK_MAX_ENTROPY + 1), -SMK_EMSGSIZE);
    free(big);
    ck_assert_int_eq(smk_encode_link(&b, 1, "123456789012345", 0, 0), 0);
    ck_assert_int_eq(smk_encode_link(&b, 1, "1234567890123456", 0, 0), -SMK_ENAMETOOLONG);
    ck_assert_int_eq(smk_encode_link(&b, 1, "", 0, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_link(&b, 1, "e/0", 0, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_addr(&b, 1, 2, "eth0", "10.0.0.1/8"), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_addr(&b, 1, 0, "eth0", "10.0.0.1 /8"), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_route(&b, 1, 0, "default", "", "", 0), 0);
    ck_assert_int_eq(smk_encode_route(&b, 1, 0, "", "", "", 0), -SMK_EINVAL);
    char host[66];
    memset(host, 'h', 65);
    host[65] = '\0';
    ck_assert_int_eq(smk_encode_hostname(&b, 1, host), -SMK_ENAMETOOLONG);
    host[64] = '\0';
    ck_assert_int_eq(smk_encode_hostname(&b, 1, host), 0);
    const char *many[SMK_MAX_LIST + 1];
    for (size_t i = 0; i <= SMK_MAX_LIST; i++)
        many[i] = "10.0.0.1 x";
    ck_assert_int_eq(smk_encode_hosts(&b, 1, many, SMK_MAX_LIST), 0);
    ck_assert_int_eq(smk_encode_hosts(&b, 1, many, SMK_MAX_LIST + 1), -SMK_E2BIG);
    ck_assert_int_eq(smk_encode_dns(&b, 1, many, SMK_MAX_LIST + 1, NULL, 0, NULL, 0), -SMK_E2BIG);
    const char *nl[] = {"a\nb"};
    ck_assert_int_eq(smk_encode_dns(&b, 1, nl, 1, NULL, 0, NULL, 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_hello(&b, 1, 0), -SMK_EINVAL);
    smk_buf_free(&b);
}
END_TEST

/* --- truncation, bad headers --------------------------------------------- */

START_TEST(truncated_at_every_length)
{
    struct smk_buf b = {0};
    encode_sample(_i, &b, 77);
    for (size_t k = 0; k < b.len; k++) {
        /* A copy of exactly k bytes, so reading past them trips ASan. */
        uint8_t *p = malloc(k ? k : 1);
        memcpy(p, b.data, k);
        struct smk_msg m;
        ck_assert_int_eq(smk_decode(p, k, &m), 0);
        if (k >= SMK_HEADER_SIZE) {
            ck_assert_uint_eq(m.frame_len, b.len);
            ck_assert_uint_eq(m.hdr.id, 77);
        } else {
            ck_assert_uint_eq(m.frame_len, 0);
        }
        free(p);
    }
    smk_buf_free(&b);
}
END_TEST

START_TEST(bad_magic_fails_at_the_first_wrong_byte)
{
    struct smk_buf b = {0};
    encode_sample(0, &b, 1);
    for (size_t at = 0; at < 4; at++) {
        uint8_t h[SMK_HEADER_SIZE];
        memcpy(h, b.data, sizeof(h));
        h[at] ^= 0x20;
        for (size_t k = at + 1; k <= sizeof(h); k++) {
            struct smk_msg m;
            ck_assert_int_eq(smk_decode(h, k, &m), -SMK_EBADMSG);
            ck_assert_uint_eq(m.frame_len, 0);
            ck_assert_ptr_nonnull(m.why);
        }
    }
    smk_buf_free(&b);
}
END_TEST

START_TEST(oversized_length_is_refused_before_the_payload)
{
    struct raw r = {0};
    raw_header(&r, SMK_PROTO_VERSION, SMK_WRITE_FILE, 31);
    put32(r.p + 12, SMK_MAX_PAYLOAD + 1);
    struct smk_msg m;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EMSGSIZE);
    ck_assert_uint_eq(m.frame_len, 0);
    ck_assert_uint_eq(m.hdr.id, 31);
    put32(r.p + 12, 0xffffffffu);
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EMSGSIZE);
    put32(r.p + 12, SMK_MAX_PAYLOAD);
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), 0);
    ck_assert_uint_eq(m.frame_len, SMK_HEADER_SIZE + SMK_MAX_PAYLOAD);
    free(r.p);
}
END_TEST

START_TEST(other_version_is_skippable)
{
    struct raw r = {0};
    raw_header(&r, 3, SMK_PING, 12);
    raw_put(&r, "abc", 3);
    raw_seal(&r);
    struct smk_msg m;
    /* Reported only once the whole frame is there, so it can be skipped. */
    ck_assert_int_eq(smk_decode(r.p, r.len - 1, &m), 0);
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EPROTONOSUPPORT);
    ck_assert_uint_eq(m.frame_len, r.len);
    ck_assert_uint_eq(m.hdr.id, 12);
    ck_assert_uint_eq(m.hdr.version, 3);
    /* Version 0 neither. */
    r.p[4] = 0;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EPROTONOSUPPORT);
    free(r.p);
}
END_TEST

START_TEST(unknown_type_is_skippable)
{
    const uint16_t types[] = {0, 7, 0x0f, 0x16, 0x28, 0x7fff, 0x8000, 0x8007, 0x8032, 0xfffe};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct raw r = {0};
        raw_header(&r, SMK_PROTO_VERSION, types[i], 13);
        raw_seal(&r);
        struct smk_msg m;
        ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_ENOSYS);
        ck_assert_uint_eq(m.frame_len, SMK_HEADER_SIZE);
        ck_assert_uint_eq(m.hdr.id, 13);
        free(r.p);
    }
}
END_TEST

START_TEST(short_payload_is_malformed)
{
    /* Every sample with its payload cut short but the length field telling
     * the truth: each must be refused, none may read past the end. */
    struct smk_buf b = {0};
    encode_sample(_i, &b, 1);
    for (size_t k = SMK_HEADER_SIZE; k < b.len; k++) {
        uint8_t *p = malloc(k);
        memcpy(p, b.data, k);
        put32(p + 12, (uint32_t)(k - SMK_HEADER_SIZE));
        struct smk_msg m;
        int r = smk_decode(p, k, &m);
        ck_assert_msg(r < 0, "sample %d cut to %zu bytes decoded as %d", _i, k, r);
        ck_assert_uint_eq(m.frame_len, k);
        free(p);
    }
    smk_buf_free(&b);
}
END_TEST

START_TEST(field_running_past_the_payload)
{
    struct raw r = {0};
    raw_header(&r, SMK_PROTO_VERSION, SMK_READ_FILE, 1);
    raw_u32(&r, 100);
    raw_put(&r, "/etc", 4);
    raw_seal(&r);
    struct smk_msg m;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EPROTO);
    free(r.p);
}
END_TEST

/* --- limits -------------------------------------------------------------- */

static int exec_with_counts(size_t argc, size_t envc, struct smk_buf *b)
{
    const char **argv = calloc(argc + 1, sizeof(char *));
    const char **env = calloc(envc + 1, sizeof(char *));
    for (size_t i = 0; i < argc; i++)
        argv[i] = "a";
    for (size_t i = 0; i < envc; i++)
        env[i] = "K=v";
    struct smk_exec_args ea = {.argv = argv, .argc = argc, .env = env, .envc = envc};
    int r = smk_encode_exec(b, 1, &ea);
    free(argv);
    free(env);
    return r;
}

START_TEST(argv_count_limit)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(exec_with_counts(SMK_MAX_ARGS, 0, &b), 0);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.exec.argv.count, SMK_MAX_ARGS);
    smk_buf_free(&b);
    ck_assert_int_eq(exec_with_counts(SMK_MAX_ARGS + 1, 0, &b), -SMK_E2BIG);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_int_eq(exec_with_counts(0, 0, &b), -SMK_EINVAL);
    ck_assert_uint_eq(b.len, 0);
    smk_buf_free(&b);
}
END_TEST

START_TEST(env_count_limit)
{
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(exec_with_counts(1, SMK_MAX_ENV, &b), 0);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    ck_assert_uint_eq(m.u.exec.env.count, SMK_MAX_ENV);
    smk_buf_free(&b);
    ck_assert_int_eq(exec_with_counts(1, SMK_MAX_ENV + 1, &b), -SMK_E2BIG);
    smk_buf_free(&b);
}
END_TEST

START_TEST(huge_count_in_a_tiny_frame)
{
    struct raw r = {0};
    raw_header(&r, SMK_PROTO_VERSION, SMK_EXEC, 1);
    raw_u32(&r, 0);
    raw_u32(&r, 0xffffffffu);
    raw_seal(&r);
    struct smk_msg m;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_E2BIG);
    free(r.p);

    /* Within the limit, but the strings are not there. */
    r = (struct raw){0};
    raw_header(&r, SMK_PROTO_VERSION, SMK_EXEC, 1);
    raw_u32(&r, 0);
    raw_u32(&r, SMK_MAX_ARGS);
    raw_str(&r, "ls", 2);
    raw_seal(&r);
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EPROTO);
    free(r.p);
}
END_TEST

START_TEST(string_length_limit)
{
    char *s = malloc(SMK_MAX_STRING + 2);
    memset(s, 'a', SMK_MAX_STRING + 1);
    s[SMK_MAX_STRING] = '\0';
    const char *argv[] = {"echo", s};
    struct smk_exec_args ea = {.argv = argv, .argc = 2};
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), 0);
    smk_buf_free(&b);
    s[SMK_MAX_STRING] = 'a';
    s[SMK_MAX_STRING + 1] = '\0';
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), -SMK_E2BIG);
    ck_assert_uint_eq(b.len, 0);
    smk_buf_free(&b);
    free(s);
}
END_TEST

START_TEST(path_length_limit)
{
    char *p = malloc(SMK_MAX_PATH + 2);
    memset(p, 'a', SMK_MAX_PATH + 1);
    p[0] = '/';
    p[SMK_MAX_PATH] = '\0';
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_read_file(&b, 1, p), 0);
    smk_buf_free(&b);
    p[SMK_MAX_PATH] = 'a';
    p[SMK_MAX_PATH + 1] = '\0';
    ck_assert_int_eq(smk_encode_read_file(&b, 1, p), -SMK_ENAMETOOLONG);
    ck_assert_int_eq(smk_encode_write_file(&b, 1, p, 0644, "", 0), -SMK_ENAMETOOLONG);
    ck_assert_uint_eq(b.len, 0);
    smk_buf_free(&b);
    free(p);
}
END_TEST

START_TEST(data_size_limit)
{
    uint8_t *data = calloc(1, SMK_MAX_DATA + 1);
    struct smk_buf b = {0};
    struct smk_msg m;
    ck_assert_int_eq(smk_encode_write_file(&b, 1, "/f", 0600, data, SMK_MAX_DATA), 0);
    ck_assert_int_eq(decode_all(&b, &m), (int)b.len);
    smk_buf_free(&b);
    ck_assert_int_eq(smk_encode_write_file(&b, 1, "/f", 0600, data, SMK_MAX_DATA + 1),
                     -SMK_EMSGSIZE);
    ck_assert_int_eq(smk_encode_read_reply(&b, 1, 0, data, SMK_MAX_DATA + 1), -SMK_EMSGSIZE);
    const char *argv[] = {"cat"};
    struct smk_exec_args ea = {
        .argv = argv, .argc = 1, .stdin_data = data, .stdin_len = SMK_MAX_DATA + 1};
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), -SMK_EMSGSIZE);
    ck_assert_uint_eq(b.len, 0);
    smk_buf_free(&b);
    free(data);
}
END_TEST

START_TEST(output_size_limit)
{
    uint8_t *data = calloc(1, SMK_MAX_OUTPUT + 1);
    struct smk_buf b = {0};
    ck_assert_int_eq(
        smk_encode_exec_reply(&b, 1, 0, 0, 0, data, SMK_MAX_OUTPUT, data, SMK_MAX_OUTPUT), 0);
    smk_buf_free(&b);
    ck_assert_int_eq(smk_encode_exec_reply(&b, 1, 0, 0, 0, data, SMK_MAX_OUTPUT + 1, "", 0),
                     -SMK_EMSGSIZE);
    ck_assert_int_eq(smk_encode_exec_reply(&b, 1, 0, 0, 0, "", 0, data, SMK_MAX_OUTPUT + 1),
                     -SMK_EMSGSIZE);
    smk_buf_free(&b);
    free(data);
}
END_TEST

START_TEST(invalid_field_values)
{
    struct smk_buf b = {0};
    ck_assert_int_eq(smk_encode_read_file(&b, 1, "relative/path"), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_read_file(&b, 1, ""), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_write_file(&b, 1, "/f", 010000, "", 0), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_shutdown(&b, 1, 2), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_exec_reply(&b, 1, 3, 0, 0, "", 0, "", 0), -SMK_EPROTO);
    const char *empty0[] = {""};
    struct smk_exec_args ea = {.argv = empty0, .argc = 1};
    ck_assert_int_eq(smk_encode_exec(&b, 1, &ea), -SMK_EINVAL);
    const char *argv[] = {"env"};
    const char *bad_env[][1] = {{"NOEQUALS"}, {"=value"}, {""}};
    for (int i = 0; i < 3; i++) {
        struct smk_exec_args e = {.argv = argv, .argc = 1, .env = bad_env[i], .envc = 1};
        ck_assert_int_eq(smk_encode_exec(&b, 1, &e), -SMK_EINVAL);
    }
    ck_assert_uint_eq(b.len, 0);
    smk_buf_free(&b);
}
END_TEST

START_TEST(nul_inside_a_string)
{
    struct raw r = {0};
    raw_header(&r, SMK_PROTO_VERSION, SMK_READ_FILE, 1);
    raw_str(&r, "/etc\0/passwd", 12);
    raw_seal(&r);
    struct smk_msg m;
    ck_assert_int_eq(smk_decode(r.p, r.len, &m), -SMK_EINVAL);
    ck_assert_uint_eq(m.frame_len, r.len);
    free(r.p);
}
END_TEST

START_TEST(failed_encode_leaves_the_buffer_alone)
{
    struct smk_buf b = {0};
    encode_sample(0, &b, 1);
    size_t len = b.len;
    ck_assert_int_eq(smk_encode_read_file(&b, 2, "nope"), -SMK_EINVAL);
    ck_assert_int_eq(smk_encode_empty(&b, SMK_EXEC, 2), -SMK_EPROTO);
    ck_assert_int_eq(smk_encode_empty(&b, 0x1234, 2), -SMK_ENOSYS);
    ck_assert_uint_eq(b.len, len);
    smk_buf_free(&b);
}
END_TEST

/* --- garbage ------------------------------------------------------------- */

static uint64_t rng_state;

static uint32_t rng(void)
{
    /* xorshift64*: fixed seed, same sequence everywhere. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static void check_decode_sane(const uint8_t *p, size_t len)
{
    struct smk_msg m;
    int r = smk_decode(p, len, &m);
    ck_assert_int_le(r, (int)len);
    if (r > 0)
        ck_assert_uint_eq((size_t)r, m.frame_len);
    if (r < 0)
        ck_assert_ptr_nonnull(m.why);
    if (m.frame_len)
        ck_assert_uint_le(m.frame_len, SMK_HEADER_SIZE + SMK_MAX_PAYLOAD);
}

START_TEST(random_bytes)
{
    rng_state = 0x5eed5eed5eed5eedull;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rng() % 200;
        uint8_t *p = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++)
            p[i] = (uint8_t)rng();
        /* Half of them get a valid header so the payload decoders run. */
        if (iter % 2 && len >= SMK_HEADER_SIZE) {
            memcpy(p, "SMKA\x01\x00", 6);
            p[6] = (uint8_t)(rng() % 6);
            p[7] = rng() % 2 ? 0x80 : 0;
            put32(p + 12, (uint32_t)(len - SMK_HEADER_SIZE));
        }
        check_decode_sane(p, len);
        free(p);
    }
}
END_TEST

START_TEST(mutated_frames)
{
    rng_state = 0x0123456789abcdefull;
    for (int iter = 0; iter < 20000; iter++) {
        struct smk_buf b = {0};
        encode_sample(iter % N_SAMPLES, &b, rng());
        int flips = 1 + (int)(rng() % 4);
        for (int f = 0; f < flips; f++) {
            /* Mostly hit the payload: the header alone is covered above. */
            size_t at = b.len > SMK_HEADER_SIZE && rng() % 4
                            ? SMK_HEADER_SIZE + rng() % (b.len - SMK_HEADER_SIZE)
                            : rng() % b.len;
            b.data[at] ^= (uint8_t)(1u << (rng() % 8));
        }
        size_t len = rng() % 3 ? b.len : rng() % (b.len + 1);
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, b.data, len);
        check_decode_sane(p, len);
        free(p);
        smk_buf_free(&b);
    }
}
END_TEST

START_TEST(find_magic)
{
    const uint8_t a[] = "xxSMKAyy";
    ck_assert_uint_eq(smk_find_magic(a, 8), 2);
    ck_assert_uint_eq(smk_find_magic((const uint8_t *)"abcSM", 5), 3);
    ck_assert_uint_eq(smk_find_magic((const uint8_t *)"abcdS", 5), 4);
    ck_assert_uint_eq(smk_find_magic((const uint8_t *)"SMKxSMK", 7), 4);
    ck_assert_uint_eq(smk_find_magic((const uint8_t *)"nothing", 7), 7);
    ck_assert_uint_eq(smk_find_magic((const uint8_t *)"", 0), 0);
}
END_TEST

START_TEST(type_names)
{
    ck_assert_str_eq(smk_type_name(SMK_EXEC), "EXEC");
    ck_assert_str_eq(smk_type_name(SMK_ERROR), "ERROR");
    ck_assert_str_eq(smk_type_name(0x4242), "?");
}
END_TEST

/* --- stream reassembly --------------------------------------------------- */

/* Feeds src through a stream in chunks of at most `chunk` bytes (0: random
 * sizes), recording what comes out: ids of good frames, minus codes of bad
 * ones. Returns the number of events. */
static int feed(struct smka_stream *s, const uint8_t *src, size_t len, size_t chunk,
                int64_t *events, int max_events)
{
    size_t off = 0;
    int n = 0;
    while (off < len) {
        size_t want;
        uint8_t *dst = smka_stream_want(s, &want);
        if (!dst)
            break;
        ck_assert_uint_gt(want, 0);
        size_t take = chunk ? chunk : 1 + rng() % 40;
        if (take > want)
            take = want;
        if (take > len - off)
            take = len - off;
        memcpy(dst, src + off, take);
        off += take;
        struct smk_msg m;
        int r = smka_stream_advance(s, take, &m);
        if (r != 0 && n < max_events)
            events[n++] = r > 0 ? (int64_t)m.hdr.id : r;
    }
    return n;
}

START_TEST(stream_reassembles_every_type_in_any_chunking)
{
    rng_state = 42;
    struct smk_buf b = {0};
    for (int i = 0; i < N_SAMPLES; i++)
        encode_sample(i, &b, (uint32_t)i + 1);
    const size_t chunks[] = {1, 3, 16, 17, 4096, 0};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct smka_stream s;
        smka_stream_init(&s, 0);
        int64_t ev[N_SAMPLES];
        int n = feed(&s, b.data, b.len, chunks[c], ev, N_SAMPLES);
        ck_assert_int_eq(n, N_SAMPLES);
        for (int i = 0; i < N_SAMPLES; i++)
            ck_assert_int_eq(ev[i], i + 1);
        ck_assert(!smka_stream_partial(&s));
        smka_stream_free(&s);
    }
    smk_buf_free(&b);
}
END_TEST

START_TEST(stream_never_reads_past_a_frame)
{
    struct smk_buf b = {0};
    encode_sample(4, &b, 1);
    struct smka_stream s;
    smka_stream_init(&s, 0);
    size_t total = 0, want;
    struct smk_msg m;
    int r = 0;
    while (r == 0) {
        uint8_t *dst = smka_stream_want(&s, &want);
        ck_assert_uint_le(total + want, b.len);
        memcpy(dst, b.data + total, want);
        total += want;
        r = smka_stream_advance(&s, want, &m);
    }
    ck_assert_int_eq(r, 1);
    ck_assert_uint_eq(total, b.len);
    smka_stream_free(&s);
    smk_buf_free(&b);
}
END_TEST

START_TEST(stream_without_resync_breaks_on_garbage)
{
    struct smka_stream s;
    smka_stream_init(&s, 0);
    int64_t ev[4];
    const uint8_t junk[] = "GET / HTTP/1.0\r\n\r\n";
    int n = feed(&s, junk, sizeof(junk) - 1, 64, ev, 4);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0], -SMK_EBADMSG);
    size_t want;
    ck_assert_ptr_null(smka_stream_want(&s, &want));
    smka_stream_reset(&s);
    ck_assert_ptr_nonnull(smka_stream_want(&s, &want));
    smka_stream_free(&s);
}
END_TEST

START_TEST(stream_skips_a_bad_frame_and_stays_in_sync)
{
    struct raw r = {0};
    raw_header(&r, SMK_PROTO_VERSION, 0x4242, 5);
    raw_put(&r, "whatever", 8);
    raw_seal(&r);
    struct smk_buf b = {0};
    encode_sample(0, &b, 6);
    raw_put(&r, b.data, b.len);
    struct smka_stream s;
    smka_stream_init(&s, 0);
    int64_t ev[4];
    int n = feed(&s, r.p, r.len, 5, ev, 4);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ev[0], -SMK_ENOSYS);
    ck_assert_int_eq(ev[1], 6);
    smka_stream_free(&s);
    smk_buf_free(&b);
    free(r.p);
}
END_TEST

START_TEST(stream_resync_finds_the_next_frame)
{
    rng_state = 7;
    struct raw r = {0};
    /* Garbage with decoys: a lone "SMK", and a magic followed by an
     * impossible length. */
    raw_put(&r, "\x00\x01garbage SMK more", 18);
    raw_header(&r, SMK_PROTO_VERSION, SMK_PING, 1);
    put32(r.p + r.len - 4, 0x7fffffff);
    raw_put(&r, "tail of a stale reply", 21);
    struct smk_buf b = {0};
    encode_sample(2, &b, 0xabc);
    encode_sample(0, &b, 0xdef);
    raw_put(&r, b.data, b.len);
    const size_t chunks[] = {1, 7, 16, 0};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        struct smka_stream s;
        smka_stream_init(&s, 1);
        int64_t ev[8];
        int n = feed(&s, r.p, r.len, chunks[c], ev, 8);
        /* One report for the whole run of garbage, the bogus header
         * included, then both real frames. */
        ck_assert_int_eq(n, 3);
        ck_assert_int_eq(ev[0], -SMK_EBADMSG);
        ck_assert_int_eq(ev[1], 0xabc);
        ck_assert_int_eq(ev[2], 0xdef);
        smka_stream_free(&s);
    }
    smk_buf_free(&b);
    free(r.p);
}
END_TEST

START_TEST(stream_reset_drops_a_partial_frame)
{
    struct smk_buf b = {0};
    encode_sample(4, &b, 1);
    encode_sample(0, &b, 2);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    size_t first = b.len - SMK_HEADER_SIZE;
    ck_assert_int_eq(feed(&s, b.data, first / 2, 3, ev, 4), 0);
    ck_assert(smka_stream_partial(&s));
    smka_stream_reset(&s);
    ck_assert(!smka_stream_partial(&s));
    int n = feed(&s, b.data + first, SMK_HEADER_SIZE, 3, ev, 4);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ev[0], 2);
    smka_stream_free(&s);
    smk_buf_free(&b);
}
END_TEST

START_TEST(stream_random_garbage_never_yields_a_false_frame)
{
    rng_state = 99;
    struct smka_stream s;
    smka_stream_init(&s, 1);
    size_t len = 1 << 20;
    uint8_t *p = malloc(len);
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rng();
    int64_t ev[64];
    int n = feed(&s, p, len, 0, ev, 64);
    for (int i = 0; i < n; i++)
        ck_assert_int_lt(ev[i], 0);
    smka_stream_free(&s);
    free(p);
}
END_TEST

/* A client died mid-frame and the next one's request was appended to it
 * before the agent noticed: rescan must find the request. */
/* A frame whose payload holds no magic, of which a client sent only part. */
static void encode_dead(struct smk_buf *b)
{
    static uint8_t data[1000];
    memset(data, 'x', sizeof(data));
    ck_assert_int_eq(smk_encode_write_file(b, 1, "/f", 0644, data, sizeof(data)), 0);
}

START_TEST(stream_rescan_finds_a_request_appended_to_a_dead_frame)
{
    struct smk_buf dead = {0}, next = {0};
    encode_dead(&dead);
    encode_sample(2, &next, 2);
    encode_sample(0, &next, 3);
    struct raw r = {0};
    raw_put(&r, dead.data, dead.len / 2);
    raw_put(&r, next.data, next.len);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    ck_assert_int_eq(feed(&s, r.p, r.len, 1000, ev, 4), 0);
    ck_assert(smka_stream_partial(&s));
    smka_stream_rescan(&s);
    ck_assert(smka_stream_backlog(&s));
    int n = 0;
    while (smka_stream_backlog(&s) && n < 4) {
        struct smk_msg m;
        int k = smka_stream_replay(&s, &m);
        if (k != 0)
            ev[n++] = k > 0 ? (int64_t)m.hdr.id : k;
    }
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ev[0], 2);
    ck_assert_int_eq(ev[1], 3);
    ck_assert(!smka_stream_partial(&s));
    smka_stream_free(&s);
    smk_buf_free(&dead);
    smk_buf_free(&next);
    free(r.p);
}
END_TEST

START_TEST(stream_rescan_keeps_a_partial_request_for_more_bytes)
{
    struct smk_buf dead = {0}, next = {0};
    encode_dead(&dead);
    encode_sample(6, &next, 9);
    struct raw r = {0};
    raw_put(&r, dead.data, 20);
    raw_put(&r, next.data, 10);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    ck_assert_int_eq(feed(&s, r.p, r.len, 7, ev, 4), 0);
    smka_stream_rescan(&s);
    struct smk_msg m;
    while (smka_stream_backlog(&s))
        ck_assert_int_eq(smka_stream_replay(&s, &m), 0);
    /* The rest of the request arrives by the normal route. */
    ck_assert_int_eq(feed(&s, next.data + 10, next.len - 10, 3, ev, 4), 1);
    ck_assert_int_eq(ev[0], 9);
    smka_stream_free(&s);
    smk_buf_free(&dead);
    smk_buf_free(&next);
    free(r.p);
}
END_TEST

START_TEST(stream_rescan_of_pure_garbage_keeps_nothing)
{
    struct smk_buf dead = {0};
    encode_dead(&dead);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    ck_assert_int_eq(feed(&s, dead.data, dead.len - 1, 16, ev, 4), 0);
    smka_stream_rescan(&s);
    ck_assert(!smka_stream_backlog(&s));
    ck_assert(!smka_stream_partial(&s));
    /* Nothing buffered: rescan is a no-op, and reset clears a backlog. */
    smka_stream_rescan(&s);
    ck_assert(!smka_stream_backlog(&s));
    ck_assert_int_eq(feed(&s, dead.data, 30, 30, ev, 4), 0);
    smka_stream_reset(&s);
    ck_assert(!smka_stream_partial(&s));
    smka_stream_free(&s);
    smk_buf_free(&dead);
}
END_TEST

/* Salvage: the quick path for the same case, taken when the line has gone
 * quiet and the dead frame's received bytes end in whole requests. */
static int replay_ids(struct smka_stream *s, int64_t *ev, int max)
{
    int n = 0;
    while (smka_stream_backlog(s) && n < max) {
        struct smk_msg m;
        int k = smka_stream_replay(s, &m);
        if (k != 0)
            ev[n++] = k > 0 ? (int64_t)m.hdr.id : k;
    }
    return n;
}

START_TEST(stream_salvage_takes_whole_requests_after_a_dead_frame)
{
    struct smk_buf dead = {0}, next = {0};
    encode_dead(&dead);
    encode_sample(2, &next, 2);
    encode_sample(0, &next, 3);
    struct raw r = {0};
    raw_put(&r, dead.data, dead.len / 2);
    raw_put(&r, next.data, next.len);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    ck_assert_int_eq(feed(&s, r.p, r.len, 13, ev, 4), 0);
    ck_assert_int_eq(smka_stream_salvage(&s), 1);
    ck_assert(!smka_stream_partial(&s));
    ck_assert_int_eq(replay_ids(&s, ev, 4), 2);
    ck_assert_int_eq(ev[0], 2);
    ck_assert_int_eq(ev[1], 3);
    ck_assert(!smka_stream_partial(&s) && !smka_stream_backlog(&s));
    smka_stream_free(&s);
    smk_buf_free(&dead);
    smk_buf_free(&next);
    free(r.p);
}
END_TEST

START_TEST(stream_salvage_leaves_what_does_not_end_in_whole_frames)
{
    struct smk_buf dead = {0}, next = {0}, inner = {0};
    encode_dead(&dead);
    encode_sample(6, &next, 9);
    struct smka_stream s;
    smka_stream_init(&s, 1);
    int64_t ev[4];
    /* A dead frame alone, and one followed by part of a request. */
    ck_assert_int_eq(feed(&s, dead.data, dead.len / 2, 0, ev, 4), 0);
    ck_assert_int_eq(smka_stream_salvage(&s), 0);
    ck_assert_int_eq(feed(&s, next.data, next.len - 1, 0, ev, 4), 0);
    size_t have = s.have;
    ck_assert_int_eq(smka_stream_salvage(&s), 0);
    ck_assert(smka_stream_partial(&s) && s.have == have && !smka_stream_backlog(&s));
    /* Its last byte makes it whole. */
    ck_assert_int_eq(feed(&s, next.data + next.len - 1, 1, 0, ev, 4), 0);
    ck_assert_int_eq(smka_stream_salvage(&s), 1);
    ck_assert_int_eq(replay_ids(&s, ev, 4), 1);
    ck_assert_int_eq(ev[0], 9);
    /* A frame whose data is a whole frame, one byte short: nothing whole
     * ends it, so it is left alone. */
    smka_stream_reset(&s);
    ck_assert_int_eq(smk_encode_empty(&inner, SMK_PING, 5), 0);
    smk_buf_free(&next);
    ck_assert_int_eq(smk_encode_write_file(&next, 6, "/f", 0644, inner.data, inner.len), 0);
    ck_assert_int_eq(feed(&s, next.data, next.len - 1, 0, ev, 4), 0);
    ck_assert_int_eq(smka_stream_salvage(&s), 0);
    ck_assert_int_eq(feed(&s, next.data + next.len - 1, 1, 0, ev, 4), 1);
    ck_assert_int_eq(ev[0], 6);
    smka_stream_free(&s);
    smk_buf_free(&dead);
    smk_buf_free(&next);
    smk_buf_free(&inner);
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("agent protocol");
    TCase *tc = tcase_create("round trips");
    tcase_add_test(tc, roundtrip_ping);
    tcase_add_test(tc, roundtrip_ping_reply);
    tcase_add_test(tc, roundtrip_exec);
    tcase_add_test(tc, roundtrip_exec_minimal);
    tcase_add_test(tc, roundtrip_exec_reply);
    tcase_add_test(tc, roundtrip_write_file);
    tcase_add_test(tc, roundtrip_read_file);
    tcase_add_test(tc, roundtrip_read_reply);
    tcase_add_test(tc, roundtrip_shutdown);
    tcase_add_test(tc, roundtrip_empty_replies);
    tcase_add_test(tc, roundtrip_error);
    tcase_add_test(tc, error_message_is_cut_at_the_limit);
    tcase_add_test(tc, frames_concatenate);
    tcase_add_loop_test(tc, trailing_payload_bytes_are_ignored, 0, N_SAMPLES);
    tcase_add_test(tc, roundtrip_v2_fields);
    tcase_add_test(tc, v2_messages_need_a_v2_frame);
    tcase_add_test(tc, v2_limits);
    tcase_add_loop_test(tc, roundtrip_any_sample, 0, N_SAMPLES);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad frames");
    tcase_add_loop_test(tc, truncated_at_every_length, 0, N_SAMPLES);
    tcase_add_test(tc, bad_magic_fails_at_the_first_wrong_byte);
    tcase_add_test(tc, oversized_length_is_refused_before_the_payload);
    tcase_add_test(tc, other_version_is_skippable);
    tcase_add_test(tc, unknown_type_is_skippable);
    /* Samples 1..4, 6..8, 10 have payloads. */
    tcase_add_loop_test(tc, short_payload_is_malformed, 1, 5);
    tcase_add_loop_test(tc, short_payload_is_malformed, 6, 9);
    tcase_add_loop_test(tc, short_payload_is_malformed, 10, 11);
    tcase_add_loop_test(tc, short_payload_is_malformed, 11, 31);
    tcase_add_test(tc, field_running_past_the_payload);
    tcase_add_test(tc, nul_inside_a_string);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, argv_count_limit);
    tcase_add_test(tc, env_count_limit);
    tcase_add_test(tc, huge_count_in_a_tiny_frame);
    tcase_add_test(tc, string_length_limit);
    tcase_add_test(tc, path_length_limit);
    tcase_add_test(tc, data_size_limit);
    tcase_add_test(tc, output_size_limit);
    tcase_add_test(tc, invalid_field_values);
    tcase_add_test(tc, failed_encode_leaves_the_buffer_alone);
    suite_add_tcase(s, tc);

    tc = tcase_create("garbage");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, random_bytes);
    tcase_add_test(tc, mutated_frames);
    tcase_add_test(tc, find_magic);
    tcase_add_test(tc, type_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, stream_reassembles_every_type_in_any_chunking);
    tcase_add_test(tc, stream_never_reads_past_a_frame);
    tcase_add_test(tc, stream_without_resync_breaks_on_garbage);
    tcase_add_test(tc, stream_skips_a_bad_frame_and_stays_in_sync);
    tcase_add_test(tc, stream_resync_finds_the_next_frame);
    tcase_add_test(tc, stream_reset_drops_a_partial_frame);
    tcase_add_test(tc, stream_random_garbage_never_yields_a_false_frame);
    tcase_add_test(tc, stream_rescan_finds_a_request_appended_to_a_dead_frame);
    tcase_add_test(tc, stream_rescan_keeps_a_partial_request_for_more_bytes);
    tcase_add_test(tc, stream_rescan_of_pure_garbage_keeps_nothing);
    tcase_add_test(tc, stream_salvage_takes_whole_requests_after_a_dead_frame);
    tcase_add_test(tc, stream_salvage_leaves_what_does_not_end_in_whole_frames);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return run_suite(proto_suite(), CK_ENV);
}
