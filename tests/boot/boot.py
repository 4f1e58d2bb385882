#!/usr/bin/env python3
"""Boot a guest kernel + initramfs under qemu and drive the agent through the
host-built supermachine-agent's client mode.

    boot.py --arch x86_64|aarch64 --kernel K --initramfs I --client AGENT
            [--cmdline-file F] [--append EXTRA] [--qemu BIN] [--accel tcg|kvm]
            [--smp N] [--mem MB] [--repeat N] [--smpark] [--timeout S] [--keep]
            [--baseline INIT] [--no-tcg-extras]

Every step prints one line, PASS or FAIL. The last line of the output is always
"N passed, N failed". Exit status 0 only if every step passed; a test that
cannot run (no qemu, no kernel, ...) FAILS with a message, it never skips.
See tests/boot/README.md. Python 3 standard library only.
"""
import argparse
import os
import random
import re
import shlex
import shutil
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT_CMDLINE = {
    "x86_64": "console=ttyS0 reboot=t panic=-1 quiet 8250.nr_uarts=1 pci=off",
    "aarch64": "console=ttyAMA0 panic=-1 quiet",
}
QEMU = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT_NAME = "smk.agent"
VSOCK_LOOPBACK = "vsock:1:5000"   # VMADDR_CID_LOCAL, the agent's vsock port
TEST_FILE = "/tmp/smk-test"
SMPARK_KO = "/lib/modules/smpark.ko"
BASELINE_MARK = b"SMK-INIT-MARKER uptime "   # what assets/kernel/test-init.c prints first thing


def host_tsc_khz():
    """The host's TSC rate in kHz (x86_64 hosts with constant_tsc only), else None.

    Under TCG the guest's TSC is the host's (qemu returns the host's rdtsc), so
    tsc_early_khz=<this> replaces the guest's PIT-based TSC calibration, which
    fails now and then on a busy host (the kernel then drops the TSC and runs a
    150 ms delay-loop calibration). rdtsc is run through ctypes (8 bytes of
    machine code in an executable mapping): standard library only."""
    if platform.machine() != "x86_64":
        return None
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
        if " constant_tsc" not in flags:
            return None
        import ctypes
        import mmap
        code = bytes.fromhex("0f3148c1e2204809d0c3")  # rdtsc; shl rdx,32; or rax,rdx; ret
        m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(m)))

        def pair():
            # (monotonic ns, TSC) read back to back; keep the tightest of a few tries
            best = None
            for _ in range(20):
                c0 = rdtsc()
                t = time.monotonic_ns()
                c1 = rdtsc()
                if best is None or c1 - c0 < best[0]:
                    best = (c1 - c0, t, (c0 + c1) // 2)
            return best[1], best[2]

        t0, c0 = pair()
        time.sleep(0.05)
        t1, c1 = pair()
        khz = (c1 - c0) * 1e6 / (t1 - t0)
        return int(round(khz)) if khz > 100000 else None
    except Exception:
        return None


def tcg_extras(a):
    """Kernel command line words a VMM should add when it runs the guest under TCG.

    They are not in the shipped command line (assets/kernel/cmdline-ARCH), which
    is for KVM/HVF; see assets/kernel/README.md ("Extras for TCG").
    x86_64: TCG has no TSC-deadline timer, so the kernel calibrates the local
    APIC timer against the PIT (~0.2 s, fixed: 2 x 100 ms); with one vCPU
    noapictimer skips it and the PIT drives the (one-shot capable) tick.
    tsc_early_khz= skips the PIT-based TSC calibration (see host_tsc_khz)."""
    if a.accel != "tcg" or a.arch != "x86_64":
        return []
    words = []
    if a.smp == 1:
        words.append("noapictimer")
    khz = host_tsc_khz()
    if khz:
        words.append(f"tsc_early_khz={khz}")
    return words


def newc(entries):
    """A newc cpio archive from (name, mode, data) entries; a device is (name, mode, (major, minor))."""
    out = bytearray()
    ino = 1
    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        rmaj = rmin = 0
        if isinstance(data, tuple):
            rmaj, rmin = data
            data = b""
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, rmaj, rmin, len(nb), 0))
        out += hdr.encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
        ino += 1
    return bytes(out)


