/*
 * The agent's rtnetlink code (guestctl.c) against this host's kernel, as root,
 * each test in a network namespace of its own (Check forks one process per
 * test; the fixture unshares it): nothing reaches the real network. What is
 * set is read back through other interfaces than netlink: ioctl for flags
 * and MTU, getifaddrs() for addresses, /proc/net/route and
 * /proc/net/ipv6_route for routes.
 *
 * Not root: every test fails, saying so (an unprivileged run proves nothing).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <ifaddrs.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guestctl.h"
#include "../../run-suite.h"

#define LINK "gc0"

/* --- a link to work on, made without the code under test ------------------ */

struct req {
    struct nlmsghdr h;
    struct ifinfomsg ifi;
    char attrs[512];
};

static struct rtattr *attr(struct req *q, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a = (struct rtattr *)((char *)q + NLMSG_ALIGN(q->h.nlmsg_len));
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(a), data, len);
    q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}

static void attr_end(struct req *q, struct rtattr *nest)
{
    nest->rta_len = (unsigned short)((char *)q + q->h.nlmsg_len - (char *)nest);
}

/* RTM_NEWLINK for name of kind (a veth also gets its peer, name + "p"). */
static int create_link(const char *name, const char *kind)
{
    struct req q;
    memset(&q, 0, sizeof(q));
    q.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    q.h.nlmsg_type = RTM_NEWLINK;
    q.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    q.h.nlmsg_seq = 7;
    attr(&q, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *info = attr(&q, IFLA_LINKINFO, NULL, 0);
    attr(&q, IFLA_INFO_KIND, kind, strlen(kind));
    if (!strcmp(kind, "veth")) {
        struct rtattr *data = attr(&q, IFLA_INFO_DATA, NULL, 0);
        struct ifinfomsg peer_ifi = {.ifi_family = AF_UNSPEC};
        struct rtattr *peer = attr(&q, 1 /* VETH_INFO_PEER */, &peer_ifi, sizeof(peer_ifi));
        char peer_name[IFNAMSIZ];
        snprintf(peer_name, sizeof(peer_name), "%sp", name);
        attr(&q, IFLA_IFNAME, peer_name, strlen(peer_name) + 1);
        attr_end(&q, peer);
        attr_end(&q, data);
    }
    attr_end(&q, info);
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_nl k = {.nl_family = AF_NETLINK};
    ck_assert_int_eq(sendto(fd, &q, q.h.nlmsg_len, 0, (struct sockaddr *)&k, sizeof(k)),
                     (ssize_t)q.h.nlmsg_len);
    char buf[8192];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    close(fd);
    ck_assert_int_gt(n, 0);
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    ck_assert_int_eq(h->nlmsg_type, NLMSG_ERROR);
    return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
}

static void in_new_netns(void)
{
    ck_assert_msg(geteuid() == 0, "test-guestctl-net must run as root (it creates links in a "
                                  "network namespace of its own); run it with sudo");
    ck_assert_msg(unshare(CLONE_NEWNET) == 0, "unshare(CLONE_NEWNET): %s", strerror(errno));
    /* Debian's kernels have dummy as a module, some builds only veth. */
    int r = create_link(LINK, "dummy");
    if (r < 0)
        r = create_link(LINK, "veth");
    ck_assert_msg(r == 0, "cannot create a dummy or veth link: %s", strerror(-r));
}

/* --- reading back ---------------------------------------------------------- */

static struct ifreq ifreq_of(const char *name, unsigned long request)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ioctl(fd, request, &ifr), 0);
    close(fd);
    return ifr;
}

static int is_up(const char *name)
{
    return (ifreq_of(name, SIOCGIFFLAGS).ifr_flags & IFF_UP) != 0;
}

