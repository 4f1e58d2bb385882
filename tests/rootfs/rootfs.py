#!/usr/bin/env python3
"""The guest contract (assets/GUEST.md) on a real Debian root, on one arch.

    rootfs.py --arch x86_64|aarch64 --kernel K --initramfs I --client SMKERNEL
              [--client-wrapper CMD] --cache DIR [--cmdline-file F] [--added GUEST=HOST]...
              [--steps LIST] [--qemu BIN] [--timeout S] [--keep] [-v]

1. A Debian bookworm minbase tree (debootstrap from deb.debian.org, cached in
   DIR, keyed by suite, arch and package list). aarch64 without binfmt_misc:
   debootstrap --foreign on the host, then the second stage runs inside the
   aarch64 guest itself (the foreign tree as smk.root, the result streamed as a
   tar to a second raw disk).
2. Three images of it: ext4 (named by LABEL=), erofs (by UUID=), squashfs (by
   SERIAL=, the virtio-blk serial; it has no label or uuid), each with a marker
   file saying which it is. All three are attached to every boot (read-only),
   so the init has to pick the right one.
3. One boot per image, checked through the agent: the marker, Debian's
   os-release, dpkg -l, unshare --net --pid --fork --mount-proc, veth + bridge +
   nft, /dev/stdout and process substitution, /dev links, devpts, shm, cgroup2
   and its controllers, lo up, the hostname, the environment, /usr/bin unchanged
   against the image, the initramfs's extra files at their paths.
4. The initramfs as the root: mounts, hostname, lo, the agent's environment,
   the added files (file reads only: the aarch64 initramfs has no shell).
   smk.entrypoint on the ext4 root; a missing entrypoint and a missing root end
   in one "smk-init: fatal:" console line and the machine stops.
5. Two guests on one virtual link (-netdev socket over 127.0.0.1): addresses,
   ping both ways.

Each check prints PASS or FAIL; the last line is "N passed, N failed"; exit 0
only if nothing failed. A test that cannot run FAILS (no qemu, no network to
Debian's archive, not root): it never skips. Standard library only.
"""
import argparse
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the checks need beyond minbase: ip, nft, ping. unshare, dpkg, bash and
# find are in minbase already.
PACKAGES = ["iproute2", "nftables", "iputils-ping"]
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
QEMU = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
PORT_NAME = "smk.agent"
DEFAULT_HOSTNAME = "supermachine"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "TERM": "linux"}
EXT4_LABEL = "smk-rootfs"
EROFS_UUID = "5e7a0c1d-2b3c-4d5e-8f90-a1b2c3d4e5f6"
EXT4_UUID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
SQUASHFS_SERIAL = "smk-squashfs"
OUT_SERIAL = "smk-out"
MARKER = "etc/smk-image"


class Fail(Exception):
    pass


def log(msg):
    print(msg, flush=True)


class Results:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, fn, *args):
        """Runs fn; PASS with its message, FAIL with the exception's."""
        try:
            msg = fn(*args)
        except Fail as e:
            self.failed += 1
            log(f"FAIL {name}: {e}")
            return False
        self.passed += 1
        log(f"PASS {name}: {msg}")
        return True


def as_root(argv):
    return argv if os.geteuid() == 0 else ["sudo", "-n"] + argv


def run(argv, **kw):
    kw.setdefault("check", True)
    return subprocess.run(argv, **kw)


# ---- the agent: the one place that knows how to talk to it -----------------------------

def agent(a, sock, args, stdin=None, timeout=None):
    """Runs one `smkernel agent` command (the library's client) against the guest
    behind SOCK; returns the CompletedProcess (stdout/stderr as bytes). exec
    streams STDIN (empty unless given)."""
    argv = a.client_wrapper + [a.client, "agent", "--connect", f"unix:{sock}"] + args
    if a.verbose:
        log("  $ " + " ".join(shlex.quote(x) for x in argv))
    t = timeout or a.timeout
    try:
        return subprocess.run(argv, input=stdin if stdin is not None else b"", stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=t + 30)
    except subprocess.TimeoutExpired:
        raise Fail(f"agent client did not return within {t + 30} s: {' '.join(args)}")


