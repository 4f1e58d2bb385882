#!/usr/bin/env python3
"""`smkernel agent` (facade/agent-cli.c, over the library's client) against the host-built
agent served on a unix socket: ping, exec with stdin, stdout, stderr and exit statuses, a
signal forwarded, cp both ways, errors.

usage: test_agent_cli.py SMKERNEL AGENT   (SMK_TEST_WRAPPER: a command prefix, e.g. qemu-aarch64)
"""
import fcntl
import os
import pty
import random
import select
import struct
import termios
import shutil
import signal
import subprocess
import sys
import tempfile
import time

smkernel, agent = sys.argv[1], sys.argv[2]
wrapper = os.environ.get("SMK_TEST_WRAPPER", "").split()
failed = 0


def check(cond, what, detail=""):
    global failed
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        failed += 1


d = tempfile.mkdtemp(prefix="smk-agent-cli-")
sock = os.path.join(d, "a.sock")
srv = subprocess.Popen(wrapper + [agent, "serve", "--listen", "unix:" + sock],
                       stderr=subprocess.DEVNULL)
for _ in range(500):
    if os.path.exists(sock):
        break
    time.sleep(0.02)


def cli(args, stdin=b"", timeout=60):
    return subprocess.run(wrapper + [smkernel, "agent", "--connect", "unix:" + sock] + args,
                          input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


try:
    p = cli(["ping"])
    check(p.returncode == 0 and b"proto=2 negotiated=2" in p.stdout, "ping", p)

    data = random.randbytes(3 << 20)
    p = cli(["exec", "--", "sh", "-c", "cat; echo err >&2; exit 7"], stdin=data)
    check(p.returncode == 7, "exec exits with the command's status", p.returncode)
    check(p.stdout == data, "exec streams 3 MiB of stdin back through stdout", len(p.stdout))
    check(p.stderr == b"err\n", "exec passes stderr", p.stderr[-200:])

    p = cli(["exec", "--env", "X=42", "--cwd", "/tmp", "--", "sh", "-c", "echo $X $(pwd)"])
    check(p.returncode == 0 and p.stdout == b"42 /tmp\n", "exec --env --cwd", p)

    p = cli(["exec", "--", "sh", "-c", "kill -TERM $$"])
    check(p.returncode == 128 + signal.SIGTERM, "killed by a signal: 128+N", p.returncode)

    p = cli(["exec", "--", "/nonexistent/cmd"])
    check(p.returncode == 127 and b"No such file" in p.stderr, "command not found: 127", p)

    # A signal to the CLI reaches the command.
    proc = subprocess.Popen(wrapper + [smkernel, "agent", "--connect", "unix:" + sock, "exec", "--",
                                       "sh", "-c", "trap 'echo got-int; exit 3' INT; sleep 30 >/dev/null 2>&1 & wait"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    check(proc.returncode == 3 and b"got-int" in out, "SIGINT forwarded to the command",
          (proc.returncode, out, err))

    # --tty from a terminal: the local one goes raw, the remote one gets its size, and a
    # SIGWINCH after a local resize reaches it.
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 90, 0, 0))
    proc = subprocess.Popen(wrapper + [smkernel, "agent", "--connect", "unix:" + sock, "exec",
                                       "--tty", "--env", "PS1=smk$ ", "--", "sh", "-i"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""

    def until(want, t=20):
        global seen
        end = time.time() + t
        while want not in seen and time.time() < end:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        return want in seen

    ok = until(b"smk$ ")
    os.write(master, b"stty size\r")
    ok = ok and until(b"30 90")
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 44, 120, 0, 0))
    proc.send_signal(signal.SIGWINCH)  # what the kernel sends the foreground group
    time.sleep(1)
    seen = b""
    os.write(master, b"stty size\r")
    ok = ok and until(b"44 120")
    os.write(master, b"exit 5\r")
    try:
        rc = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    os.close(master)
    check(ok and rc == 5, "exec --tty: remote size from the local terminal, SIGWINCH resize, exit",
          (rc, seen[-300:]))

    local = os.path.join(d, "in.bin")
    with open(local, "wb") as f:
        f.write(data[:100000])
    p = cli(["cp", "--mode", "0600", local, ":" + os.path.join(d, "guest.bin")])
    check(p.returncode == 0 and os.stat(os.path.join(d, "guest.bin")).st_mode & 0o7777 == 0o600,
          "cp into the guest, with its mode", p)
    p = cli(["cp", ":" + os.path.join(d, "guest.bin"), "-"])
    check(p.returncode == 0 and p.stdout == data[:100000], "cp out of the guest", p.returncode)
    p = cli(["cp", ":/nonexistent/file", "-"])
    check(p.returncode == 1 and b"No such file" in p.stderr, "cp of a missing file fails", p)

    p = subprocess.run(wrapper + [smkernel, "agent", "--connect", "unix:" + d + "/none", "ping"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    check(p.returncode == 1 and b"connect" in p.stderr, "unreachable agent: 1", p)
    p = subprocess.run(wrapper + [smkernel, "agent", "ping"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    check(p.returncode == 2 and b"--connect" in p.stderr, "usage error: 2", p)

    p = cli(["shutdown"])
    check(p.returncode == 0, "shutdown (test mode: the agent stops)", p)
    try:
        srv.wait(timeout=10)
        check(True, "agent stopped after shutdown")
    except subprocess.TimeoutExpired:
        check(False, "agent stopped after shutdown", "still running")
finally:
    if srv.poll() is None:
        srv.kill()
        srv.wait()
    shutil.rmtree(d, ignore_errors=True)

print(f"{failed} failed")
sys.exit(1 if failed else 0)
