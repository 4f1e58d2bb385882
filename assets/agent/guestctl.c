/*
 * Guest control: the clock, the entropy pool, links, addresses and routes
 * over rtnetlink, resolv.conf, the host name and /etc/hosts. See guestctl.h
 * for each function's contract.
 */
#define _GNU_SOURCE
#include "guestctl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* --- clock ----------------------------------------------------------------- */

int smka_clock_set(int64_t sec, int64_t nsec)
{
    /* The kernel rejects these too, but only after the permission check: a
     * caller gets the same answer for a bad time whoever it is. */
    if (sec < 0 || nsec < 0 || nsec >= 1000000000)
        return -EINVAL;
    struct timespec ts = {.tv_sec = (time_t)sec, .tv_nsec = (long)nsec};
    if ((int64_t)ts.tv_sec != sec)
        return -EINVAL;
    return clock_settime(CLOCK_REALTIME, &ts) < 0 ? -errno : 0;
}

/* --- entropy --------------------------------------------------------------- */

int smka_entropy_add(const void *data, size_t len, uint32_t entropy_bits)
{
    if ((!data && len) || entropy_bits > 8 * (uint64_t)len)
        return -EINVAL;
    if (len > SMKA_ENTROPY_MAX)
        return -EMSGSIZE;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (len) {
        struct rand_pool_info *info = malloc(sizeof(*info) + len);
        if (!info) {
            close(fd);
            return -ENOMEM;
        }
        info->entropy_count = (int)entropy_bits;
        info->buf_size = (int)len;
        memcpy(info->buf, data, len);
        if (ioctl(fd, RNDADDENTROPY, info) < 0)
            r = -errno;
        explicit_bzero(info->buf, len);
        free(info);
    }
    /* Added bytes reach readers of the CRNG only at its next reseed, which
     * can be a minute away: force it now. */
    if (r == 0 && ioctl(fd, RNDRESEEDCRNG) < 0)
        r = -errno;
    close(fd);
    return r;
}

/* --- rtnetlink ------------------------------------------------------------- */

/* One request: the largest (a route) is under 128 bytes. */
struct nl_req {
    struct nlmsghdr h;
    union {
        struct ifinfomsg ifi;
        struct ifaddrmsg ifa;
        struct rtmsg rt;
    } u;
    char attrs[256];
};

static void nl_init(struct nl_req *q, uint16_t type, uint16_t flags, size_t body)
{
    memset(q, 0, sizeof(*q));
    q->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(body);
    q->h.nlmsg_type = type;
    q->h.nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
    q->h.nlmsg_seq = 1;
}

static int nl_attr(struct nl_req *q, uint16_t type, const void *data, size_t len)
{
    size_t at = NLMSG_ALIGN(q->h.nlmsg_len);
    if (at + RTA_SPACE(len) > sizeof(*q))
        return -EMSGSIZE;
    struct rtattr *a = (struct rtattr *)((char *)q + at);
    a->rta_type = type;
    a->rta_len = (uint16_t)RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    q->h.nlmsg_len = (uint32_t)(at + RTA_ALIGN(a->rta_len));
    return 0;
}

static int nl_attr_u32(struct nl_req *q, uint16_t type, uint32_t v)
{
    return nl_attr(q, type, &v, sizeof(v));
}

typedef void (*nl_reply_fn)(const struct nlmsghdr *h, void *arg);

/*
 * Sends q on a socket of its own and waits for the kernel's acknowledgement
 * (5 s at most): returns its error (0 or -errno). Messages before it go to
 * on_reply.
 */
static int nl_talk(struct nl_req *q, nl_reply_fn on_reply, void *arg)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    /* Errors then come back without a copy of the request. */
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    int r;
    ssize_t sent = sendto(fd, q, q->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel));
    if (sent != (ssize_t)q->h.nlmsg_len) {
        r = sent < 0 ? -errno : -EIO; /* a datagram goes whole or not at all */
        goto out;
    }
    /* A link's description with every attribute is a few KiB. */
    union {
        struct nlmsghdr h;
        char raw[32768];
    } buf;
    for (int reads = 0; reads < 64; reads++) {
        struct sockaddr_nl from;
        socklen_t from_len = sizeof(from);
        ssize_t n = recvfrom(fd, &buf, sizeof(buf), MSG_TRUNC, (struct sockaddr *)&from, &from_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = errno == EAGAIN ? -ETIMEDOUT : -errno;
            goto out;
        }
        if ((size_t)n > sizeof(buf)) {
            r = -EMSGSIZE;
            goto out;
        }
        if (from.nl_pid != 0)
            continue; /* not from the kernel */
        size_t left = (size_t)n;
        for (struct nlmsghdr *h = &buf.h; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
            if (h->nlmsg_seq != q->h.nlmsg_seq)
                continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
                    r = -EPROTO;
                    goto out;
                }
                const struct nlmsgerr *e = NLMSG_DATA(h);
                r = e->error > 0 ? -EPROTO : e->error;
                goto out;
            }
            if (h->nlmsg_type != NLMSG_DONE && on_reply)
                on_reply(h, arg);
        }
    }
    r = -EPROTO;