def write_baseline_cpio(init, path):
    with open(init, "rb") as f:
        data = f.read()
    entries = [("dev", 0o40755, b""), ("dev/console", 0o20600, (5, 1)), ("init", 0o100755, data),
               ("proc", 0o40755, b"")]
    with open(path, "wb") as f:
        f.write(newc(entries))


class StepFailed(Exception):
    pass


class Abort(Exception):
    """The boot cannot continue (qemu died, preflight failed)."""


def fmt_s(ns):
    return f"{ns / 1e9:.3f} s"


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, step, msg):
        self.passed += 1
        print(f"PASS {step}: {msg}", flush=True)

    def fail(self, step, msg):
        self.failed += 1
        print(f"FAIL {step}: {msg}", flush=True)


class Client:
    """The host-side agent client: AGENT client unix:SOCK COMMAND ..."""

    def __init__(self, exe, sock, timeout, verbose):
        self.exe = exe
        self.addr = f"unix:{sock}"
        self.timeout = timeout
        self.verbose = verbose

    def run(self, args, stdin=None, timeout=None):
        argv = [self.exe, "client", self.addr] + args
        if self.verbose:
            print("  $ " + " ".join(shlex.quote(a) for a in argv), flush=True)
        t = timeout if timeout is not None else self.timeout
        try:
            p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=t + 10)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"client did not return within {t + 10} s: {' '.join(args)}")
        except OSError as e:
            raise StepFailed(f"cannot run the client {self.exe}: {e}")
        return p

    @staticmethod
    def describe(p):
        err = p.stderr.decode(errors="replace").strip()
        out = p.stdout.decode(errors="replace").strip()
        s = f"exit {p.returncode}"
        if out:
            s += f", stdout {out[-300:]!r}"
        if err:
            s += f", stderr {err[-300:]!r}"
        return s


def parse_kv(text):
    """Pulls key=value / key: value pairs out of the client's output."""
    kv = {}
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*(\S+)", text):
        kv.setdefault(m.group(1), m.group(2))
    return kv


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "(no log)"
    lines = data.decode(errors="replace").splitlines()
    return "\n".join(lines[-n:]) if lines else "(empty)"


def full_cmdline(a):
    return " ".join([a.cmdline] + a.extras + ([a.append] if a.append else []))


def build_qemu(a, workdir, sock, console, initramfs=None):
    cmdline = full_cmdline(a)
    accel = a.accel
    argv = [a.qemu]
    if a.arch == "x86_64":
        argv += ["-M", "microvm,acpi=off"]
        cpu = ["-cpu", "host"] if accel == "kvm" else []
    else:
        argv += ["-M", "virt"]
        cpu = ["-cpu", "host" if accel == "kvm" else "cortex-a57"]
    if a.icount:
        # Guest time becomes instruction count (shift=0: 1 ns per instruction); idle time
        # jumps to the next timer instead of following the host's clock.
        argv += ["-icount", "shift=0,sleep=off"]
    argv += cpu + [
        "-accel", accel if accel != "tcg" or not a.tcg_thread else f"tcg,thread={a.tcg_thread}",
        "-smp", str(a.smp), "-m", str(a.mem),
        "-no-reboot", "-nographic", "-monitor", "none", "-nic", "none",
        "-serial", f"file:{console}",
        "-kernel", a.kernel, "-initrd", initramfs or a.initramfs, "-append", cmdline,
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
        "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
    ]
    return argv


