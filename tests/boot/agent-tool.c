/*
 * agent-tool: the guest side of the agent boot tests where the guest has no busybox (the
 * aarch64 initramfs). Static; subcommands (argv[1]):
 *
 *   zeros N      write N zero bytes to stdout, 64 KiB at a time, as fast as it can
 *   sha256       SHA-256 of stdin, printed as sha256sum does ("HEX  -")
 *   sleep SEC    (fractions allowed)
 *   now          CLOCK_REALTIME in seconds
 *   late-echo SEC TEXT   sleep SEC seconds, then print TEXT
 *   shell        a line-oriented stand-in for "sh -i" on a terminal: prints the prompt
 *                $PS1 (default "smk$ "), answers "size" with the terminal's "ROWS COLS"
 *                (TIOCGWINSZ, what stty size prints), "echo WORDS" with WORDS, and ends on
 *                "exit N" with status N or on end of file with 0
 *
 * SHA-256 follows FIPS 180-4. SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int zeros(const char *arg)
{
    static char buf[65536];
    unsigned long long left = strtoull(arg, NULL, 10);
    while (left) {
        size_t n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
        if (write_all(1, buf, n) < 0)
            return 1;
        left -= n;
    }
    return 0;
}

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            k + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

static int sha256(void)
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    static uint8_t buf[65536 + 128];
    size_t have = 0;
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(0, buf + have, 65536);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 1;
        if (n == 0)
            break;
        have += (size_t)n;
        total += (uint64_t)n;
        size_t off = 0;
        for (; have - off >= 64; off += 64)
            block(h, buf + off);
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    buf[have++] = 0x80;
    while (have % 64 != 56)
        buf[have++] = 0;
    uint64_t bits = total * 8;
    for (int i = 7; i >= 0; i--)
        buf[have++] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < have; off += 64)
        block(h, buf + off);
    for (int i = 0; i < 8; i++)
        printf("%08x", h[i]);
    printf("  -\n");
    return 0;
}

static int shell(void)
{
    const char *ps1 = getenv("PS1");
    char line[4096];
    size_t len = 0;
    for (;;) {
        fputs(ps1 ? ps1 : "smk$ ", stdout);
        fflush(stdout);
        len = 0;
        for (;;) {
            char c;
            ssize_t n = read(0, &c, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return 0;
            if (c == '\n')
                break;
            if (len + 1 < sizeof(line))
                line[len++] = c;
        }
        line[len] = '\0';
        if (strcmp(line, "size") == 0) {
            struct winsize ws;
            if (ioctl(0, TIOCGWINSZ, &ws) < 0)
                printf("size: %s\n", strerror(errno));
            else
                printf("%u %u\n", ws.ws_row, ws.ws_col);
        } else if (strncmp(line, "echo ", 5) == 0) {
            printf("%s\n", line + 5);
        } else if (strncmp(line, "exit", 4) == 0) {
            return atoi(line + 4);
        } else if (len) {
            printf("%s: not found\n", line);
        }
    }
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";
    if (strcmp(cmd, "zeros") == 0 && argc == 3)
        return zeros(argv[2]);
    if (strcmp(cmd, "sha256") == 0)
        return sha256();
    if (strcmp(cmd, "sleep") == 0 && argc == 3) {
        double s = strtod(argv[2], NULL);
        struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        return 0;
    }
    if (strcmp(cmd, "late-echo") == 0 && argc == 4) {
        struct timespec ts = {atoi(argv[2]), 0};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        printf("%s\n", argv[3]);
        return 0;
    }
    if (strcmp(cmd, "now") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        printf("%lld\n", (long long)ts.tv_sec);
        return 0;
    }
    if (strcmp(cmd, "shell") == 0)
        return shell();
    fprintf(stderr,
            "usage: agent-tool zeros N | sha256 | sleep SEC | now | late-echo SEC TEXT | shell\n");
    return 2;
}