out:
    close(fd);
    return r;
}

/* The kernel's dev_valid_name(), so a bad name is -EINVAL before it is -ENODEV. */
static int valid_ifname(const char *name)
{
    if (!name)
        return 0;
    size_t n = strnlen(name, IFNAMSIZ);
    if (n == 0 || n >= IFNAMSIZ || !strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] == '/' || name[i] == ':' || isspace((unsigned char)name[i]))
            return 0;
    return 1;
}

static void take_ifindex(const struct nlmsghdr *h, void *arg)
{
    if (h->nlmsg_type == RTM_NEWLINK && h->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifinfomsg)))
        *(int *)arg = ((const struct ifinfomsg *)NLMSG_DATA(h))->ifi_index;
}

/* The link's index, -ENODEV if no link has that name, -EINVAL for a bad name. */
static int link_index(const char *ifname)
{
    if (!valid_ifname(ifname))
        return -EINVAL;
    struct nl_req q;
    nl_init(&q, RTM_GETLINK, 0, sizeof(struct ifinfomsg));
    q.u.ifi.ifi_family = AF_UNSPEC;
    int index = 0;
    int r = nl_attr(&q, IFLA_IFNAME, ifname, strlen(ifname) + 1);
    if (r == 0)
        r = nl_attr_u32(&q, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    if (r == 0)
        r = nl_talk(&q, take_ifindex, &index);
    if (r < 0)
        return r;
    return index > 0 ? index : -ENODEV;
}

static int link_change(const char *ifname, unsigned flags, unsigned change, const uint32_t *mtu)
{
    int index = link_index(ifname);
    if (index < 0)
        return index;
    struct nl_req q;
    nl_init(&q, RTM_NEWLINK, 0, sizeof(struct ifinfomsg));
    q.u.ifi.ifi_family = AF_UNSPEC;
    q.u.ifi.ifi_index = index;
    q.u.ifi.ifi_flags = flags;
    q.u.ifi.ifi_change = change;
    int r = mtu ? nl_attr_u32(&q, IFLA_MTU, *mtu) : 0;
    return r < 0 ? r : nl_talk(&q, NULL, NULL);
}

int smka_link_set_up(const char *ifname, int up)
{
    return link_change(ifname, up ? IFF_UP : 0, IFF_UP, NULL);
}

int smka_link_set_mtu(const char *ifname, uint32_t mtu)
{
    if (mtu == 0 || mtu > INT32_MAX)
        return -EINVAL;
    return link_change(ifname, 0, 0, &mtu);
}

static size_t addr_len(int family)
{
    return family == AF_INET ? 4 : family == AF_INET6 ? 16 : 0;
}

static int addr_change(uint16_t type, uint16_t flags, const char *ifname, int family,
                       const void *addr, unsigned prefix_len)
{
    size_t alen = addr_len(family);
    if (!alen)
        return -EAFNOSUPPORT;
    if (!addr || prefix_len > alen * 8)
        return -EINVAL;
    int index = link_index(ifname);
    if (index < 0)
        return index;
    struct nl_req q;
    nl_init(&q, type, flags, sizeof(struct ifaddrmsg));
    q.u.ifa.ifa_family = (uint8_t)family;
    q.u.ifa.ifa_prefixlen = (uint8_t)prefix_len;
    q.u.ifa.ifa_index = (uint32_t)index;
    q.u.ifa.ifa_scope = RT_SCOPE_UNIVERSE;
    if (family == AF_INET6)
        q.u.ifa.ifa_flags = IFA_F_NODAD;
    else if (((const uint8_t *)addr)[0] == 127)
        q.u.ifa.ifa_scope = RT_SCOPE_HOST; /* as ip(8) does: 127/8 never leaves */
    int r = nl_attr(&q, IFA_LOCAL, addr, alen);
    if (r == 0)
        r = nl_attr(&q, IFA_ADDRESS, addr, alen);
    if (r == 0 && family == AF_INET && type == RTM_NEWADDR && prefix_len <= 30) {
        /* The all-ones host part, so broadcasts on the link are received. */
        uint32_t a;
        memcpy(&a, addr, 4);
        uint32_t host = prefix_len ? htonl((uint32_t)(0xffffffffu >> prefix_len)) : 0xffffffffu;
        a |= host;
        r = nl_attr(&q, IFA_BROADCAST, &a, 4);
    }
    return r < 0 ? r : nl_talk(&q, NULL, NULL);
}

int smka_addr_add(const char *ifname, int family, const void *addr, unsigned prefix_len)
{
    return addr_change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifname, family, addr, prefix_len);
}