class Boot:
    def __init__(self, a, res, index):
        self.a = a
        self.res = res
        self.index = index
        self.tag = f"[boot {index}] " if a.repeat > 1 else ""
        self.dir = tempfile.mkdtemp(prefix="smk-boot-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.console = os.path.join(self.dir, "console.log")
        self.qemu_log = os.path.join(self.dir, "qemu.log")
        self.client = Client(a.client, self.sock, a.timeout, a.verbose)
        self.proc = None
        self.ready_ns = None
        self.host_ready_ns = None

    # -- helpers -----------------------------------------------------------
    def step(self, name, fn):
        try:
            msg = fn()
        except StepFailed as e:
            self.res.fail(self.tag + name, str(e))
            raise
        self.res.ok(self.tag + name, msg)

    def alive(self):
        if self.proc.poll() is not None:
            raise StepFailed(f"qemu exited early with status {self.proc.returncode}")

    def exec(self, argv, stdin=None):
        self.alive()
        p = self.client.run(["exec", "--"] + argv, stdin=stdin)
        return p

    # -- steps -------------------------------------------------------------
    def start(self):
        argv = build_qemu(self.a, self.dir, self.sock, self.console)
        if self.a.verbose:
            print("  $ " + " ".join(shlex.quote(x) for x in argv), flush=True)
        self.t0 = time.monotonic_ns()
        with open(self.qemu_log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)

    def s_ping(self):
        p = self.client.run(["ping", "--wait", str(max(1, round(self.a.timeout)))])
        t1 = time.monotonic_ns()
        if p.returncode != 0:
            self.alive()
            raise StepFailed("no answer: " + Client.describe(p))
        kv = parse_kv(p.stdout.decode(errors="replace"))
        if "ready_ns" not in kv:
            raise StepFailed("ping reply without ready_ns: " + Client.describe(p))
        self.ready_ns = int(kv["ready_ns"])
        self.host_ready_ns = t1 - self.t0
        ver = kv.get("version", "?")
        return (f"agent {ver} ready at guest uptime {fmt_s(self.ready_ns)} (ready_ns={self.ready_ns}); "
                f"host start->ready {fmt_s(self.host_ready_ns)}")

    def s_uname(self):
        if self.a.arch == "x86_64":
            tries = [["/bin/uname", "-m"], ["/bin/busybox", "uname", "-m"]]
        else:
            tries = [["/bin/guest-tool", "uname", "-m"]]
        last = None
        for argv in tries:
            p = self.exec(argv)
            out = p.stdout.decode(errors="replace").strip()
            if p.returncode == 0 and out == self.a.arch:
                return f"{' '.join(argv)} -> {out}"
            last = f"{' '.join(argv)}: " + Client.describe(p)
            if p.returncode == 0:
                break  # it ran, and said something else
        raise StepFailed(f"expected {self.a.arch!r}; {last}")

    def s_vsock(self):
        argv = ["/sbin/supermachine-agent", "client", VSOCK_LOOPBACK, "ping"]
        p = self.exec(argv)
        out = p.stdout.decode(errors="replace")
        kv = parse_kv(out)
        if p.returncode != 0 or "version" not in kv:
            raise StepFailed(f"{' '.join(argv)}: " + Client.describe(p))
        return f"in-guest client -> {VSOCK_LOOPBACK}: agent {kv['version']}"

    def s_file(self):
        data = random.randbytes(100 * 1024)
        p = self.client.run(["write", TEST_FILE], stdin=data)
        if p.returncode != 0:
            self.alive()
            raise StepFailed(f"write {TEST_FILE}: " + Client.describe(p))
        p = self.client.run(["read", TEST_FILE])
        if p.returncode != 0:
            self.alive()
            raise StepFailed(f"read {TEST_FILE}: " + Client.describe(p))
        if p.stdout != data:
            raise StepFailed(f"read back {len(p.stdout)} bytes, they differ from the {len(data)} written")
        return f"wrote and read back {len(data)} random bytes at {TEST_FILE}"

    def tool(self, *args, check=True):
        p = self.exec(["/bin/guest-tool"] + list(args))
        if check and p.returncode != 0:
            raise StepFailed(f"guest-tool {' '.join(args)}: " + Client.describe(p))
        return p.stdout.decode(errors="replace").strip()

    def s_smpark(self):
        # Interface: assets/smpark/README.md (/sys/kernel/smpark/{park,parked,cpus}).
        park, parked, cpus = SMPARK_SYSFS + "/park", SMPARK_SYSFS + "/parked", SMPARK_SYSFS + "/cpus"
        want = self.a.smp - 1
        phase = ["insmod"]

        def at(name):
            phase[0] = name

        try:
            self.tool("insmod", SMPARK_KO)
            at("read park after insmod")
            st = self.tool("cat", park)
            if st != "0":
                raise StepFailed(f"{park} reads {st!r}, expected '0'")
            at("park (write 1)")
            t0 = time.monotonic()
            self.tool("write", park, "1")
            dt = time.monotonic() - t0
            at("read state while parked")
            st, n = self.tool("cat", park), self.tool("cat", parked)
            table = self.tool("cat", cpus)
            states = [ln.split()[1] for ln in table.splitlines() if len(ln.split()) == 2]
            if st != "1" or n != str(want) or states.count("parked") != want or states.count("keeper") != 1:
                raise StepFailed(f"park={st!r} parked={n!r} (want {want}), cpus={table!r}")
            at("ping while parked")
            p = self.client.run(["ping"])
            if p.returncode != 0:
                raise StepFailed(Client.describe(p))
            at("exec while parked")
            m = self.tool("uname", "-m")
            if m != self.a.arch:
                raise StepFailed(f"uname -m said {m!r}")
            at("unpark (write 0)")
            self.tool("write", park, "0")
            at("read state after unpark")
            st, n = self.tool("cat", park), self.tool("cat", parked)
            if st != "0" or n != "0":
                raise StepFailed(f"park={st!r} parked={n!r}")
            at("rmmod")
            self.tool("rmmod", "smpark")
        except StepFailed as e:
            raise StepFailed(f"during {phase[0]}: {e}")
        return (f"insmod, park {want} CPU(s) in {dt * 1e3:.0f} ms (cpus: {' '.join(states)}), "
                f"ping + exec while parked, unpark, rmmod")

    def s_shutdown(self):
        p = self.client.run(["shutdown"])
        if p.returncode != 0:
            self.alive()
            raise StepFailed("shutdown: " + Client.describe(p))
        try:
            rc = self.proc.wait(timeout=self.a.timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"qemu still running {self.a.timeout} s after shutdown")
        if rc != 0:
            raise StepFailed(f"qemu exited with status {rc}")
        return f"qemu exited 0, {fmt_s(time.monotonic_ns() - self.t0)} after start"

    def run(self):
        try:
            self.start()
            self.step("ping", self.s_ping)
            self.step("exec uname -m", self.s_uname)
            self.step("vsock loopback", self.s_vsock)
            self.step("file write/read", self.s_file)
            if self.a.drive and self.a.agent_bench:
                self.step("agent benchmark", V2Steps(self).bench)
            elif self.a.drive:
                v2 = V2Steps(self)
                self.step("v2 ping during a 20 s command", v2.ping_during)
                self.step("v2 ping during a 20 s EXEC", v2.ping_during_exec)
                self.step("v2 stream 64 MiB", v2.stream)
                self.step("v2 stdin 16 MiB", v2.stdin)
                self.step("v2 pty", v2.pty)
                self.step("v2 guest control", v2.control)
                self.step("v2 attach after reconnect", v2.attach)
                self.step("v1 request", v2.v1)
            if self.a.smpark:
                self.step("smpark", self.s_smpark)
            self.step("shutdown", self.s_shutdown)
            return True
        except StepFailed:
            self.report_failure()
            return False
        finally:
            self.kill()
            if self.a.keep:
                print(f"  (kept {self.dir})")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()

    def report_failure(self):
        self.kill()
        print(f"--- serial console (tail of {self.console}) ---")
        print(tail(self.console))
        q = tail(self.qemu_log, 20)
        if q not in ("(empty)", "(no log)"):
            print("--- qemu output ---")
            print(q)
        print("---")


SMPARK_SYSFS = "/sys/kernel/smpark"  # assets/smpark/README.md

# Guest commands of the agent protocol-v2 steps: busybox on x86_64, tests/boot/agent-tool.c
# where there is none (aarch64).
V2_GUEST = {
    "x86_64": {
        "sleep20": ["sleep", "20"],
        "zeros": lambda n: ["head", "-c", str(n), "/dev/zero"],
        "sha256": ["sha256sum"],
        "shell": ["sh", "-i"],
        "size": "stty size",
        "now": ["date", "+%s"],
        "late_echo": ["sh", "-c", "sleep 3; echo late-output"],
    },
    "aarch64": {
        "sleep20": ["/bin/agent-tool", "sleep", "20"],
        "zeros": lambda n: ["/bin/agent-tool", "zeros", str(n)],
        "sha256": ["/bin/agent-tool", "sha256"],
        "shell": ["/bin/agent-tool", "shell"],
        "size": "size",
        "now": ["/bin/agent-tool", "now"],
        "late_echo": ["/bin/agent-tool", "late-echo", "3", "late-output"],
    },
}
STREAM_BYTES = 64 << 20
STDIN_BYTES = 16 << 20
AGENT_PEAK_KIB = 16 << 10   # the agent's connection process after the 64 MiB stream
CLIENT_PEAK_KIB = 16 << 10  # agent-drive, the library client, after it (unsanitized builds)
CLIENT_GROWTH_KIB = 8 << 10  # what the stream may add to the client's peak, in any build


class V2Steps:
    """Protocol-v2 steps through the library's client (tests/boot/agent-drive.c), each a new
    connection to the virtio-serial port."""

    def __init__(self, boot):
        self.b = boot
        self.g = V2_GUEST[boot.a.arch]

    def drive(self, args, timeout=120):
        self.b.alive()
        argv = [self.b.a.drive, f"unix:{self.b.sock}"] + args
        if self.b.a.verbose:
            print("  $ " + " ".join(shlex.quote(x) for x in argv), flush=True)
        # A sanitized build's quarantine would hide the client's own bound: keep it small.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(x for x in (env.get("ASAN_OPTIONS", ""), "quarantine_size_mb=1") if x)
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                               env=env)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"agent-drive {args[0]} did not return within {timeout} s")
        if p.returncode != 0:
            raise StepFailed(f"agent-drive {' '.join(args)}: " + Client.describe(p))
        return p.stdout.decode(errors="replace"), parse_kv(p.stdout.decode(errors="replace"))

    def ping_during(self):
        out, kv = self.drive(["ping-during", "--"] + self.g["sleep20"])
        if float(kv["ping_max_ms"]) > 2000 or kv["exit"] != "signal:15":
            raise StepFailed(out.strip())
        return (f"3 pings answered in at most {kv['ping_max_ms']} ms while a 20 s command ran "
                f"(virtio-serial); SIGTERM reported as exit by signal 15")

    def ping_during_exec(self):
        out, kv = self.drive(["ping-during-exec", "--"] + self.g["sleep20"])
        if float(kv["ping_max_ms"]) > 2000:
            raise StepFailed(out.strip())
        return (f"3 pings answered in at most {kv['ping_max_ms']} ms while a batch EXEC of a 20 s "
                f"command ran on the same virtio-serial connection")

    def stream(self):
        out, kv = self.drive(["stream", str(STREAM_BYTES), "--"] + self.g["zeros"](STREAM_BYTES),
                             timeout=600)
        agent, client = int(kv["agent_hwm_kib"]), int(kv["client_maxrss_kib"])
        # VmHWM comes from RSS counters the kernel syncs lazily: a few pages either way.
        growth = max(0, client - int(kv["client_before_kib"]))
        sanitized = self.b.a.sanitized
        if (int(kv["bytes"]) != STREAM_BYTES or agent > AGENT_PEAK_KIB or growth > CLIENT_GROWTH_KIB
                or (not sanitized and client > CLIENT_PEAK_KIB)):
            raise StepFailed(f"{out.strip()} (bounds: agent {AGENT_PEAK_KIB} KiB, client "
                             f"{CLIENT_PEAK_KIB} KiB unsanitized, client growth {CLIENT_GROWTH_KIB} KiB)")
        return (f"{STREAM_BYTES >> 20} MiB streamed in {kv['seconds']} s ({kv['mib_per_s']} MiB/s); "
                f"peak RSS: agent connection process {agent} KiB (bound {AGENT_PEAK_KIB}), "
                f"client {client} KiB (bound {CLIENT_PEAK_KIB}{', not applied: sanitized build' if sanitized else ''}), "
                f"of which the stream added {growth} KiB (bound {CLIENT_GROWTH_KIB})")

    def stdin(self):
        data = random.randbytes(STDIN_BYTES)
        path = os.path.join(self.b.dir, "stdin.bin")
        with open(path, "wb") as f:
            f.write(data)
        out, kv = self.drive(["stdin", path, "--"] + self.g["sha256"], timeout=600)
        import hashlib
        want = hashlib.sha256(data).hexdigest()
        got = kv.get("out", "")
        if got != want:
            raise StepFailed(f"guest sha256 {got!r}, host {want}")
        return f"{STDIN_BYTES >> 20} MiB streamed to the guest's stdin in {kv['seconds']} s; sha256 equal ({want[:16]}...)"

    def pty(self):
        out, kv = self.drive(["pty", self.g["size"], "--"] + self.g["shell"])
        return f"{' '.join(self.g['shell'])} on a pty: prompt, answer, '{self.g['size']}' 24 80, resized to 40x100 and seen, exit 3"

    def control(self):
        out, kv = self.drive(["control", "--"] + self.g["now"])
        return ("clock set to 2030-01-01 and read back; entropy added and CRNG reseeded; lo: "
                "10.123.0.2/24, fd00:123::2/64, routes 10.124.0.0/16 and default via 10.123.0.1, "
                "fd00:124::/64 dev lo, MTU 60000 (seen in /proc/net, /sys); hostname, resolv.conf, hosts written and read back")

    def attach(self):
        out, kv = self.drive(["detach", "--"] + self.g["late_echo"])
        proc = kv["proc"]
        out, kv = self.drive(["attach", proc])
        if kv.get("out") != "late-output":
            raise StepFailed(f"attached to process {proc}, got {out.strip()!r}")
        return (f"process {proc} spawned by one client, taken over by the next (ATTACH): its "
                f"later output and exit 0 arrived")

    def bench(self):
        n = self.b.a.agent_bench
        size = 16 << 20
        out, kv = self.drive(["bench", str(n)], timeout=1200)
        s_out, s_kv = self.drive(["stream", str(size), "--"] + self.g["zeros"](size), timeout=1200)
        argv = ["/sbin/supermachine-agent", "client", VSOCK_LOOPBACK, "bench", str(n), "--"] + \
            self.g["zeros"](size)
        p = self.b.exec(argv)
        if p.returncode != 0:
            raise StepFailed("in-guest bench over vsock loopback: " + Client.describe(p))
        v = parse_kv(p.stdout.decode(errors="replace"))
        vs = int(v["stream_ns"]) / 1e9
        unit = "guest ns = instructions (icount shift=0)" if self.b.a.icount else "guest ns"
        return (f"{unit}. vsock loopback (in-guest client, medians of {n}): ping {int(v['ping_ns_median']):,}, "
                f"spawn+wait of a static command {int(v['true_ns_median']):,}, stream {size >> 20} MiB "
                f"{int(v['stream_ns']):,} ({size / (1 << 20) / vs:.1f} MiB per guest s). "
                f"virtio-serial (host client; the guest's clock is no instruction count there: "
                f"with sleep=off it leaps to the next timer whenever the guest waits for the host), "
                f"host wall clock: ping median {kv['ping_median_ms']} ms, spawn+wait median "
                f"{kv['true_median_ms']} ms, stream {s_kv['mib_per_s']} MiB/s")

    def v1(self):
        out, kv = self.drive(["v1"])
        return "a protocol-1 PING frame answered with a protocol-1 PING_REPLY"


