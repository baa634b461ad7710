#!/usr/bin/env python3
"""calc_client with keys (contract section 9) against the Python server.

    python3 test_auth_interop.py [--client PATH] [--server AT_RPC]

Starts the installed Python peer's `at-rpc serve` (pip install
./peers/python; --server or $AT_RPC names the command) on 127.0.0.1 (TCP and UDP, port 0)
twice: once with the key `demo` (authentication required) and once without
keys. Then runs calc_client over TCP and UDP: add 10 20 -> 30, div 1 0 ->
exit 1 division_by_zero, an unknown key id -> exit 1 unauthorized, the
right key id with a wrong key -> exit 3 (the server's proof does not
verify), no key against the keyed server -> exit 1 unauthorized, a key
against the server without keys -> exit 1 unauthorized; and the key
options: --key-file (mode 600; 644 refused), AT_KEY, malformed keys (exit
2). No key material may appear in any output.

Standard library only. Prints one line per check and "N passed, M failed"
last; exits 1 on any failure.
"""

import argparse
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KEY_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
WRONG_HEX = "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
KEY = "demo:" + KEY_HEX
SECRETS = (KEY_HEX, WRONG_HEX, KEY_HEX.upper(), KEY_HEX[:63])


class Server:
    """at-rpc serve on loopback, port 0, TCP and UDP."""

    def __init__(self, command, keys, log_path):
        cmd = [command, "serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]
        for key in keys:
            cmd += ["--key", key]
        self.log = open(log_path, "wb")
        env = dict(os.environ)
        env.pop("AT_KEY", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     env=env)
        self.tcp = self.udp = None
        deadline = time.monotonic() + 15
        buf = b""
        while self.tcp is None or self.udp is None:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server {cmd} did not start; see {log_path}")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                continue
            buf += chunk
            for line in buf.decode("utf-8", "replace").splitlines():
                m = re.match(r"listening on (tcp|udp)://127\.0\.0\.1:(\d+)", line)
                if m:
                    setattr(self, m.group(1), m.group(2))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


class Checks:
    def __init__(self, client):
        self.client = client
        self.passed = 0
        self.failed = 0

    def run(self, name, args, rc, stdout=None, stderr=None, env=None,
            not_in_stderr=()):
        """Runs calc_client ARGS; checks the exit status, stdout (exact) and
        stderr (a regex searched), and that no key material is printed."""
        full_env = dict(os.environ)
        full_env.pop("AT_KEY", None)
        full_env.pop("AT_TIMEOUT_MS", None)
        full_env.update(env or {})
        try:
            p = subprocess.run([self.client] + args, capture_output=True,
                               env=full_env, timeout=60)
        except subprocess.TimeoutExpired:
            self.report(name, False, "did not finish in 60 s")
            return
        out = p.stdout.decode("utf-8", "replace")
        err = p.stderr.decode("utf-8", "replace")
        problems = []
        if p.returncode != rc:
            problems.append(f"exit {p.returncode}, want {rc}")
        if stdout is not None and out != stdout:
            problems.append(f"stdout {out!r}, want {stdout!r}")
        if stderr is not None and not re.search(stderr, err):
            problems.append(f"stderr does not match {stderr!r}")
        for secret in SECRETS:
            if secret in out or secret in err:
                problems.append("key material in the output")
                break
        for text in not_in_stderr:
            if text in err:
                problems.append(f"stderr contains {text!r}")
        if problems:
            detail = "; ".join(problems) + f"\n    stdout: {out!r}\n    stderr: {err!r}"
            self.report(name, False, detail)
        else:
            self.report(name, True)

    def report(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}: {detail}")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--client", default=os.path.join(HERE, "calc_client"))
    ap.add_argument("--server", default=os.environ.get("AT_RPC") or "at-rpc",
                    help="the at-rpc command (default $AT_RPC, else at-rpc on PATH)")
    opts = ap.parse_args()
    client = os.path.abspath(opts.client)
    if not os.access(client, os.X_OK):
        print(f"no calc_client at {client} (run make first)")
        print("0 passed, 1 failed")
        return 1

    tmp = tempfile.mkdtemp(prefix="at_auth_interop.")
    servers = []
    checks = Checks(client)
    try:
        keyed = Server(opts.server, [KEY], os.path.join(tmp, "keyed.log"))
        servers.append(keyed)
        open_srv = Server(opts.server, [], os.path.join(tmp, "open.log"))
        servers.append(open_srv)

        good_file = os.path.join(tmp, "good.keys")
        with open(good_file, "w") as f:
            f.write(f"# the client's key\n\ndemo {KEY_HEX}\nother {WRONG_HEX}\n")
        os.chmod(good_file, 0o600)
        open_file = os.path.join(tmp, "open.keys")
        shutil.copy(good_file, open_file)
        os.chmod(open_file, 0o644)

        for transport in ("tcp", "udp"):
            flag = ["--udp"] if transport == "udp" else []
            kport = getattr(keyed, transport)
            oport = getattr(open_srv, transport)
            host = "127.0.0.1"
            t = transport

            checks.run(f"{t}: --key add 10 20 -> 30",
                       flag + ["--key", KEY, host, kport, "add", "10", "20"], 0, "30\n", "^$")
            checks.run(f"{t}: --key div 10 4 -> 2.5",
                       flag + ["--key", KEY, host, kport, "div", "10", "4"], 0, "2.5\n")
            checks.run(f"{t}: --key div 1 0 -> division_by_zero",
                       flag + ["--key", KEY, host, kport, "div", "1", "0"], 1, "",
                       r"^error: division_by_zero: division by zero\n$")
            checks.run(f"{t}: --key=KID:HEX form",
                       flag + ["--key=" + KEY, host, kport, "mul", "6", "7"], 0, "42\n")
            checks.run(f"{t}: unknown key id -> unauthorized",
                       flag + ["--key", "nobody:" + KEY_HEX, host, kport, "add", "10", "20"],
                       1, "", r"^error: unauthorized: ")
            # TCP: `error: unauthorized`, exit 1, as at-host and Python;
            # UDP: the bad hello counts as not received: timed out, exit 3.
            checks.run(f"{t}: right key id, wrong key -> proof fails",
                       flag + ["--key", "demo:" + WRONG_HEX, host, kport, "add", "10", "20"],
                       3 if flag else 1, "",
                       r"proof does not verify" if flag else
                       r"^error: unauthorized: the server's proof does not verify",
                       env={"AT_TIMEOUT_MS": "1500"})
            checks.run(f"{t}: no key against the keyed server -> unauthorized",
                       flag + [host, kport, "add", "10", "20"], 1, "",
                       r"^error: unauthorized: ")
            checks.run(f"{t}: a key against a server without keys -> unauthorized",
                       flag + ["--key", KEY, host, oport, "add", "10", "20"], 1, "",
                       r"^error: unauthorized: ")
            checks.run(f"{t}: no key, server without keys -> 30 (unchanged)",
                       flag + [host, oport, "add", "10", "20"], 0, "30\n", "^$")
            checks.run(f"{t}: AT_KEY -> 30",
                       flag + [host, kport, "add", "10", "20"], 0, "30\n",
                       env={"AT_KEY": KEY})
            checks.run(f"{t}: --key-file (mode 600, first key) -> 30",
                       flag + ["--key-file", good_file, host, kport, "add", "10", "20"],
                       0, "30\n")
            checks.run(f"{t}: --key wins over AT_KEY",
                       flag + ["--key", KEY, host, kport, "add", "1", "2"], 0, "3\n",
                       env={"AT_KEY": "nobody:" + WRONG_HEX})

        k = keyed.tcp
        checks.run("--key-file readable by group and others -> refused (exit 2)",
                   ["--key-file", open_file, "127.0.0.1", k, "add", "10", "20"], 2, "",
                   r"group or others have access.*chmod 600")
        checks.run("--key-file missing -> exit 2",
                   ["--key-file", os.path.join(tmp, "none.keys"), "127.0.0.1", k, "add",
                    "1", "2"], 2, "", r"cannot open")
        checks.run("--key with 63 hex digits -> exit 2",
                   ["--key", "demo:" + KEY_HEX[:63], "127.0.0.1", k, "add", "1", "2"], 2,
                   "", r"--key: a key is 64 hex digits, this one has 63 characters")
        checks.run("--key with a bad hex digit -> exit 2",
                   ["--key", "demo:" + KEY_HEX[:63] + "g", "127.0.0.1", k, "add", "1", "2"],
                   2, "", r"--key: a key is hex digits only")
        checks.run("--key with a bad key id -> exit 2",
                   ["--key", "de/mo:" + KEY_HEX, "127.0.0.1", k, "add", "1", "2"], 2, "",
                   r"--key: the key id \(before ':'\) must be 1 to 32")
        checks.run("--key without KID: -> exit 2",
                   ["--key", KEY_HEX, "127.0.0.1", k, "add", "1", "2"], 2, "",
                   r"KID:HEX")
        checks.run("--key and --key-file -> exit 2",
                   ["--key", KEY, "--key-file", good_file, "127.0.0.1", k, "add", "1", "2"],
                   2, "", r"not both")
        checks.run("--key without a value -> exit 2", ["--key"], 2, "", r"needs a value")
        checks.run("malformed AT_KEY -> exit 2",
                   ["127.0.0.1", k, "add", "1", "2"], 2, "", r"AT_KEY: a key is 64 hex",
                   env={"AT_KEY": "demo:" + KEY_HEX[:63]})
        checks.run("empty AT_KEY: no key",
                   ["127.0.0.1", open_srv.tcp, "add", "1", "2"], 0, "3\n",
                   env={"AT_KEY": ""})
    except RuntimeError as e:
        checks.report("servers start", False, str(e))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