int smka_addr_del(const char *ifname, int family, const void *addr, unsigned prefix_len)
{
    return addr_change(RTM_DELADDR, 0, ifname, family, addr, prefix_len);
}

static int host_bits_clear(const uint8_t *a, size_t alen, unsigned prefix_len)
{
    for (size_t bit = prefix_len; bit < alen * 8; bit++)
        if (a[bit / 8] & (0x80u >> (bit % 8)))
            return 0;
    return 1;
}

static int route_change(uint16_t type, uint16_t flags, const struct smka_route *rt)
{
    if (!rt)
        return -EINVAL;
    size_t alen = addr_len(rt->family);
    if (!alen)
        return -EAFNOSUPPORT;
    if (rt->dst_len > alen * 8 || !host_bits_clear(rt->dst, alen, rt->dst_len) ||
        (!rt->has_gateway && !rt->ifname))
        return -EINVAL;
    int index = 0;
    if (rt->ifname) {
        index = link_index(rt->ifname);
        if (index < 0)
            return index;
    }
    struct nl_req q;
    nl_init(&q, type, flags, sizeof(struct rtmsg));
    q.u.rt.rtm_family = (uint8_t)rt->family;
    q.u.rt.rtm_dst_len = (uint8_t)rt->dst_len;
    q.u.rt.rtm_table = RT_TABLE_MAIN;
    q.u.rt.rtm_type = RTN_UNICAST;
    if (type == RTM_NEWROUTE) {
        q.u.rt.rtm_protocol = RTPROT_STATIC;
        /* An IPv4 route without a gateway reaches only the link itself. */
        q.u.rt.rtm_scope =
            rt->family == AF_INET && !rt->has_gateway ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    } else {
        q.u.rt.rtm_scope = RT_SCOPE_NOWHERE; /* delete: match any scope */
    }
    int r = 0;
    if (rt->dst_len)
        r = nl_attr(&q, RTA_DST, rt->dst, alen);
    if (r == 0 && rt->has_gateway)
        r = nl_attr(&q, RTA_GATEWAY, rt->gateway, alen);
    if (r == 0 && index)
        r = nl_attr_u32(&q, RTA_OIF, (uint32_t)index);
    if (r == 0 && rt->metric)
        r = nl_attr_u32(&q, RTA_PRIORITY, rt->metric);
    return r < 0 ? r : nl_talk(&q, NULL, NULL);
}

int smka_route_add(const struct smka_route *route)
{
    return route_change(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, route);
}

int smka_route_del(const struct smka_route *route)
{
    return route_change(RTM_DELROUTE, 0, route);
}

int smka_ip_parse(const char *text, int *family, uint8_t addr[16], unsigned *prefix_len)
{
    if (!text || !family || !addr || !prefix_len)
        return -EINVAL;
    char buf[INET6_ADDRSTRLEN + 8];
    size_t n = strnlen(text, sizeof(buf));
    if (n == sizeof(buf))
        return -EINVAL;
    memcpy(buf, text, n + 1);
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    uint8_t a[16] = {0};
    int fam = inet_pton(AF_INET, buf, a) == 1    ? AF_INET
              : inet_pton(AF_INET6, buf, a) == 1 ? AF_INET6
                                                 : 0;
    if (!fam)
        return -EINVAL;
    unsigned max = fam == AF_INET ? 32 : 128, len = max;
    if (slash) {
        const char *p = slash + 1;
        if (!*p || strlen(p) > 3)
            return -EINVAL;
        len = 0;
        for (; *p; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            len = len * 10 + (unsigned)(*p - '0');
        }
        if (len > max)
            return -EINVAL;
    }
    *family = fam;
    memcpy(addr, a, 16);
    *prefix_len = len;
    return 0;
}

/* --- resolv.conf, hostname, hosts ------------------------------------------ */