/* Whether name has address text with prefix_len, per getifaddrs(). */
static int has_addr(const char *name, const char *text, unsigned prefix_len)
{
    struct ifaddrs *all;
    ck_assert_int_eq(getifaddrs(&all), 0);
    int found = 0;
    for (struct ifaddrs *i = all; i; i = i->ifa_next) {
        if (!i->ifa_addr || strcmp(i->ifa_name, name))
            continue;
        int fam = i->ifa_addr->sa_family;
        if (fam != AF_INET && fam != AF_INET6)
            continue;
        char got[INET6_ADDRSTRLEN];
        const void *a = fam == AF_INET ? (void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                       : (void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
        const uint8_t *m = fam == AF_INET
                               ? (uint8_t *)&((struct sockaddr_in *)i->ifa_netmask)->sin_addr
                               : (uint8_t *)&((struct sockaddr_in6 *)i->ifa_netmask)->sin6_addr;
        unsigned bits = 0;
        for (int k = 0; k < (fam == AF_INET ? 4 : 16); k++)
            bits += (unsigned)__builtin_popcount(m[k]);
        inet_ntop(fam, a, got, sizeof(got));
        if (!strcmp(got, text) && bits == prefix_len)
            found = 1;
    }
    freeifaddrs(all);
    return found;
}

static struct in_addr v4(const char *text)
{
    struct in_addr a;
    ck_assert_int_eq(inet_pton(AF_INET, text, &a), 1);
    return a;
}

static struct in6_addr v6(const char *text)
{
    struct in6_addr a;
    ck_assert_int_eq(inet_pton(AF_INET6, text, &a), 1);
    return a;
}

/* The /proc/net/route line for dst/mask (dotted quads) on name: its gateway
 * and metric, or 0 if there is none. */
static int v4_route(const char *name, const char *dst, const char *mask, char gw[16],
                    unsigned *metric)
{
    FILE *f = fopen("/proc/net/route", "r");
    ck_assert_ptr_nonnull(f);
    char line[512], ifname[IFNAMSIZ + 1];
    unsigned d, g, flags, refcnt, use, met, m;
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%16s %x %x %x %u %u %u %x", ifname, &d, &g, &flags, &refcnt, &use, &met,
                   &m) != 8)
            continue;
        /* The kernel prints the addresses as host-order numbers of
         * network-order bytes. */
        if (strcmp(ifname, name) || d != v4(dst).s_addr || m != v4(mask).s_addr)
            continue;
        struct in_addr ga = {.s_addr = g};
        inet_ntop(AF_INET, &ga, gw, 16);
        *metric = met;
        found = 1;
    }
    fclose(f);
    return found;
}

/* The same from /proc/net/ipv6_route for dst/len. */
static int v6_route(const char *name, const char *dst, unsigned len, char gw[INET6_ADDRSTRLEN],
                    unsigned *metric)
{
    FILE *f = fopen("/proc/net/ipv6_route", "r");
    ck_assert_ptr_nonnull(f);
    char line[512], d[33], s[33], g[33], ifname[IFNAMSIZ + 1];
    unsigned dl, sl, met, refcnt, use, flags;
    struct in6_addr want = v6(dst);
    int found = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%32s %x %32s %x %32s %x %x %x %x %16s", d, &dl, s, &sl, g, &met, &refcnt,
                   &use, &flags, ifname) != 10)
            continue;
        struct in6_addr da, ga;
        for (int i = 0; i < 16; i++) {
            unsigned x, y;
            sscanf(d + 2 * i, "%2x", &x);
            sscanf(g + 2 * i, "%2x", &y);
            da.s6_addr[i] = (uint8_t)x;
            ga.s6_addr[i] = (uint8_t)y;
        }
        if (strcmp(ifname, name) || dl != len || memcmp(&da, &want, 16))
            continue;
        inet_ntop(AF_INET6, &ga, gw, INET6_ADDRSTRLEN);
        *metric = met;
        found = 1;
    }
    fclose(f);
    return found;
}

/* --- tests ------------------------------------------------------------------ */