class BaselineBoot:
    """The same kernel, command line and machine, with an initramfs holding only
    a static /init (assets/kernel/test-init.c) that prints its /proc/uptime
    first thing and reboots: what the kernel alone costs."""

    def __init__(self, a, res, index):
        self.a = a
        self.res = res
        self.tag = f"[baseline {index}] " if a.repeat > 1 else "[baseline] "
        self.dir = tempfile.mkdtemp(prefix="smk-baseline-")
        self.console = os.path.join(self.dir, "console.log")
        self.qemu_log = os.path.join(self.dir, "qemu.log")
        self.proc = None
        self.uptime_s = None

    def run(self):
        argv = build_qemu(self.a, self.dir, os.path.join(self.dir, "agent.sock"), self.console,
                          initramfs=self.a.baseline_cpio)
        if self.a.verbose:
            print("  $ " + " ".join(shlex.quote(x) for x in argv), flush=True)
        t0 = time.monotonic_ns()
        try:
            with open(self.qemu_log, "wb") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             start_new_session=True)
            deadline = time.monotonic() + self.a.timeout
            host_ns = None
            while time.monotonic() < deadline:
                try:
                    with open(self.console, "rb") as f:
                        data = f.read()
                except OSError:
                    data = b""
                i = data.find(BASELINE_MARK)
                if i >= 0 and b"\n" in data[i:]:
                    host_ns = time.monotonic_ns() - t0
                    m = re.match(rb"([0-9.]+)", data[i + len(BASELINE_MARK):])
                    if m:
                        self.uptime_s = float(m.group(1))
                    break
                if self.proc.poll() is not None:
                    break
                time.sleep(0.005)
            if self.uptime_s is None:
                self.res.fail(self.tag + "init", "no uptime marker from the baseline /init "
                              f"(qemu {'exited ' + str(self.proc.returncode) if self.proc.poll() is not None else 'timed out'})")
                print(f"--- serial console (tail of {self.console}) ---\n{tail(self.console)}\n---")
                return False
            try:
                rc = self.proc.wait(timeout=self.a.timeout)
            except subprocess.TimeoutExpired:
                rc = None
            self.res.ok(self.tag + "init", f"/init ran at guest uptime {self.uptime_s:.3f} s; host start->/init "
                        f"{fmt_s(host_ns)}; qemu exited {rc}")
            return True
        finally:
            if self.proc and self.proc.poll() is None:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)