static int open_etc(const char *etc_dir)
{
    int fd = open(etc_dir ? etc_dir : "/etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Letters, digits and what DNS names, interface zones and resolver options
 * use: nothing a resolver would split on, nothing that starts a comment. */
static int valid_token(const char *s, size_t max, const char *extra)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr(extra, s[i]))
            return 0;
    return 1;
}

static int valid_nameserver(const char *s)
{
    char buf[INET6_ADDRSTRLEN + IFNAMSIZ + 1];
    size_t n = s ? strnlen(s, sizeof(buf)) : sizeof(buf);
    if (n == sizeof(buf))
        return 0;
    memcpy(buf, s, n + 1);
    uint8_t a[16];
    char *zone = strchr(buf, '%');
    if (!zone)
        return inet_pton(AF_INET, buf, a) == 1 || inet_pton(AF_INET6, buf, a) == 1;
    *zone++ = '\0';
    return inet_pton(AF_INET6, buf, a) == 1 && valid_ifname(zone) &&
           valid_token(zone, IFNAMSIZ - 1, "-_.");
}

/* Appends to a bounded buffer; a full one is -E2BIG (cannot happen within
 * the limits, which bound every entry). */
struct text {
    char *p;
    size_t len, cap;
};

static int put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int put(struct text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= t->cap - t->len)
        return -E2BIG;
    t->len += (size_t)n;
    return 0;
}

int smka_dns_write(const char *etc_dir, const struct smka_dns *dns)
{
    if (!dns || (dns->n_nameservers && !dns->nameservers) || (dns->n_search && !dns->search) ||
        (dns->n_options && !dns->options))
        return -EINVAL;
    if (dns->n_nameservers > SMKA_DNS_MAX_NAMESERVERS || dns->n_search > SMKA_DNS_MAX_SEARCH ||
        dns->n_options > SMKA_DNS_MAX_OPTIONS)
        return -E2BIG;
    for (size_t i = 0; i < dns->n_nameservers; i++)
        if (!valid_nameserver(dns->nameservers[i]))
            return -EINVAL;
    for (size_t i = 0; i < dns->n_search; i++)
        if (!valid_token(dns->search[i], 253, "-_.") || dns->search[i][0] == '.')
            return -EINVAL;
    for (size_t i = 0; i < dns->n_options; i++)
        if (!valid_token(dns->options[i], 64, "-_.:+"))
            return -EINVAL;

    char buf[16384];
    struct text t = {buf, 0, sizeof(buf)};
    int r = put(&t, "# written by supermachine-agent\n");
    for (size_t i = 0; r == 0 && i < dns->n_nameservers; i++)
        r = put(&t, "nameserver %s\n", dns->nameservers[i]);
    if (r == 0 && dns->n_search)
        r = put(&t, "search");
    for (size_t i = 0; r == 0 && i < dns->n_search; i++)
        r = put(&t, " %s%s", dns->search[i], i + 1 == dns->n_search ? "\n" : "");
    if (r == 0 && dns->n_options)
        r = put(&t, "options");
    for (size_t i = 0; r == 0 && i < dns->n_options; i++)
        r = put(&t, " %s%s", dns->options[i], i + 1 == dns->n_options ? "\n" : "");
    if (r < 0)
        return r;
    int etc = open_etc(etc_dir);
    if (etc < 0)
        return etc;
    r = smka_replace_file_at(etc, "resolv.conf", 0644, t.p, t.len);
    close(etc);
    return r;
}

int smka_hostname_set(const char *etc_dir, const char *name)
{
    if (!valid_token(name, 64, "-.") || name[0] == '-' || name[0] == '.')
        return -EINVAL;
    char line[66], old[65] = "";
    int n = snprintf(line, sizeof(line), "%s\n", name);
    int etc = open_etc(etc_dir);
    if (etc < 0)
        return etc;
    /* The kernel first: it is what needs the privilege, and it can be put
     * back, where a replaced file could not. */
    int r = gethostname(old, sizeof(old) - 1) < 0 ? -errno : 0;
    if (r == 0 && sethostname(name, strlen(name)) < 0)
        r = -errno;
    if (r == 0) {
        r = smka_replace_file_at(etc, "hostname", 0644, line, (size_t)n);
        if (r < 0)
            sethostname(old, strlen(old)); /* the file's error is the answer */
    }
    close(etc);
    return r;
}

/* Reads a regular etc/hosts (through a symlink if it is one): *len 0 if
 * there is none. */
