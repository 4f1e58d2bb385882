/*
 * Guest control: what a VMM sets in its guest through the agent after boot
 * or a snapshot restore (the clock, the entropy pool, the network, DNS, the
 * host name, /etc/hosts), and the file primitives WRITE_FILE uses.
 *
 * Agent-internal, prefix smka_ (the library's public API owns smk_). Every
 * function validates its arguments first and returns 0 or a negative errno;
 * none prints, exits or keeps state between calls, so any of them may run
 * in any connection's process. Netlink requests each use a socket of their
 * own and wait for the kernel's acknowledgement: an error the kernel reports
 * is returned as its errno. Only libc is used (raw rtnetlink, no libnl, no
 * ip(8)), so the static agent carries it all.
 */
#ifndef SMKA_AGENT_GUESTCTL_H
#define SMKA_AGENT_GUESTCTL_H

#include <stddef.h>
#include <stdint.h>

/* --- clock ----------------------------------------------------------------- */

/*
 * Sets CLOCK_REALTIME to sec + nsec since the epoch.
 * -EINVAL: sec < 0, nsec < 0 or nsec >= 1000000000 (checked before any
 * system call); -EPERM: no CAP_SYS_TIME.
 * The RTC is not written: the VMM emulates it from the host's clock (or
 * there is none, as on microvm), the guest kernel reads it only at boot, and
 * after a restore this call is what corrects the time.
 */
int smka_clock_set(int64_t sec, int64_t nsec);

/* --- entropy --------------------------------------------------------------- */

#define SMKA_ENTROPY_MAX 4096 /* bytes per call; the input pool holds 256 bits */

/*
 * Mixes len bytes into the kernel's input pool crediting entropy_bits
 * (RNDADDENTROPY), then reseeds the CRNG from it (RNDRESEEDCRNG), through
 * /dev/urandom. len may be 0 (only reseed). After a snapshot restore every
 * clone would otherwise produce the same random numbers.
 * -EINVAL: data NULL with len > 0, entropy_bits > 8 * len;
 * -EMSGSIZE: len > SMKA_ENTROPY_MAX; -EPERM: no CAP_SYS_ADMIN;
 * -ENOENT: no /dev/urandom.
 */
int smka_entropy_add(const void *data, size_t len, uint32_t entropy_bits);

/* --- network (rtnetlink) --------------------------------------------------- */

/*
 * Interface names: 1 to 15 bytes, no '/', ':' or white space, not "." or
 * "..", else -EINVAL. A name no link has: -ENODEV.
 * Addresses are in network byte order: 4 bytes for AF_INET, 16 for AF_INET6.
 */

/* Sets the link administratively up (up != 0) or down. */
int smka_link_set_up(const char *ifname, int up);

/* -EINVAL: mtu 0 or over INT32_MAX, or outside what the link accepts. */
int smka_link_set_mtu(const char *ifname, uint32_t mtu);

/*
 * Adds or deletes an address with its prefix length (the on-link network's
 * route comes with it). family is AF_INET or AF_INET6, else -EAFNOSUPPORT;
 * prefix_len over 32 / 128: -EINVAL. Adding an address the link has:
 * -EEXIST; deleting one it has not: -EADDRNOTAVAIL. IPv6 addresses skip
 * duplicate address detection: the VMM hands them out, and a tentative
 * address could not be used for about a second.
 */
int smka_addr_add(const char *ifname, int family, const void *addr, unsigned prefix_len);
int smka_addr_del(const char *ifname, int family, const void *addr, unsigned prefix_len);

struct smka_route {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t dst[16];     /* destination network; bits past dst_len must be 0 */
    unsigned dst_len;    /* 0: the default route */
    int has_gateway;     /* 0: a route straight onto the link */
    uint8_t gateway[16]; /* same family as dst */
    const char *ifname;  /* NULL: the kernel picks the link that reaches the gateway */
    uint32_t metric;     /* 0: the kernel's default (0 for IPv4, 1024 for IPv6) */
};

/*
 * Adds or deletes a route in the main table (an added one is RTPROT_STATIC;
 * IPv4 without a gateway is scope link).
 * -EAFNOSUPPORT: family not AF_INET or AF_INET6; -EINVAL: route NULL,
 * dst_len over 32 / 128, host bits set in dst, neither gateway nor ifname,
 * a bad ifname; -EEXIST: the route exists (add);
 * -ESRCH: no such route (delete); -ENETUNREACH: the gateway is not on any
 * link that is up; -ENODEV: ifname names no link.
 */
int smka_route_add(const struct smka_route *route);
int smka_route_del(const struct smka_route *route);

/*
 * Parses "ADDR" or "ADDR/LEN" (IPv4 dotted quad or IPv6 text) into family,
 * addr[16] and prefix_len (the full length when there is no "/LEN").
 * -EINVAL: not an address, LEN not a number or too long for the family.
 */
int smka_ip_parse(const char *text, int *family, uint8_t addr[16], unsigned *prefix_len);