def preflight(a):
    """Everything the test needs; returns a list of problems."""
    bad = []
    if not a.qemu:
        a.qemu = QEMU[a.arch]
    q = shutil.which(a.qemu)
    if not q:
        bad.append(f"qemu not found: {a.qemu} (Debian: apt-get install "
                   f"{'qemu-system-x86' if a.arch == 'x86_64' else 'qemu-system-arm'})")
    else:
        a.qemu = q
    for what, path in (("kernel", a.kernel), ("initramfs", a.initramfs), ("client", a.client)):
        if not path:
            bad.append(f"no {what} given")
        elif not os.path.isfile(path):
            bad.append(f"{what} not found: {path}")
        elif os.path.getsize(path) == 0:
            bad.append(f"{what} is empty: {path}")
    if a.client and os.path.isfile(a.client) and not os.access(a.client, os.X_OK):
        bad.append(f"client is not executable: {a.client}")
    if a.accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        bad.append("--accel kvm but /dev/kvm is not usable")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["x86_64", "aarch64"])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initramfs", required=True)
    ap.add_argument("--client", required=True, help="the host-built supermachine-agent (client mode)")
    ap.add_argument("--agent-bench", type=int, metavar="N",
                    help="with --drive: instead of the v2 steps, benchmark the agent (N pings and "
                    "N spawns of a static command, a 16 MiB stream) over virtio-serial from the host and over "
                    "vsock loopback inside the guest")
    ap.add_argument("--icount", action="store_true",
                    help="qemu -icount shift=0,sleep=off (TCG, one thread): guest time counts "
                    "instructions")
    ap.add_argument("--sanitized", action="store_true",
                    help="agent-drive is built with sanitizers: its absolute memory bound is not "
                    "applied (its growth during the stream still is)")
    ap.add_argument("--drive", help="tests/boot/agent-drive (the library's client): run the "
                    "protocol-v2 steps")
    ap.add_argument("--cmdline-file", help="kernel command line (default: assets/kernel/cmdline-ARCH "
                    "if it exists, else a built-in one)")
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--qemu", help="qemu binary (default qemu-system-ARCH)")
    ap.add_argument("--accel", default=os.environ.get("SMK_BOOT_ACCEL") or "tcg", choices=["tcg", "kvm"],
                    help="default: $SMK_BOOT_ACCEL or tcg")
    ap.add_argument("--smp", type=int)
    ap.add_argument("--mem", type=int, default=256, help="MiB (default 256)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--smpark", action="store_true", help="also test smpark.ko (aarch64)")
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds for the agent to come up, for each request, and for qemu to "
                         "exit after shutdown (default 60)")
    ap.add_argument("--baseline", metavar="INIT",
                    help="also boot the same kernel, command line and machine with an initramfs holding "
                         "only INIT as /init (a static assets/kernel/test-init.c), interleaved with the "
                         "agent boots, and report both medians and their ratio")
    ap.add_argument("--tcg-thread", choices=["single", "multi"],
                    help="qemu's TCG threading (-accel tcg,thread=...); default: qemu's (multi)")
    ap.add_argument("--no-tcg-extras", action="store_true",
                    help="do not add the TCG-only command line words (x86_64: noapictimer with one vCPU, "
                         "tsc_early_khz=<host TSC>)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (console log, socket)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the commands")
    a = ap.parse_args()
    if a.smp is None:
        a.smp = 2 if a.arch == "aarch64" else 1
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if a.icount:
        if a.accel != "tcg":
            ap.error("--icount needs TCG")
        a.tcg_thread = "single"

    res = Results()
    bad = preflight(a)
    if a.smpark and a.smp < 2:
        bad.append("--smpark needs --smp 2 or more (there must be a vCPU to park)")
    if not a.cmdline_file:
        f = os.path.join(REPO, "assets", "kernel", f"cmdline-{a.arch}")
        a.cmdline_file = f if os.path.isfile(f) else None
    if a.baseline:
        if not os.path.isfile(a.baseline) or os.path.getsize(a.baseline) == 0:
            bad.append(f"--baseline init not found or empty: {a.baseline}")
    a.extras = [] if a.no_tcg_extras else tcg_extras(a)
    if a.cmdline_file:
        try:
            with open(a.cmdline_file) as f:
                a.cmdline = " ".join(f.read().split())
        except OSError as e:
            bad.append(f"cannot read --cmdline-file: {e}")
            a.cmdline = ""
    else:
        a.cmdline = DEFAULT_CMDLINE[a.arch]
    if bad:
        for b in bad:
            res.fail("preflight", b)
        print(f"{res.passed} passed, {res.failed} failed")
        return 1

    print(f"boot: {a.arch} accel={a.accel} smp={a.smp} mem={a.mem}M qemu={a.qemu}")
    print(f"boot: kernel={a.kernel} initramfs={a.initramfs}")
    print(f"boot: cmdline={full_cmdline(a)} ({a.cmdline_file or 'built-in default'}"
          f"{'; TCG extras: ' + ' '.join(a.extras) if a.extras else ''}"
          f"{'; --append: ' + a.append if a.append else ''})", flush=True)

    ready, host, base = [], [], []
    ok = True
    tmp = None
    if a.baseline:
        tmp = tempfile.mkdtemp(prefix="smk-baseline-cpio-")
        a.baseline_cpio = os.path.join(tmp, "baseline.cpio")
        write_baseline_cpio(a.baseline, a.baseline_cpio)
        print(f"boot: baseline initramfs: /init = {a.baseline}", flush=True)
    for i in range(1, a.repeat + 1):
        if a.baseline:
            bb = BaselineBoot(a, res, i)
            if not bb.run():
                ok = False
                break
            base.append(bb.uptime_s)
        b = Boot(a, res, i)
        if not b.run():
            ok = False
            break
        ready.append(b.ready_ns)
        host.append(b.host_ready_ns)

    if a.repeat > 1 and ready:
        def stats(v):
            return (f"median {fmt_s(statistics.median(v))}, min {fmt_s(min(v))}, max {fmt_s(max(v))}")
        print(f"boot: {len(ready)} boots: guest ready_ns {stats(ready)} "
              f"(median ready_ns={int(statistics.median(ready))})")
        print(f"boot: {len(host)} boots: host start->ready {stats(host)}")
    if base and ready:
        bm, rm = statistics.median(base), statistics.median(ready) / 1e9
        print(f"boot: {len(base)} baseline boots: guest uptime at /init median {bm:.3f} s, "
              f"min {min(base):.3f} s, max {max(base):.3f} s")
        print(f"boot: agent-ready median {rm:.3f} s vs baseline /init median {bm:.3f} s: "
              f"ratio {rm / bm:.2f}, difference {rm - bm:.3f} s")
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{res.passed} passed, {res.failed} failed")
    return 0 if ok and res.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