static int read_hosts(int etc, char **data, size_t *len, unsigned *mode)
{
    *data = NULL;
    *len = 0;
    *mode = 0644;
    int fd = smka_open_regular_at(etc, "hosts");
    if (fd == -ENOENT)
        return 0;
    if (fd < 0)
        return fd;
    struct stat st;
    uint8_t *buf = NULL;
    int truncated = 0;
    int r =
        fstat(fd, &st) < 0 ? -errno : smka_read_fd(fd, SMKA_HOSTS_MAX_SIZE, &buf, len, &truncated);
    close(fd);
    if (r == 0 && truncated) {
        free(buf);
        r = -EFBIG;
    }
    if (r < 0) {
        *len = 0;
        return r;
    }
    buf[*len] = '\0'; /* smka_read_fd() leaves room for it */
    *data = (char *)buf;
    *mode = st.st_mode & 07777;
    return 0;
}

/* Marks in listed[] each of names that a line of hosts (len bytes, with
 * room for a NUL after them) gives for the address a of family. */
static void find_listed(char *hosts, size_t len, int family, const uint8_t *a,
                        const char *const *names, size_t n_names, int *listed)
{
    for (char *line = hosts, *end; line < hosts + len; line = end + 1) {
        end = memchr(line, '\n', (size_t)(hosts + len - line));
        if (!end)
            end = hosts + len;
        char save = *end;
        *end = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *ctx, *tok = strtok_r(line, " \t\r", &ctx);
        uint8_t b[16];
        if (tok && inet_pton(family, tok, b) == 1 && !memcmp(a, b, addr_len(family))) {
            while ((tok = strtok_r(NULL, " \t\r", &ctx)))
                for (size_t i = 0; i < n_names; i++)
                    if (!strcasecmp(tok, names[i]))
                        listed[i] = 1;
        }
        /* strtok_r and the comment cut wrote NULs: this copy is scratch. */
        *end = save;
    }
}

int smka_hosts_add(const char *etc_dir, const char *ip, const char *const *names, size_t n_names)
{
    uint8_t a[16];
    int family = 0;
    if (ip && inet_pton(AF_INET, ip, a) == 1)
        family = AF_INET;
    else if (ip && inet_pton(AF_INET6, ip, a) == 1)
        family = AF_INET6;
    if (!family || !names || n_names == 0 || n_names > SMKA_HOSTS_MAX_NAMES)
        return -EINVAL;
    for (size_t i = 0; i < n_names; i++)
        if (!valid_token(names[i], 253, "-_.") || names[i][0] == '-' || names[i][0] == '.')
            return -EINVAL;

    int etc = open_etc(etc_dir);
    if (etc < 0)
        return etc;
    /* Two connections adding at once must not lose each other's line: the
     * read-modify-replace holds a lock on the directory (the agent's only). */
    if (flock(etc, LOCK_EX) < 0) {
        int r = -errno;
        close(etc);
        return r;
    }
    char *old;
    size_t len;
    unsigned mode;
    int r = read_hosts(etc, &old, &len, &mode);
    /* find_listed() cuts lines with NULs, up to one past the last byte. */
    char *scratch = r == 0 && len ? malloc(len + 1) : NULL;
    if (r == 0 && len && !scratch)
        r = -ENOMEM;
    int listed[SMKA_HOSTS_MAX_NAMES] = {0};
    if (r == 0 && len) {
        memcpy(scratch, old, len);
        find_listed(scratch, len, family, a, names, n_names, listed);
    }
    free(scratch);
    /* The new line: the address and every name not yet listed for it (once
     * each, even if the caller repeats one). */
    char line[INET6_ADDRSTRLEN + SMKA_HOSTS_MAX_NAMES * 254 + 4];
    struct text t = {line, 0, sizeof(line)};
    if (r == 0)
        r = put(&t, "%s\t", ip);
    int missing = 0;
    for (size_t i = 0; r == 0 && i < n_names; i++) {
        int dup = listed[i];
        for (size_t j = 0; j < i && !dup; j++)
            dup = !strcasecmp(names[i], names[j]);
        if (dup)
            continue;
        r = put(&t, "%s%s", missing++ ? " " : "", names[i]);
    }
    if (r == 0 && missing)
        r = put(&t, "\n");
    if (r == 0 && missing) {
        int need_nl = len && old[len - 1] != '\n';
        char *data = malloc(len + need_nl + t.len);
        if (!data) {
            r = -ENOMEM;
        } else {
            if (len)
                memcpy(data, old, len);
            if (need_nl)
                data[len] = '\n';
            memcpy(data + len + need_nl, t.p, t.len);
            r = smka_replace_file_at(etc, "hosts", mode, data, len + need_nl + t.len);
            free(data);
        }
    }
    free(old);
    close(etc); /* drops the lock */
    return r;
}
