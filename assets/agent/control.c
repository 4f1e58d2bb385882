/* Guest control requests (SET_TIME ... HOSTS) and READ_FILE's flags: the
 * messages decoded by agent-proto.c, carried out by guestctl.c. Runs in a
 * worker process (conn.c). */
#define _GNU_SOURCE
#include "agent.h"
#include "guestctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int smka_read_file2(const char *path, uint32_t flags, uint8_t **data, size_t *len, int *truncated,
                    char *why, size_t why_len)
{
    if (!(flags & SMK_READ_NOFOLLOW))
        return smka_read_file(path, data, len, truncated, why, why_len);
    /* The file itself, never what a symlink there points to: held by an
     * O_PATH descriptor and read through it, so nothing can be swapped in
     * between the check and the read. */
    int fd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(why, why_len, "open %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode)) {
        int e = S_ISLNK(st.st_mode) ? ELOOP : errno;
        close(fd);
        snprintf(why, why_len, "%s: %s", path,
                 e == ELOOP ? "is a symlink (READ_FILE without following)" : strerror(e));
        return -e;
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    int r = smka_read_file(proc, data, len, truncated, why, why_len);
    close(fd);
    if (r < 0) {
        /* Name the caller's path, not the descriptor's. */
        char tail[512];
        const char *colon = strrchr(why, ':');
        snprintf(tail, sizeof(tail), "%s", colon ? colon + 2 : strerror(-r));
        snprintf(why, why_len, "read %s: %s", path, tail);
    }
    return r;
}

static void cstr(char *dst, size_t size, struct smk_bytes b)
{
    size_t n = b.len < size - 1 ? b.len : size - 1;
    memcpy(dst, b.ptr, n);
    dst[n] = '\0';
}

/* Copies a decoded string list into NUL-terminated strings in pool. */
static size_t cstrs(const struct smk_strlist *l, char *pool, const char **out, size_t max)
{
    struct smk_bytes s;
    uint32_t pos = 0;
    size_t n = 0;
    while (n < max && smk_strlist_next(l, &pos, &s)) {
        memcpy(pool, s.ptr, s.len);
        pool[s.len] = '\0';
        out[n++] = pool;
        pool += s.len + 1;
    }
    return n;
}

static int route(const struct smk_msg *m, char *why, size_t why_len)
{
    char dst[SMK_MAX_NAME + 1], gw[SMK_MAX_NAME + 1], ifname[SMK_MAX_NAME + 1];
    cstr(dst, sizeof(dst), m->u.route.dst);
    cstr(gw, sizeof(gw), m->u.route.gateway);
    cstr(ifname, sizeof(ifname), m->u.route.ifname);
    struct smka_route rt = {.ifname = ifname[0] ? ifname : NULL, .metric = m->u.route.metric};
    int r = 0;
    if (gw[0]) {
        int fam;
        unsigned plen;
        r = smka_ip_parse(gw, &fam, rt.gateway, &plen);
        if (r < 0) {
            snprintf(why, why_len, "gateway %s: not an IP address", gw);
            return r;
        }
        rt.family = fam;
        rt.has_gateway = 1;
    }
    if (strcmp(dst, "default") == 0 || strcmp(dst, "default6") == 0) {
        int fam = dst[7] == '6' ? AF_INET6 : (rt.has_gateway ? rt.family : AF_INET);
        if (rt.has_gateway && fam != rt.family) {
            snprintf(why, why_len, "route %s via %s: address families differ", dst, gw);
            return -EINVAL;
        }
        rt.family = fam;
        rt.dst_len = 0;
    } else {
        int fam;
        r = smka_ip_parse(dst, &fam, rt.dst, &rt.dst_len);
        if (r < 0) {
            snprintf(why, why_len, "route destination %s: not an address/prefix", dst);
            return r;
        }
        if (rt.has_gateway && fam != rt.family) {
            snprintf(why, why_len, "route %s via %s: address families differ", dst, gw);
            return -EINVAL;
        }
        rt.family = fam;
    }
    r = m->u.route.op == SMK_NET_ADD ? smka_route_add(&rt) : smka_route_del(&rt);
    if (r < 0)
        snprintf(why, why_len, "%s route %s%s%s%s%s: %s", m->u.route.op ? "deleting" : "adding",
                 dst, gw[0] ? " via " : "", gw, ifname[0] ? " dev " : "", ifname, strerror(-r));
    return r;
}

int smka_control(const struct smk_msg *m, int test_mode, char *why, size_t why_len)
{
    /* serve --listen (tests) changes nothing on the machine it runs on. */
    const char *etc = NULL;
    if (test_mode) {
        etc = getenv("SMK_AGENT_TEST_ETC");
        int files_only = m->hdr.type == SMK_DNS || m->hdr.type == SMK_HOSTS;
        if (!files_only || !etc || !*etc) {
            snprintf(why, why_len,
                     "%s: not in test mode (serve --listen changes nothing on "
                     "this machine; SMK_AGENT_TEST_ETC=DIR allows DNS and HOSTS there)",
                     smk_type_name(m->hdr.type));
            return -EPERM;
        }
    }
    char ifname[SMK_MAX_NAME + 1], text[SMK_MAX_NAME + 1];
    int r = -ENOSYS;
    switch (m->hdr.type) {
    case SMK_SET_TIME: {
        uint64_t ns = m->u.set_time.unix_ns;
        r = smka_clock_set((int64_t)(ns / 1000000000u), (int64_t)(ns % 1000000000u));
        if (r < 0)
            snprintf(why, why_len, "setting the clock: %s", strerror(-r));
        break;
    }
    case SMK_ENTROPY: {
        size_t n = m->u.entropy.data.len;
        r = smka_entropy_add(m->u.entropy.data.ptr, n,
                             (m->u.entropy.flags & SMK_ENTROPY_CREDIT) ? (uint32_t)(8 * n) : 0);
        if (r < 0)
            snprintf(why, why_len, "adding entropy and reseeding: %s", strerror(-r));
        break;
    }
    case SMK_LINK:
        cstr(ifname, sizeof(ifname), m->u.link.ifname);
        r = 0;
        if (m->u.link.flags & SMK_LINK_SET_MTU)
            r = smka_link_set_mtu(ifname, m->u.link.mtu);
        if (r == 0 && (m->u.link.flags & SMK_LINK_SET_STATE))
            r = smka_link_set_up(ifname, (m->u.link.flags & SMK_LINK_UP) != 0);
        if (r < 0)
            snprintf(why, why_len, "link %s: %s", ifname, strerror(-r));
        break;
    case SMK_ADDR: {
        cstr(ifname, sizeof(ifname), m->u.addr.ifname);
        cstr(text, sizeof(text), m->u.addr.cidr);
        int fam;
        uint8_t a[16];
        unsigned plen;
        r = smka_ip_parse(text, &fam, a, &plen);
        if (r == 0)
            r = m->u.addr.op == SMK_NET_ADD ? smka_addr_add(ifname, fam, a, plen)
                                            : smka_addr_del(ifname, fam, a, plen);
        if (r < 0)
            snprintf(why, why_len, "%s address %s on %s: %s", m->u.addr.op ? "deleting" : "adding",
                     text, ifname, strerror(-r));
        break;
    }
    case SMK_ROUTE:
        r = route(m, why, why_len);
        break;
    case SMK_DNS: {
        char *pool = malloc(3 * SMK_MAX_LIST * (SMK_MAX_NAME + 1));
        const char *sv[SMK_MAX_LIST], *se[SMK_MAX_LIST], *op[SMK_MAX_LIST];
        if (!pool) {
            snprintf(why, why_len, "out of memory");
            return -ENOMEM;
        }
        struct smka_dns d;
        d.nameservers = sv;
        d.n_nameservers = cstrs(&m->u.dns.servers, pool, sv, SMK_MAX_LIST);
        d.search = se;
        d.n_search =
            cstrs(&m->u.dns.search, pool + SMK_MAX_LIST * (SMK_MAX_NAME + 1), se, SMK_MAX_LIST);
        d.options = op;
        d.n_options = cstrs(&m->u.dns.options, pool + 2 * SMK_MAX_LIST * (SMK_MAX_NAME + 1), op,
                            SMK_MAX_LIST);
        r = smka_dns_write(etc, &d);
        free(pool);
        if (r < 0)
            snprintf(why, why_len, "writing resolv.conf: %s", strerror(-r));
        break;
    }
    case SMK_HOSTNAME:
        cstr(text, sizeof(text), m->u.hostname.name);
        r = smka_hostname_set(etc, text);
        if (r < 0)
            snprintf(why, why_len, "host name %s: %s", text, strerror(-r));
        break;
    case SMK_HOSTS: {
        struct smk_bytes s;
        uint32_t pos = 0;
        r = 0;
        while (r == 0 && smk_strlist_next(&m->u.hosts.lines, &pos, &s)) {
            char line[SMK_MAX_NAME + 1];
            cstr(line, sizeof(line), s);
            const char *names[SMKA_HOSTS_MAX_NAMES + 1];
            size_t n = 0;
            char *save = NULL, *ip = strtok_r(line, " \t", &save), *w;
            while (n <= SMKA_HOSTS_MAX_NAMES && (w = strtok_r(NULL, " \t", &save)))
                names[n++] = w;
            if (!ip || n == 0) {
                snprintf(why, why_len, "hosts line \"%.*s\": not ADDRESS NAME...", (int)s.len,
                         (const char *)s.ptr);
                return -EINVAL;
            }
            r = smka_hosts_add(etc, ip, names, n);
            if (r < 0)
                snprintf(why, why_len, "adding %s to hosts: %s", ip, strerror(-r));
        }
        break;
    }
    default:
        snprintf(why, why_len, "%s is not a guest control request", smk_type_name(m->hdr.type));
        break;
    }
    return r;
}