START_TEST(bad_input_is_einval_before_any_request)
{
    struct in_addr a = v4("10.7.0.2");
    ck_assert_int_eq(smka_link_set_up(NULL, 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_up("", 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_up("sixteen-chars-xx", 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_up("a/b", 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_up("a b", 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_up("..", 1), -EINVAL);
    ck_assert_int_eq(smka_link_set_mtu(LINK, 0), -EINVAL);
    ck_assert_int_eq(smka_link_set_mtu(LINK, 0x80000000u), -EINVAL);
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET, &a, 33), -EINVAL);
    struct in6_addr b = v6("2001:db8::1");
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET6, &b, 129), -EINVAL);
    ck_assert_int_eq(smka_addr_add(LINK, AF_UNIX, &a, 8), -EAFNOSUPPORT);
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET, NULL, 8), -EINVAL);

    struct smka_route r = {.family = AF_INET, .dst_len = 33, .ifname = LINK};
    ck_assert_int_eq(smka_route_add(&r), -EINVAL);
    r.dst_len = 16;
    memcpy(r.dst, (uint8_t[]){10, 8, 0, 1}, 4); /* host bits set */
    ck_assert_int_eq(smka_route_add(&r), -EINVAL);
    memcpy(r.dst, (uint8_t[]){10, 8, 0, 0}, 4);
    r.ifname = NULL; /* neither gateway nor link */
    ck_assert_int_eq(smka_route_add(&r), -EINVAL);
    r.family = AF_INET6;
    r.dst_len = 129;
    r.ifname = LINK;
    ck_assert_int_eq(smka_route_add(&r), -EINVAL);
    r.family = 0;
    ck_assert_int_eq(smka_route_add(&r), -EAFNOSUPPORT);
    ck_assert_int_eq(smka_route_add(NULL), -EINVAL);
}
END_TEST

START_TEST(a_missing_link_is_enodev)
{
    struct in_addr a = v4("10.7.0.2");
    ck_assert_int_eq(smka_link_set_up("nosuch0", 1), -ENODEV);
    ck_assert_int_eq(smka_link_set_mtu("nosuch0", 1400), -ENODEV);
    ck_assert_int_eq(smka_addr_add("nosuch0", AF_INET, &a, 24), -ENODEV);
    ck_assert_int_eq(smka_addr_del("nosuch0", AF_INET, &a, 24), -ENODEV);
    struct smka_route r = {.family = AF_INET, .ifname = "nosuch0"};
    ck_assert_int_eq(smka_route_add(&r), -ENODEV);
}
END_TEST

START_TEST(link_goes_up_and_down)
{
    ck_assert(!is_up(LINK));
    ck_assert_int_eq(smka_link_set_up(LINK, 1), 0);
    ck_assert(is_up(LINK));
    ck_assert_int_eq(smka_link_set_up(LINK, 1), 0); /* already up: fine */
    ck_assert_int_eq(smka_link_set_up(LINK, 0), 0);
    ck_assert(!is_up(LINK));
    ck_assert_int_eq(smka_link_set_up("lo", 1), 0);
    ck_assert(is_up("lo"));
}
END_TEST

START_TEST(mtu_is_set)
{
    ck_assert_int_eq(smka_link_set_mtu(LINK, 1400), 0);
    ck_assert_int_eq(ifreq_of(LINK, SIOCGIFMTU).ifr_mtu, 1400);
    ck_assert_int_eq(smka_link_set_mtu(LINK, 9000), 0);
    ck_assert_int_eq(ifreq_of(LINK, SIOCGIFMTU).ifr_mtu, 9000);
    /* An error the kernel finds comes back as its errno: a veth takes 68
     * to 65535 (a dummy takes anything). */
    ck_assert_int_eq(create_link("gc1", "veth"), 0);
    ck_assert_int_eq(smka_link_set_mtu("gc1", 65535), 0);
    ck_assert_int_eq(smka_link_set_mtu("gc1", 65536), -EINVAL);
    ck_assert_int_eq(smka_link_set_mtu("gc1", 67), -EINVAL);
    ck_assert_int_eq(ifreq_of("gc1", SIOCGIFMTU).ifr_mtu, 65535);
}
END_TEST

START_TEST(ipv4_address_add_duplicate_delete)
{
    struct in_addr a = v4("10.7.0.2");
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET, &a, 24), 0);
    ck_assert(has_addr(LINK, "10.7.0.2", 24));
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET, &a, 24), -EEXIST);
    ck_assert_int_eq(smka_addr_del(LINK, AF_INET, &a, 24), 0);
    ck_assert(!has_addr(LINK, "10.7.0.2", 24));
    ck_assert_int_eq(smka_addr_del(LINK, AF_INET, &a, 24), -EADDRNOTAVAIL);
}
END_TEST

