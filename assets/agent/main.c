#define _GNU_SOURCE
#include "agent.h"
#include "version.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage:\n"
    "  supermachine-agent [serve] [--vsock-port N] [--serial-name NAME]\n"
    "  supermachine-agent client ADDR ping [--wait SECONDS]\n"
    "  supermachine-agent client ADDR exec [--env K=V]... [--cwd DIR] [--stdin FILE|-]\n"
    "                                      [--timeout SEC] -- ARGV...\n"
    "  supermachine-agent client ADDR write GUESTPATH [LOCALFILE|-] [--mode OCTAL]\n"
    "  supermachine-agent client ADDR read GUESTPATH\n"
    "  supermachine-agent client ADDR shutdown [--poweroff]\n"
    "  supermachine-agent --version | --help\n"
    "\n"
    "serve (the default) runs inside the guest: it answers on vsock port 5000 and\n"
    "on the virtio-serial port named smk.agent. As PID 1 it also mounts /proc,\n"
    "/sys, /dev, /dev/pts and /tmp, reaps orphans, and reboots on SIGTERM/SIGINT\n"
    "or powers off on SIGUSR2/SIGPWR. serve --listen unix:PATH serves only that\n"
    "socket and changes nothing on the machine (for tests).\n"
    "\n"
    "ADDR is unix:PATH (a qemu chardev socket behind the virtio-serial port) or\n"
    "vsock:CID:PORT. ping prints \"version=V proto=N uptime_ns=N ready_ns=N\";\n"
    "--wait retries until the agent answers or SECONDS pass. exec exits with\n"
    "the command's status, 128+N if killed by signal N, 124 on timeout, 127 if\n"
    "not found, 126 if not executable, 125 if it could not be run. shutdown\n"
    "reboots unless --poweroff is given (under qemu on x86, only a reboot with\n"
    "-no-reboot and reboot=t on the kernel command line stops the VM). Other\n"
    "commands exit 0 on success, 1 on failure, 2 on a usage error.\n";

static int parse_port(const char *s, unsigned *port)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (!*s || *end || v > 0xffffffffu)
        return -1;
    *port = (unsigned)v;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "client") == 0)
        return smka_client_main(argc - 2, argv + 2);
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("supermachine-agent %s (protocol %d)\n", SMKA_AGENT_VERSION, SMK_PROTO_VERSION);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        fputs(usage, stdout);
        return 0;
    }

    /* As PID 1 the kernel passes on unknown command-line words as arguments;
     * refusing to start over them would panic the machine. */
    int pid1 = getpid() == 1;
    struct smka_serve_opts opts = {.vsock_port = SMKA_DEFAULT_VSOCK_PORT,
                                   .serial_name = SMKA_DEFAULT_SERIAL_NAME};
    for (int i = argc > 1 && strcmp(argv[1], "serve") == 0 ? 2 : 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--vsock-port") == 0 && v && parse_port(v, &opts.vsock_port) == 0) {
            i++;
        } else if (strcmp(a, "--serial-name") == 0 && v && *v) {
            opts.serial_name = argv[++i];
        } else if (strcmp(a, "--listen") == 0 && v) {
            opts.listen = argv[++i];
        } else if (pid1) {
            smka_log("ignoring argument %s", a);
        } else {
            smka_log("serve: bad argument %s (see --help)", a);
            return 2;
        }
    }
    int r = smka_serve(&opts);
    if (pid1) {
        /* PID 1 must not exit: the kernel would panic. */
        smka_log("serving stopped; rebooting");
        smka_power(SMK_SHUTDOWN_REBOOT);
        for (;;)
            pause();
    }
    return r;
}