def describe(p):
    s = f"exit {p.returncode}"
    out = p.stdout.decode(errors="replace").strip()
    err = p.stderr.decode(errors="replace").strip()
    if out:
        s += f", stdout {out[-400:]!r}"
    if err:
        s += f", stderr {err[-400:]!r}"
    return s


# ---- qemu ------------------------------------------------------------------------------

class Guest:
    """One qemu process: the kernel, the initramfs, the images, a virtio-serial
    port for the agent, optionally a virtio-net link."""

    def __init__(self, a, append, disks, name="guest", net=None, mem=None):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix=f"smk-rootfs-{name}-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.console = os.path.join(self.dir, "console.log")
        cmdline = " ".join([a.cmdline] + a.extras + [append])
        argv = [a.qemu]
        if a.arch == "x86_64":
            argv += ["-M", "microvm,acpi=off"]
        else:
            argv += ["-M", "virt", "-cpu", "cortex-a57"]
        argv += ["-accel", "tcg", "-smp", str(a.smp), "-m", str(mem or a.mem),
                 "-no-reboot", "-nographic", "-monitor", "none", "-serial", f"file:{self.console}",
                 "-kernel", a.kernel, "-initrd", a.initramfs, "-append", cmdline,
                 "-device", "virtio-serial-device",
                 "-chardev", f"socket,id=agent,path={self.sock},server=on,wait=off",
                 "-device", f"virtserialport,chardev=agent,name={PORT_NAME}"]
        if net:
            argv += ["-netdev", f"socket,id=n0,{net}", "-device", "virtio-net-device,netdev=n0"]
        else:
            argv += ["-nic", "none"]
        for i, (path, serial, ro) in enumerate(disks):
            argv += ["-drive", f"file={path},format=raw,if=none,id=d{i}" + (",readonly=on" if ro else ""),
                     "-device", f"virtio-blk-device,drive=d{i}" + (f",serial={serial}" if serial else "")]
        if a.verbose:
            log("  $ " + " ".join(shlex.quote(x) for x in argv))
        self.t0 = time.monotonic()
        self.log = open(os.path.join(self.dir, "qemu.log"), "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, start_new_session=True)

    def agent(self, args, stdin=None, timeout=None):
        if self.proc.poll() is not None:
            raise Fail(f"qemu exited with status {self.proc.returncode}; console:\n{self.tail()}")
        return agent(self.a, self.sock, args, stdin, timeout)

    def sh(self, script, timeout=None, stdin=None):
        """Runs a shell script in the guest; returns (exit status, stdout text, stderr text)."""
        p = self.agent(["exec", "--", "/bin/sh", "-c", script], stdin=stdin, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")

    def ok(self, script, timeout=None):
        rc, out, err = self.sh(script, timeout)
        if rc != 0:
            raise Fail(f"{script!r}: exit {rc}, stdout {out[-400:]!r}, stderr {err[-400:]!r}")
        return out

    def wait_ready(self):
        # Short waits in a loop, so that a guest that died is seen at once.
        deadline = time.monotonic() + self.a.timeout
        while True:
            p = self.agent(["--timeout", "2", "ping"])
            if p.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Fail(f"agent did not answer: {describe(p)}; console:\n{self.tail()}")
            time.sleep(0.2)
        m = re.search(r"ready_ns=(\d+)", p.stdout.decode())
        return int(m.group(1)) if m else None

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def console_text(self):
        try:
            with open(self.console, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n=30):
        return "\n".join(self.console_text().splitlines()[-n:])

    def shutdown(self):
        p = self.agent(["shutdown"] + (["--poweroff"] if self.a.arch == "aarch64" else []))
        if p.returncode != 0:
            raise Fail(f"shutdown: {describe(p)}")
        rc = self.wait_exit(self.a.timeout)
        if rc is None:
            raise Fail("qemu still running after shutdown")
        return rc

    def close(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.log.close()
        if self.a.keep:
            log(f"  (kept {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ---- the Debian tree and its images ------------------------------------------------------

def cache_key(a):
    h = hashlib.sha256(f"{SUITE} {DEB_ARCH[a.arch]} minbase {' '.join(PACKAGES)} {MIRROR}".encode())
    return f"{a.arch}-{SUITE}-{h.hexdigest()[:12]}"


def debootstrap(a, target, foreign):
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
            f"--arch={DEB_ARCH[a.arch]}"] + (["--foreign"] if foreign else []) + [SUITE, target, MIRROR]
    t0 = time.monotonic()
    p = subprocess.run(as_root(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise Fail(f"{' '.join(argv)}: exit {p.returncode}:\n{p.stdout.decode(errors='replace')[-1500:]}")
    return time.monotonic() - t0


def second_stage_in_guest(a, foreign, tree, work):
    """Runs debootstrap's second stage inside the aarch64 guest: the foreign tree
    is smk.root (ext4), and the finished root comes back as a tar written to a
    raw second disk."""
    img = os.path.join(work, "stage1.ext4")
    out = os.path.join(work, "stage2.tar")
    # The first stage leaves /proc as a symlink to the host's /proc; the
    # guest's init mounts its own there.
    proc = os.path.join(foreign, "proc")
    if os.path.islink(proc):
        run(as_root(["sh", "-c", f"rm {shlex.quote(proc)} && mkdir -m 0555 {shlex.quote(proc)}"]))
    mkfs_ext4(foreign, img, "smk-stage1", None)
    with open(out, "wb") as f:
        f.truncate(1536 << 20)
    g = Guest(a, "smk.root=LABEL=smk-stage1", [(img, None, True), (out, OUT_SERIAL, False)],
              name="stage2", mem=1536)
    t0 = time.monotonic()
    try:
        g.wait_ready()
        rc, so, se = g.sh("/debootstrap/debootstrap --second-stage >/tmp/stage2.log 2>&1; rc=$?; "
                          "tail -5 /tmp/stage2.log; exit $rc", timeout=3600)
        if rc != 0 or "Base system installed successfully" not in so:
            raise Fail(f"second stage in the guest: exit {rc}: {so[-1500:]} {se[-500:]}")
        # The overlay root as it is now, through a plain bind (no submounts:
        # /proc, /sys, /dev are the empty directories underneath).
        g.ok(f"for d in /sys/class/block/*; do [ \"$(cat $d/serial 2>/dev/null)\" = {OUT_SERIAL} ] && "
             "dev=/dev/${d##*/}; done; [ -n \"$dev\" ] && rm -rf /debootstrap /tmp/stage2.log && "
             "mkdir -p /run/smk-export && mount --bind / /run/smk-export && "
             "tar --numeric-owner --xattrs -C /run/smk-export -cf \"$dev\" . && sync", timeout=3600)
        g.shutdown()
    finally:
        g.close()
    dt = time.monotonic() - t0
    os.makedirs(tree)
    run(as_root(["tar", "--numeric-owner", "--xattrs", "-xpf", out, "-C", tree]))
    run(as_root(["rmdir", os.path.join(tree, "run", "smk-export")]))
    os.unlink(out)
    os.unlink(img)
    return dt


def mkfs_ext4(tree, img, label, uuid):
    if os.path.exists(img):
        os.unlink(img)
    size = int(subprocess.run(as_root(["du", "-sm", tree]), stdout=subprocess.PIPE, check=True)
               .stdout.split()[0])
    argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", tree, "-E", "root_owner=0:0"]
    if uuid:
        argv += ["-U", uuid]
    run(as_root(argv + [img, f"{size * 13 // 10 + 64}M"]))
    run(as_root(["chown", f"{os.getuid()}:{os.getgid()}", img]))


def build_images(a, tree, imgdir):
    """ext4, erofs and squashfs of TREE, each with its marker; cached."""
    imgs = {}
    for kind in ("ext4", "erofs", "squashfs"):
        img = os.path.join(imgdir, f"root.{kind}")
        imgs[kind] = img
        if os.path.exists(img + ".done"):
            continue
        t0 = time.monotonic()
        run(as_root(["sh", "-c", f"echo {kind} > {shlex.quote(os.path.join(tree, MARKER))}"]))
        if kind == "ext4":
            mkfs_ext4(tree, img, EXT4_LABEL, EXT4_UUID)
        elif kind == "erofs":
            run(as_root(["mkfs.erofs", "--quiet", f"-U{EROFS_UUID}", "-T0", img, tree]),
                stdout=subprocess.DEVNULL)
        else:
            run(as_root(["mksquashfs", tree, img, "-noappend", "-quiet", "-no-progress",
                         "-comp", "zstd", "-mkfs-time", "0"]), stdout=subprocess.DEVNULL)
        run(as_root(["chown", f"{os.getuid()}:{os.getgid()}", img]))
        open(img + ".done", "w").close()
        log(f"rootfs: built {img} ({os.path.getsize(img) >> 20} MiB) in {time.monotonic() - t0:.1f} s")
    run(as_root(["rm", "-f", os.path.join(tree, MARKER)]))
    return imgs


def prepare(a):
    key = cache_key(a)
    base = os.path.join(a.cache, key)
    tree = os.path.join(base, "tree")
    os.makedirs(base, exist_ok=True)
    if not os.path.exists(tree + ".done"):
        if os.path.exists(tree):
            run(as_root(["rm", "-rf", tree]))
        if a.arch == "x86_64" or os.uname().machine == "aarch64":
            dt = debootstrap(a, tree, foreign=False)
            log(f"rootfs: debootstrap {SUITE} minbase +{','.join(PACKAGES)} ({DEB_ARCH[a.arch]}): {dt:.0f} s")
        else:
            foreign = os.path.join(base, "foreign")
            if os.path.exists(foreign):
                run(as_root(["rm", "-rf", foreign]))
            dt = debootstrap(a, foreign, foreign=True)
            log(f"rootfs: debootstrap --foreign ({DEB_ARCH[a.arch]}) on the host: {dt:.0f} s")
            dt = second_stage_in_guest(a, foreign, tree, base)
            run(as_root(["rm", "-rf", foreign]))
            log(f"rootfs: second stage inside the aarch64 guest (TCG): {dt:.0f} s")
        for f in glob_images(base):
            os.unlink(f)
        open(tree + ".done", "w").close()
    else:
        log(f"rootfs: cached tree {tree}")
    imgs = build_images(a, tree, base)
    listing = usr_bin_listing_host(tree)
    return tree, imgs, listing


def glob_images(base):
    return [os.path.join(base, f) for f in os.listdir(base) if f.startswith("root.")]


def usr_bin_listing_host(tree):
    """NAME TYPE [TARGET] per entry of the image's /usr/bin, sorted."""
    d = os.path.join(tree, "usr", "bin")
    out = []
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if os.path.islink(p):
            out.append(f"{n} l {os.readlink(p)}")
        elif os.path.isdir(p):
            out.append(f"{n} d")
        else:
            out.append(f"{n} f")
    return out


# ---- the checks on one boot -------------------------------------------------------------

GUEST_LISTING = ("cd /usr/bin && for n in * .[!.]*; do [ -e \"$n\" ] || [ -L \"$n\" ] || continue; "
                 "if [ -L \"$n\" ]; then echo \"$n l $(readlink \"$n\")\"; elif [ -d \"$n\" ]; then "
                 "echo \"$n d\"; else echo \"$n f\"; fi; done | LC_ALL=C sort")


def checks(a, r, g, kind, listing, hostname):
    tag = f"[{a.arch} {kind}]"

    def c(name, fn):
        return r.check(f"{tag} {name}", fn)

    def marker():
        out = g.ok(f"cat /{MARKER}").strip()
        if out != kind:
            raise Fail(f"/{MARKER} says {out!r}: the init mounted the wrong disk")
        return f"the {kind} image is the root"

    def os_release():
        out = g.ok("cat /etc/os-release")
        if "ID=debian" not in out or f"VERSION_CODENAME={SUITE}" not in out:
            raise Fail(f"/etc/os-release: {out!r}")
        return re.search(r'PRETTY_NAME="([^"]*)"', out).group(1)

    def dpkg():
        out = g.ok("dpkg -l", timeout=300)
        pk = [ln.split()[1] for ln in out.splitlines() if ln.startswith("ii ")]
        missing = [p for p in PACKAGES + ["dpkg", "bash", "util-linux"] if p not in pk and
                   p + ":" + DEB_ARCH[a.arch] not in pk]
        if missing:
            raise Fail(f"dpkg -l lists {len(pk)} installed packages but not {missing}")
        return f"{len(pk)} packages installed (ii)"

    def unshare():
        out = g.ok("unshare --net --pid --fork --mount-proc sh -c "
                   "'echo pid=$$; ls /sys/class/net; ps -e -o pid= 2>/dev/null | wc -l'")
        if "pid=1" not in out:
            raise Fail(f"not PID 1 in the new PID namespace: {out!r}")
        return " ".join(out.split())

    def veth():
        g.ok("ip link add v0 type veth peer name v1 && ip link show v1 >/dev/null && ip link del v0")
        return "ip link add v0 type veth peer name v1"

    def bridge():
        g.ok("ip link add br0 type bridge && ip link set br0 up && ip link del br0")
        return "ip link add br0 type bridge"

    def nft():
        out = g.ok("nft add table inet smk && nft add chain inet smk c '{ type filter hook input "
                   "priority 0; }' && nft list ruleset && nft delete table inet smk")
        if "table inet smk" not in out:
            raise Fail(f"nft list ruleset did not show the table: {out!r}")
        return "nft add table/chain, list ruleset"

    def stdout():
        out = g.ok("echo x >/dev/stdout; echo y >/dev/stderr; [ ! -f /dev/stdout ] && "
                   "bash -c 'cat <(echo procsub) /dev/fd/0 </dev/null'")
        if out.split() != ["x", "procsub"]:
            raise Fail(f"stdout {out!r}")
        return "echo x >/dev/stdout, bash <(...) through /dev/fd"

    def devlinks():
        out = g.ok("for l in fd stdin stdout stderr; do printf '%s=%s ' $l $(readlink /dev/$l); done; "
                   "grep -E '^[^ ]+ /dev/(pts|shm) ' /proc/mounts | cut -d' ' -f2,3 | tr '\\n' ' '")
        want = ["fd=/proc/self/fd", "stdin=/proc/self/fd/0", "stdout=/proc/self/fd/1",
                "stderr=/proc/self/fd/2", "/dev/pts", "devpts", "/dev/shm", "tmpfs"]
        if out.split() != want:
            raise Fail(f"got {out!r}")
        return out.strip()

    def cgroup():
        out = g.ok("grep ' /sys/fs/cgroup ' /proc/mounts; cat /sys/fs/cgroup/cgroup.controllers "
                   "/sys/fs/cgroup/cgroup.subtree_control")
        lines = out.splitlines()
        if not lines or lines[0].split()[2] != "cgroup2":
            raise Fail(f"no cgroup2 at /sys/fs/cgroup: {out!r}")
        ctl, sub = (lines[1].split(), lines[2].split()) if len(lines) >= 3 else ([], [])
        missing = [x for x in ("cpu", "memory", "io", "pids") if x not in ctl or x not in sub]
        if missing:
            raise Fail(f"controllers {ctl}, subtree_control {sub}: missing {missing}")
        return f"cgroup2, controllers {' '.join(ctl)} (all enabled for children)"

    def lo():
        out = g.ok("ip -o link show lo; ip -o addr show lo")
        if not re.search(r"<[^>]*\bUP\b", out) or "127.0.0.1" not in out:
            raise Fail(f"lo: {out!r}")
        return "lo UP with 127.0.0.1"

    def host():
        out = g.ok("hostname; cat /proc/sys/kernel/hostname").split()
        if out != [hostname, hostname]:
            raise Fail(f"hostname says {out}, expected {hostname!r}")
        return hostname

    def env():
        # The agent's exec passes its own environment on: so it is the init's.
        p = g.agent(["exec", "--", "/usr/bin/env"])
        got = dict(ln.split("=", 1) for ln in p.stdout.decode().splitlines() if "=" in ln)
        if p.returncode != 0 or got != ENV:
            raise Fail(f"environment {got} (exit {p.returncode}), expected exactly {ENV}")
        p = g.agent(["exec", "--", "/bin/pwd"])
        if p.stdout.decode().strip() != "/":
            raise Fail(f"cwd {p.stdout!r}, expected /")
        return "exactly PATH, HOME, TERM; cwd /"

    def usr_bin():
        out = g.ok(GUEST_LISTING).splitlines()
        if out != listing:
            extra = sorted(set(out) - set(listing))
            gone = sorted(set(listing) - set(out))
            raise Fail(f"/usr/bin differs from the image: {len(extra)} added {extra[:8]}, "
                       f"{len(gone)} gone {gone[:8]}")
        return f"{len(out)} entries, identical to the image's"

    def added():
        got = []
        for guest, host in a.added:
            with open(host, "rb") as f:
                want = f.read()
            p = g.agent(["cp", f":{guest}", "-"])
            if p.returncode != 0 or p.stdout != want:
                raise Fail(f"{guest}: {describe(p)[:300]}, expected the {len(want)} bytes of {host}")
            got.append(guest)
        # The agent, from the initramfs; and nothing else of it (no busybox, no /init).
        g.ok("test -x /sbin/supermachine-agent && ! test -e /bin/busybox && ! test -e /init")
        return f"{', '.join(got)} match; the agent is there, busybox and /init are not"

    for name, fn in (("root", marker), ("os-release", os_release), ("dpkg -l", dpkg),
                     ("unshare", unshare), ("veth", veth), ("bridge", bridge), ("nft", nft),
                     ("stdout", stdout), ("dev links", devlinks), ("cgroup2", cgroup), ("lo", lo),
                     ("hostname", host), ("environment", env), ("/usr/bin unchanged", usr_bin),
                     ("initramfs files", added)):
        c(name, fn)


def root_arg(kind):
    return {"ext4": f"LABEL={EXT4_LABEL}", "erofs": f"UUID={EROFS_UUID}",
            "squashfs": f"SERIAL={SQUASHFS_SERIAL}"}[kind]


def disks(imgs):
    return [(imgs["erofs"], None, True), (imgs["ext4"], None, True),
            (imgs["squashfs"], SQUASHFS_SERIAL, True)]


def boot_and_check(a, r, imgs, kind, listing):
    hostname = DEFAULT_HOSTNAME if kind != "erofs" else "smk-erofs-guest"
    append = f"smk.root={root_arg(kind)}" + (f" smk.hostname={hostname}" if kind == "erofs" else "")
    g = Guest(a, append, disks(imgs), name=kind)
    try:
        def ready():
            ns = g.wait_ready()
            return f"agent ready at guest uptime {ns / 1e9:.3f} s ({append})"
        if not r.check(f"[{a.arch} {kind}] boot", ready):
            return
        checks(a, r, g, kind, listing, hostname)
        r.check(f"[{a.arch} {kind}] shutdown", lambda: f"qemu exited {g.shutdown()}")
    finally:
        g.close()


def fatal_boot(a, r, attached, name, append, expect):
    """A boot that must end in one fatal console line and a stopped machine."""
    g = Guest(a, append, attached, name="fatal")
    try:
        def fn():
            rc = g.wait_exit(a.timeout)
            text = g.console_text()
            lines = [ln for ln in text.splitlines() if "smk-init: fatal:" in ln]
            if rc is None:
                raise Fail(f"the machine did not stop within {a.timeout} s; console:\n{g.tail()}")
            if len(lines) != 1 or expect not in lines[0]:
                raise Fail(f"expected one 'smk-init: fatal: ...{expect}...' line, got {lines}; "
                           f"console:\n{g.tail()}")
            return f"{lines[0].strip()!r}; qemu exited {rc} after {time.monotonic() - g.t0:.1f} s"
        r.check(f"[{a.arch}] {name}", fn)
    finally:
        g.close()


def entrypoint_boot(a, r, imgs):
    """smk.entrypoint runs instead of the agent, with the contract's environment."""
    # The ext4 image by its UUID, in capitals (the match ignores case).
    g = Guest(a, f"smk.root=UUID={EXT4_UUID.upper()} smk.entrypoint=\"/usr/bin/env SMK_EP=1\"",
              disks(imgs), name="entrypoint")
    try:
        def fn():
            rc = g.wait_exit(a.timeout)
            if rc is None:
                raise Fail(f"the machine did not stop after the entrypoint; console:\n{g.tail()}")
            text = g.console_text()
            got = dict(ln.strip().split("=", 1) for ln in text.splitlines()
                       if re.match(r"^[A-Z_]+=", ln.strip()))
            want = dict(ENV, SMK_EP="1")
            if got != want:
                raise Fail(f"entrypoint printed {got}, expected {want}; console:\n{g.tail()}")
            return f"/usr/bin/env ran as the entrypoint and printed exactly {sorted(want)}; qemu exited {rc}"
        r.check(f"[{a.arch}] entrypoint", fn)
    finally:
        g.close()


def initramfs_root(a, r):
    """The contract with the initramfs as the root (no smk.root), through the
    agent's file reads only: the aarch64 initramfs has no shell."""
    g = Guest(a, "smk.hostname=smk-initramfs", [], name="initramfs")
    tag = f"[{a.arch} initramfs]"

    def read(path):
        p = g.agent(["cp", f":{path}", "-"])
        if p.returncode != 0:
            raise Fail(f"read {path}: {describe(p)}")
        return p.stdout.decode(errors="replace")

    try:
        def ready():
            return f"agent ready at guest uptime {g.wait_ready() / 1e9:.3f} s (no smk.root)"

        def mounts():
            m = {ln.split()[1]: ln.split() for ln in read("/proc/mounts").splitlines()}
            want = {"/": "overlay", "/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs",
                    "/dev/pts": "devpts", "/dev/shm": "tmpfs", "/sys/fs/cgroup": "cgroup2"}
            bad = {k: m[k][2] if k in m else None for k, v in want.items() if k not in m or m[k][2] != v}
            if bad or "lowerdir=/," not in m["/"][3]:
                raise Fail(f"mounts differ: {bad}, / is {m.get('/')}")
            sub = read("/sys/fs/cgroup/cgroup.subtree_control").split()
            if not all(c in sub for c in ("cpu", "memory", "io", "pids")):
                raise Fail(f"cgroup.subtree_control: {sub}")
            return "overlay over the initramfs, proc, sysfs, devtmpfs, devpts, shm, cgroup2 " \
                   f"(children get {' '.join(sub)})"

        def machine():
            hn = read("/proc/sys/kernel/hostname").strip()
            flags = int(read("/sys/class/net/lo/flags").strip(), 16)
            if hn != "smk-initramfs" or not flags & 1:
                raise Fail(f"hostname {hn!r}, lo flags {flags:#x}")
            return f"hostname {hn}, lo up"

        def environ():
            # What the init gave the agent: the agent reads its own environ.
            env = dict(e.split("=", 1) for e in read("/proc/self/environ").split("\0") if "=" in e)
            if env != ENV:
                raise Fail(f"the agent's environment is {env}, expected exactly {ENV}")
            return "the agent's environment is exactly PATH, HOME, TERM"

        def added():
            for guest, host in a.added:
                with open(host) as f:
                    if read(guest) != f.read():
                        raise Fail(f"{guest} differs from {host}")
            return f"{', '.join(gp for gp, _ in a.added)} at their paths"

        if r.check(f"{tag} boot", ready):
            for name, fn in (("mounts", mounts), ("hostname, lo", machine),
                             ("environment", environ), ("initramfs files", added)):
                r.check(f"{tag} {name}", fn)
            r.check(f"{tag} shutdown", lambda: f"qemu exited {g.shutdown()}")
    finally:
        g.close()


def two_guests(a, r, imgs):
    """Two guests on one virtual link: qemu -netdev socket over 127.0.0.1 only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One disk each (the same image, read-only; microvm has few free IRQs), so
    # the root can be named by path.
    base = "smk.root=/dev/vda"
    disk = [(imgs["ext4"], None, True)]
    g1 = Guest(a, base + " smk.hostname=smk-a", disk, name="net-a",
               net=f"listen=127.0.0.1:{port}")
    time.sleep(0.5)
    g2 = Guest(a, base + " smk.hostname=smk-b", disk, name="net-b",
               net=f"connect=127.0.0.1:{port}")
    try:
        def fn():
            g1.wait_ready()
            g2.wait_ready()
            g1.ok("ip addr add 10.211.0.1/24 dev eth0 && ip link set eth0 up")
            g2.ok("ip addr add 10.211.0.2/24 dev eth0 && ip link set eth0 up")
            a_out = g2.ok("ping -c 3 -W 5 10.211.0.1", timeout=120)
            b_out = g1.ok("ping -c 3 -W 5 10.211.0.2", timeout=120)
            m = re.search(r"(\d+) received", a_out)
            g1.shutdown()
            g2.shutdown()
            return (f"10.211.0.1 <-> 10.211.0.2 over -netdev socket 127.0.0.1:{port}: "
                    f"{m.group(0) if m else '?'} each way ({len(b_out.splitlines())} lines)")
        r.check(f"[{a.arch}] two guests on one link", fn)
    finally:
        g1.close()
        g2.close()


def preflight(a):
    bad = []
    a.qemu = shutil.which(a.qemu or QEMU[a.arch])
    if not a.qemu:
        bad.append(f"{QEMU[a.arch]} not found")
    for what in ("kernel", "initramfs", "client"):
        p = getattr(a, what)
        if not p or not os.path.isfile(p) or os.path.getsize(p) == 0:
            bad.append(f"{what} missing or empty: {p}")
    for tool in ("debootstrap", "mke2fs", "mkfs.erofs", "mksquashfs"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            bad.append(f"{tool} not found (apt-get install debootstrap e2fsprogs erofs-utils squashfs-tools)")
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL).returncode != 0:
        bad.append("debootstrap and the image builds need root (or password-less sudo)")
    for spec in a.added_specs:
        guest, _, host = spec.partition("=")
        if not guest.startswith("/") or not os.path.isfile(host):
            bad.append(f"--added {spec}: expected GUEST=HOSTFILE")
        a.added.append((guest, host))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--client", required=True, help="the smkernel CLI (its agent command is the client)")
    ap.add_argument("--client-wrapper", default="", help="run the client through this (cross builds: qemu-aarch64)")
    ap.add_argument("--cache", required=True, help="where the Debian tree and the images are kept")
    ap.add_argument("--cmdline-file")
    ap.add_argument("--added", dest="added_specs", action="append", default=[],
                    metavar="GUEST=HOST", help="a file the initramfs carries: check it in the root")
    ap.add_argument("--steps", default="roots,initramfs,fatal,entrypoint,net",
                    help="comma-separated: roots, initramfs, fatal, entrypoint, net (default: all)")
    ap.add_argument("--qemu")
    ap.add_argument("--mem", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    a.added = []
    a.client_wrapper = a.client_wrapper.split()
    a.smp = 1 if a.arch == "x86_64" else 2
    steps = set(a.steps.split(","))
    r = Results()
    bad = preflight(a)
    try:
        with open(a.cmdline_file) as f:
            a.cmdline = " ".join(f.read().split())
    except (OSError, TypeError) as e:
        bad.append(f"cannot read --cmdline-file: {e}")
    # Under TCG on x86_64 with one vCPU: skip the LAPIC timer calibration
    # (tests/boot/README.md, assets/kernel/README.md).
    a.extras = ["noapictimer"] if a.arch == "x86_64" else []
    if bad:
        for b in bad:
            r.failed += 1
            log(f"FAIL preflight: {b}")
        log(f"{r.passed} passed, {r.failed} failed")
        return 1
    t0 = time.monotonic()
    try:
        tree, imgs, listing = prepare(a)
        log(f"rootfs: tree and images ready in {time.monotonic() - t0:.0f} s "
            f"(image /usr/bin: {len(listing)} entries)")
    except (Fail, subprocess.CalledProcessError) as e:
        r.failed += 1
        log(f"FAIL prepare: {e}")
        log(f"{r.passed} passed, {r.failed} failed")
        return 1
    if "roots" in steps:
        for kind in ("ext4", "erofs", "squashfs"):
            boot_and_check(a, r, imgs, kind, listing)
    if "initramfs" in steps:
        initramfs_root(a, r)
    if "fatal" in steps:
        fatal_boot(a, r, disks(imgs), "missing entrypoint",
                   f"smk.root={root_arg('squashfs')} smk.rootfstype=squashfs smk.entrypoint=/no/such/program",
                   "/no/such/program")
        fatal_boot(a, r, disks(imgs), "missing root", "smk.root=LABEL=no-such-label",
                   "LABEL=no-such-label")
        fatal_boot(a, r, disks(imgs), "unknown root form", "smk.root=vda", "expected /dev/NAME")
        zero = os.path.join(a.cache, "zero.img")
        with open(zero, "wb") as f:
            f.truncate(4 << 20)
        fatal_boot(a, r, [(zero, "smk-zero", True)], "unknown file system", "smk.root=SERIAL=smk-zero",
                   "not ext4, squashfs or erofs")
    if "entrypoint" in steps:
        entrypoint_boot(a, r, imgs)
    if "net" in steps:
        two_guests(a, r, imgs)
    log(f"rootfs: {a.arch} total {time.monotonic() - t0:.0f} s")
    log(f"{r.passed} passed, {r.failed} failed")
    return 0 if r.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