START_TEST(ipv6_address_add_is_usable_at_once)
{
    ck_assert_int_eq(smka_link_set_up(LINK, 1), 0);
    struct in6_addr a = v6("2001:db8:7::2");
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET6, &a, 64), 0);
    ck_assert(has_addr(LINK, "2001:db8:7::2", 64));
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET6, &a, 64), -EEXIST);
    /* No duplicate address detection: not tentative (IFA_F_TENTATIVE,
     * 0x40, in /proc/net/if_inet6's flags column). */
    FILE *f = fopen("/proc/net/if_inet6", "r");
    ck_assert_ptr_nonnull(f);
    char line[256], hex[33], name[IFNAMSIZ + 1];
    unsigned idx, plen, scope, flags;
    int seen = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "%32s %x %x %x %x %16s", hex, &idx, &plen, &scope, &flags, name) == 6 &&
            !strcmp(hex, "20010db8000700000000000000000002")) {
            seen = 1;
            ck_assert_uint_eq(flags & 0x40, 0);
        }
    fclose(f);
    ck_assert(seen);
    ck_assert_int_eq(smka_addr_del(LINK, AF_INET6, &a, 64), 0);
    ck_assert(!has_addr(LINK, "2001:db8:7::2", 64));
}
END_TEST

START_TEST(ipv4_routes_with_gateway_default_and_on_link)
{
    ck_assert_int_eq(smka_link_set_up(LINK, 1), 0);
    struct in_addr a = v4("10.7.0.2");
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET, &a, 24), 0);

    struct smka_route r = {
        .family = AF_INET, .dst_len = 16, .has_gateway = 1, .ifname = LINK, .metric = 50};
    memcpy(r.dst, (uint8_t[]){10, 8, 0, 0}, 4);
    memcpy(r.gateway, (uint8_t[]){10, 7, 0, 1}, 4);
    ck_assert_int_eq(smka_route_add(&r), 0);
    char gw[16];
    unsigned metric;
    ck_assert(v4_route(LINK, "10.8.0.0", "255.255.0.0", gw, &metric));
    ck_assert_str_eq(gw, "10.7.0.1");
    ck_assert_uint_eq(metric, 50);
    ck_assert_int_eq(smka_route_add(&r), -EEXIST);

    /* The default route, the link found from the gateway. */
    struct smka_route def = {.family = AF_INET, .has_gateway = 1};
    memcpy(def.gateway, (uint8_t[]){10, 7, 0, 1}, 4);
    ck_assert_int_eq(smka_route_add(&def), 0);
    ck_assert(v4_route(LINK, "0.0.0.0", "0.0.0.0", gw, &metric));
    ck_assert_str_eq(gw, "10.7.0.1");
    ck_assert_uint_eq(metric, 0);

    /* Straight onto the link, no gateway. */
    struct smka_route dev = {.family = AF_INET, .dst_len = 24, .ifname = LINK};
    memcpy(dev.dst, (uint8_t[]){10, 9, 0, 0}, 4);
    ck_assert_int_eq(smka_route_add(&dev), 0);
    ck_assert(v4_route(LINK, "10.9.0.0", "255.255.255.0", gw, &metric));
    ck_assert_str_eq(gw, "0.0.0.0");

    /* A gateway no link reaches. */
    struct smka_route far = {.family = AF_INET, .dst_len = 24, .has_gateway = 1};
    memcpy(far.dst, (uint8_t[]){10, 10, 0, 0}, 4);
    memcpy(far.gateway, (uint8_t[]){192, 0, 2, 1}, 4);
    ck_assert_int_eq(smka_route_add(&far), -ENETUNREACH);

    ck_assert_int_eq(smka_route_del(&r), 0);
    ck_assert(!v4_route(LINK, "10.8.0.0", "255.255.0.0", gw, &metric));
    ck_assert_int_eq(smka_route_del(&r), -ESRCH);
    ck_assert_int_eq(smka_route_del(&def), 0);
    ck_assert(!v4_route(LINK, "0.0.0.0", "0.0.0.0", gw, &metric));
    ck_assert_int_eq(smka_route_del(&dev), 0);
}
END_TEST