/* --- name resolution and identity ------------------------------------------ */

/*
 * etc_dir: the directory that holds resolv.conf, hosts and hostname; NULL
 * means "/etc". Files there are replaced atomically: a new file in the same
 * directory renamed over the old one, so a symlink in its place (Debian's
 * resolv.conf is often one) is replaced, never written through, and a file
 * on an overlay's read-only lower layer is shadowed. A file with something
 * mounted on it is written in place instead. -EEXIST: a device node, FIFO or
 * socket has the file's name; -EROFS: the directory is read-only.
 */

#define SMKA_DNS_MAX_NAMESERVERS 3 /* what glibc and musl read */
#define SMKA_DNS_MAX_SEARCH 32
#define SMKA_DNS_MAX_OPTIONS 16

struct smka_dns {
    const char *const *nameservers; /* IP literals; IPv6 may carry a %zone */
    size_t n_nameservers;
    const char *const *search; /* domain names, at most 253 bytes each */
    size_t n_search;
    const char *const *options; /* resolv.conf(5) options: "ndots:2", "edns0" */
    size_t n_options;
};

/*
 * Writes resolv.conf, replacing it whole.
 * -EINVAL: a nameserver that is not an IP literal, a search domain or option
 * with characters a resolver would split on or reject; -E2BIG: more entries
 * than the limits above.
 */
int smka_dns_write(const char *etc_dir, const struct smka_dns *dns);

/*
 * Sets the host name: sethostname(2), then etc_dir/hostname. The file is
 * written so that a program that reads it (an init the workload starts,
 * hostname -F) agrees with the kernel. On a failure neither has changed (the
 * kernel's name is put back if the file cannot be written).
 * -EINVAL: empty, over 64 bytes, or other than letters, digits, '-' and '.'
 * (and not starting with '-' or '.'); -EPERM: no CAP_SYS_ADMIN.
 */
int smka_hostname_set(const char *etc_dir, const char *name);

#define SMKA_HOSTS_MAX_NAMES 32
#define SMKA_HOSTS_MAX_SIZE (1024 * 1024) /* a bigger hosts file: -EFBIG */

/*
 * Makes each of names resolve to ip in etc_dir/hosts: names the file already
 * lists for the same address (compared as addresses, case-insensitively as
 * names) are left alone; the others are appended on one new line. Repeating
 * a call changes nothing (and does not rewrite the file). A name listed for
 * another address keeps that line, which comes first for lookups of that
 * family. The file's other lines are kept byte for byte; a hosts that is a
 * symlink to a regular file is read through and replaced by a file.
 * -EINVAL: ip not an IP literal, 0 or over SMKA_HOSTS_MAX_NAMES names, a name
 * other than letters, digits, '-', '_' and '.' (or starting with '-' or
 * '.'), or over 253 bytes; -EFBIG: hosts is over SMKA_HOSTS_MAX_SIZE; -EEXIST:
 * hosts is (or links to) a device node, FIFO or socket.
 */
int smka_hosts_add(const char *etc_dir, const char *ip, const char *const *names, size_t n_names);

/* --- file primitives (files.c) --------------------------------------------- */

/*
 * Replaces dirfd/name with a regular file holding data[0..len) and exactly
 * mode (no umask): a temporary ".smk-XXXXXXXXXXXX" in the same directory,
 * written, fsynced and renamed over name, then the directory fsynced. A
 * symlink at name is replaced, never followed. On a kernel interface file
 * system (proc, sysfs, cgroup, ...) an existing regular file is written in
 * place, as it is when something is mounted on name.
 * -EISDIR: name is a directory; -EEXIST: name is a device node, FIFO or
 * socket (never opened); -EINVAL: name empty, ".", "..", or with a '/', mode
 * over 07777; -ENAMETOOLONG: name over NAME_MAX.
 */
int smka_replace_file_at(int dirfd, const char *name, unsigned mode, const void *data, size_t len);

/*
 * Opens dirfd/name for reading, following symlinks, if what it names is a
 * regular file, without ever opening anything else: -EISDIR for a
 * directory, -EEXIST for a device node, FIFO or socket. The file checked is
 * the file opened (through /proc/self/fd; without /proc it is opened by name
 * again and compared: -EAGAIN if it was replaced meanwhile).
 * Returns the descriptor (O_RDONLY | O_NONBLOCK | O_CLOEXEC).
 */
int smka_open_regular_at(int dirfd, const char *name);

/*
 * Reads fd to its end, or to what a non-blocking fd has now (EAGAIN ends the
 * read), keeping at most max bytes: *truncated says whether there was more.
 * *data is malloc'd (free it), with room for at least one byte past *len
 * when the read was not truncated. -ENOMEM, or the read's errno.
 */
int smka_read_fd(int fd, size_t max, uint8_t **data, size_t *len, int *truncated);

/* Whether the file system of fd is a kernel interface one (proc, sysfs, ...). */
int smka_is_pseudo_fs(int fd);

#endif