START_TEST(ipv6_routes_with_gateway_and_default)
{
    ck_assert_int_eq(smka_link_set_up(LINK, 1), 0);
    struct in6_addr a = v6("2001:db8:7::2");
    ck_assert_int_eq(smka_addr_add(LINK, AF_INET6, &a, 64), 0);

    struct smka_route r = {
        .family = AF_INET6, .dst_len = 48, .has_gateway = 1, .ifname = LINK, .metric = 77};
    struct in6_addr d = v6("2001:db8:8::"), g = v6("2001:db8:7::1");
    memcpy(r.dst, &d, 16);
    memcpy(r.gateway, &g, 16);
    ck_assert_int_eq(smka_route_add(&r), 0);
    char gw[INET6_ADDRSTRLEN];
    unsigned metric;
    ck_assert(v6_route(LINK, "2001:db8:8::", 48, gw, &metric));
    ck_assert_str_eq(gw, "2001:db8:7::1");
    ck_assert_uint_eq(metric, 77);
    ck_assert_int_eq(smka_route_add(&r), -EEXIST);

    /* The default route through a link-local router, the usual IPv6 case. */
    struct smka_route def = {.family = AF_INET6, .has_gateway = 1, .ifname = LINK};
    struct in6_addr ll = v6("fe80::1");
    memcpy(def.gateway, &ll, 16);
    ck_assert_int_eq(smka_route_add(&def), 0);
    ck_assert(v6_route(LINK, "::", 0, gw, &metric));
    ck_assert_str_eq(gw, "fe80::1");
    ck_assert_uint_eq(metric, 1024);

    ck_assert_int_eq(smka_route_del(&r), 0);
    ck_assert(!v6_route(LINK, "2001:db8:8::", 48, gw, &metric));
    ck_assert_int_eq(smka_route_del(&r), -ESRCH);
    ck_assert_int_eq(smka_route_del(&def), 0);
    ck_assert(!v6_route(LINK, "::", 0, gw, &metric));
}
END_TEST

START_TEST(ip_parse_reads_address_and_prefix)
{
    int fam;
    uint8_t a[16];
    unsigned len;
    ck_assert_int_eq(smka_ip_parse("10.0.2.15/24", &fam, a, &len), 0);
    ck_assert_int_eq(fam, AF_INET);
    ck_assert_uint_eq(len, 24);
    ck_assert_mem_eq(a, ((uint8_t[]){10, 0, 2, 15}), 4);
    ck_assert_int_eq(smka_ip_parse("10.0.2.15", &fam, a, &len), 0);
    ck_assert_uint_eq(len, 32);
    ck_assert_int_eq(smka_ip_parse("2001:db8::1/64", &fam, a, &len), 0);
    ck_assert_int_eq(fam, AF_INET6);
    ck_assert_uint_eq(len, 64);
    ck_assert_uint_eq(a[15], 1);
    ck_assert_int_eq(smka_ip_parse("::", &fam, a, &len), 0);
    ck_assert_uint_eq(len, 128);
    const char *bad[] = {"",
                         "banana",
                         "10.0.2.15/",
                         "10.0.2.15/33",
                         "10.0.2.15/2x",
                         "10.0.2.15/0024",
                         "2001:db8::/129",
                         "10.0.2/8",
                         "1.2.3.4 /8",
                         "2001:db8::1%eth0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(smka_ip_parse(bad[i], &fam, a, &len) == -EINVAL, "accepted '%s'", bad[i]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("guestctl network");
    TCase *tc = tcase_create("rtnetlink");
    tcase_add_checked_fixture(tc, in_new_netns, NULL);
    tcase_add_test(tc, bad_input_is_einval_before_any_request);
    tcase_add_test(tc, a_missing_link_is_enodev);
    tcase_add_test(tc, link_goes_up_and_down);
    tcase_add_test(tc, mtu_is_set);
    tcase_add_test(tc, ipv4_address_add_duplicate_delete);
    tcase_add_test(tc, ipv6_address_add_is_usable_at_once);
    tcase_add_test(tc, ipv4_routes_with_gateway_default_and_on_link);
    tcase_add_test(tc, ipv6_routes_with_gateway_and_default);
    suite_add_tcase(s, tc);
    tc = tcase_create("parse");
    tcase_add_test(tc, ip_parse_reads_address_and_prefix);
    suite_add_tcase(s, tc);
    if (geteuid() != 0)
        fprintf(stderr, "test-guestctl-net: not root: the network tests fail (they need to "
                        "create links in a network namespace of their own)\n");
    return run_suite(s, CK_ENV);
}
