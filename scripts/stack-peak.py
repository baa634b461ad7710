#!/usr/bin/env python3
"""The firmware's peak stack, measured under QEMU.

    scripts/stack-peak.py ELF [KID:HEX] [--max-start BYTES] [--max-serving BYTES]
    scripts/stack-peak.py --uart ELF [--max-start BYTES] [--max-serving BYTES]
    scripts/stack-peak.py --mqtt PORT [--name NAME] [--mqtt-login USER:PASS] ELF [KID:HEX] [--max-start BYTES] [--max-serving BYTES]

Boots ELF (an `at-embedded-firmware --features net` build) on QEMU's
mps2-an386 with the documented network options, a monitor socket and a
gdb stub socket, held at reset (`-S`). Through the gdb stub it paints the
RAM between the end of .bss and the stack pointer (the top of RAM,
0x20010000, at reset) with 0xA5, and starts the CPU; the runtime zeroes
.bss and leaves the rest. The stack grows down, so once the firmware has
started, the lowest byte above .bss that is no longer 0xA5 (in a RAM dump
through the monitor) is the deepest the stack has been: the start-up
peak. Then it stops the CPU, paints below the stack pointer again and
lets it go on, sends TCP and UDP calls (every calculator outcome, a bad
CRC, garbage that closes the connection, rpc.info and rpc.functions;
authenticated through at-host too when a key is given: `AT_HOST` names
the binary, default target/debug/at-host) and dumps again: the peak
while serving. With `--uart`, ELF is a UART-only build: the start-up
figure is taken once it has answered one `rpc.ping` on its UART (it says
nothing at start), and the serving one after the same calls, a bad CRC
and line noise on the UART. With `--mqtt PORT`, ELF is an MQTT build
(`--features mqtt`, `AT_MQTT_BROKER=10.0.2.2:PORT`, `AT_NAME=NAME`) and a
broker must listen on 127.0.0.1:PORT: the serving figure is taken after
the same calls (and a bad CRC) through the broker, from a minimal MQTT 5
client here (QoS 0, retransmitting each second until answered; logging in
with `--mqtt-login USER:PASS`, client id `stack-peak`); a
`--features net,mqtt` build gets the TCP and UDP traffic too.

Prints the start-up peak, the serving peak and the larger of the two (the
peak after serving: what a board must have), in bytes. With
`--max-start` / `--max-serving` it exits 1 when the start-up peak, or the
peak after serving, is over its budget
(tests/tests/qemu_net.rs and qemu.rs run it so). Needs qemu-system-arm;
every wait is bounded; QEMU is killed on every path.
"""

import argparse
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

RAM_START, RAM_SIZE = 0x2000_0000, 0x1_0000
# What the RAM between .bss and the stack pointer is painted with: not 0,
# since stack frames are often zeroed (a cleared buffer would look unused).
PAINT = 0xA5
PATIENCE = 10.0


def bss_end(elf: bytes) -> int:
    """The highest end of an allocated section in RAM (.data, .bss, ...)."""
    assert elf[:5] == b"\x7fELF\x01", "a 32-bit ELF"
    shoff, = struct.unpack_from("<I", elf, 0x20)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x2E)
    end = RAM_START
    for i in range(shnum):
        sh = shoff + i * shentsize
        _, _, flags, addr, _, size = struct.unpack_from("<IIIIII", elf, sh)
        if flags & 2 and RAM_START <= addr < RAM_START + RAM_SIZE:
            end = max(end, addr + size)
    return end


def free_port(kind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack(">HHIII", 0x4154, flags, seq, len(body), zlib.crc32(body)) + body


def request(seq: int, func: str, *args) -> bytes:
    body = '{"func": "%s", "args": [%s]}' % (func, ", ".join(args))
    return frame(1, seq, body.encode())


def read_frame(s: socket.socket) -> bytes:
    def exactly(n):
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data
    head = exactly(16)
    length, = struct.unpack_from(">I", head, 8)
    return head + exactly(length)


CALLS = [("add", "10", "20"), ("div", "10", "4"), ("div", "1", "0"),
         ("mul", "9223372036854775807", "2"), ("add", "1.5", "2.25"),
         ("rpc.info",), ("rpc.functions",), ("nope",), ("led", "true")]


def traffic(tcp_port: int, udp_port: int):
    """Plain calls that reach every path of the serving loop (a keyed
    firmware answers them `unauthorized`)."""
    calls = CALLS
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=PATIENCE) as s:
        for seq, c in enumerate(calls, start=1):
            s.sendall(request(seq, *c))
            read_frame(s)
        bad = bytearray(request(99, "add", "1", "2"))
        bad[12] ^= 1  # a bad CRC: answered, connection kept
        s.sendall(bytes(bad))
        read_frame(s)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(PATIENCE)
    for i, c in enumerate(calls):
        u.sendto(request(100 + i, *c), ("127.0.0.1", udp_port))
        u.recv(2048)
    u.close()
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=PATIENCE) as s:
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")  # bad magic: reply, then close
        try:
            while s.recv(512):
                pass
        except OSError:
            pass


class Mqtt:
    """A minimal MQTT 5 client: CONNECT, one SUBSCRIBE, QoS 0 PUBLISH."""

    def __init__(self, port: int, client_id: str, login=None):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE)
        cid = client_id.encode()
        # Protocol MQTT 5, Clean Start (and user name and password flags),
        # keep-alive 60 s, no properties.
        flags, tail = 0x02, b""
        if login is not None:
            user, password = (x.encode() for x in login.split(":", 1))
            flags |= 0xC0
            tail = struct.pack(">H", len(user)) + user + struct.pack(">H", len(password)) + password
        self.packet(0x10, b"\x00\x04MQTT\x05" + bytes([flags]) + b"\x00\x3c\x00"
                    + struct.pack(">H", len(cid)) + cid + tail)
        if self.read()[0] >> 4 != 2:
            raise ConnectionError("no CONNACK")

    @staticmethod
    def varint(n: int) -> bytes:
        out = b""
        while True:
            b, n = n & 0x7F, n >> 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def packet(self, first: int, rest: bytes):
        self.s.sendall(bytes([first]) + self.varint(len(rest)) + rest)

    def read(self):
        def exactly(n):
            data = b""
            while len(data) < n:
                chunk = self.s.recv(n - len(data))
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            return data
        first = exactly(1)[0]
        length, shift = 0, 0
        while True:
            b = exactly(1)[0]
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        return first, exactly(length)

    def subscribe(self, topic: str):
        t = topic.encode()
        self.packet(0x82, b"\x00\x01\x00" + struct.pack(">H", len(t)) + t + b"\x00")
        while self.read()[0] >> 4 != 9:
            pass

    def publish(self, topic: str, payload: bytes):
        t = topic.encode()
        self.packet(0x30, struct.pack(">H", len(t)) + t + b"\x00" + payload)

    def next_publish(self, timeout: float):
        """(topic, payload) of the next PUBLISH, or None after timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.s.settimeout(left)
            try:
                first, body = self.read()
            except socket.timeout:
                return None
            if first >> 4 != 3:
                continue
            n, = struct.unpack_from(">H", body, 0)
            topic, i = body[2:2 + n].decode(), 2 + n
            if (first >> 1) & 3:
                i += 2
            plen, shift = 0, 0
            while True:
                b = body[i]
                i += 1
                plen |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
            return topic, body[i + plen:]
        return None

    def call(self, device: str, frame_bytes: bytes) -> bytes:
        me = "stack-peak"
        deadline = time.monotonic() + 3 * PATIENCE
        while time.monotonic() < deadline:
            self.publish(f"at/{device}/req/{me}", frame_bytes)
            got = self.next_publish(1.0)
            if got is not None and got[0] == f"at/{device}/rep/{me}":
                return got[1]
        raise TimeoutError(f"no MQTT reply from {device}")


def mqtt_traffic(port: int, device: str, login=None):
    """The calls of `traffic` through the broker, and a bad CRC."""
    client = Mqtt(port, "stack-peak", login)
    client.subscribe("at/+/rep/stack-peak")
    for seq, c in enumerate(CALLS, start=1):
        client.call(device, request(seq, *c))
    bad = bytearray(request(99, "add", "1", "2"))
    bad[12] ^= 1
    client.call(device, bytes(bad))
    client.s.close()


def at_host_calls(tcp_port: int, udp_port: int, key: str):
    """Authenticated calls through at-host (section 9 in full): the hello,
    sealed requests, checked replies, on TCP and UDP."""
    at_host = os.environ.get("AT_HOST", "target/debug/at-host")
    runs = []
    for args in (["add", "10", "20"], ["div", "1", "0"], ["mul", "6", "7"], ["div", "10", "4"]):
        for transport in ([], ["--udp"]):
            port = udp_port if transport else tcp_port
            runs.append(subprocess.run(
                [at_host, "call", *transport, "--server", f"127.0.0.1:{port}", "--key", key,
                 *args], capture_output=True, timeout=PATIENCE))
    for verb in ("info", "list"):
        runs.append(subprocess.run(
            [at_host, verb, "--server", f"127.0.0.1:{tcp_port}", "--key", key],
            capture_output=True, timeout=PATIENCE))
    # Every call answered (div by zero exits 1 with the server's error).
    if any(r.returncode not in (0, 1) for r in runs) or runs[0].stdout != b"30\n":
        raise RuntimeError("the authenticated calls failed: " +
                           "; ".join(r.stderr.decode(errors="replace").strip() for r in runs))


def dump(monitor: str, ebss: int) -> int:
    """The stack's high-water mark, from a RAM dump through the monitor."""
    out = tempfile.NamedTemporaryFile(suffix=".bin", delete=False).name
    os.unlink(out)
    with socket.socket(socket.AF_UNIX) as m:
        m.settimeout(PATIENCE)
        m.connect(monitor)
        m.sendall(f'pmemsave 0x{RAM_START:x} {RAM_SIZE} "{out}"\n'.encode())
        deadline = time.monotonic() + PATIENCE
        while not (os.path.exists(out) and os.path.getsize(out) == RAM_SIZE):
            if time.monotonic() > deadline:
                raise TimeoutError("no RAM dump from the QEMU monitor")
            time.sleep(0.05)
    ram = open(out, "rb").read()
    os.unlink(out)
    low = ebss - RAM_START
    deepest = next((i for i in range(low, RAM_SIZE) if ram[i] != PAINT), RAM_SIZE)
    return RAM_SIZE - deepest


class Gdb:
    """Just enough of QEMU's gdb stub (the GDB remote protocol, with acks)
    to stop the CPU, read SP, write RAM and let the CPU go on."""

    def __init__(self, path: str):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(PATIENCE)
        deadline = time.monotonic() + PATIENCE
        while True:  # QEMU makes the socket as it starts
            try:
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.buf = b""

    def _byte(self) -> bytes:
        if not self.buf:
            self.buf = self.s.recv(4096)
            if not self.buf:
                raise ConnectionError("the gdb stub closed")
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def _reply(self) -> bytes:
        """The next `$data#cs` packet (acknowledged); acks before it skipped."""
        while self._byte() != b"$":
            pass
        data = b""
        while (b := self._byte()) != b"#":
            data += b
        self._byte(), self._byte()  # the checksum
        self.s.sendall(b"+")
        return data

    def command(self, data: str) -> bytes:
        packet = data.encode()
        self.s.sendall(b"$%s#%02x" % (packet, sum(packet) % 256))
        return self._reply()

    def stop(self):
        self.s.sendall(b"\x03")
        self._reply()  # the stop reply (T05...)

    def sp(self) -> int:
        regs = self.command("g")
        return int.from_bytes(bytes.fromhex(regs[13 * 8:14 * 8].decode()), "little")

    def write(self, addr: int, data: bytes):
        for at in range(0, len(data), 1024):
            chunk = data[at:at + 1024]
            if self.command(f"M{addr + at:x},{len(chunk):x}:{chunk.hex()}") != b"OK":
                raise RuntimeError("the gdb stub refused a memory write")

    def go_on(self):
        packet = b"c"
        self.s.sendall(b"$c#%02x" % (sum(packet) % 256))
        self.s.close()


def paint(gdb_path: str, ebss: int, running: bool):
    """Paints the RAM between .bss and the stack pointer (nothing lives
    there) with PAINT, stopping the CPU first if it is `running`, and lets
    it go: the next dump shows how deep the stack went from then on."""
    gdb = Gdb(gdb_path)
    try:
        if running:
            gdb.stop()
        sp = gdb.sp()
        if not ebss <= sp <= RAM_START + RAM_SIZE:
            raise RuntimeError(f"SP 0x{sp:08x} is not in the stack's RAM")
        gdb.write(ebss, bytes([PAINT]) * (sp - ebss))
    finally:
        gdb.go_on()


class Uart:
    """QEMU's stdio, which is the board's UART0, read with deadlines."""

    def __init__(self, qemu: subprocess.Popen):
        self.qemu = qemu

    def send(self, data: bytes):
        self.qemu.stdin.write(data)
        self.qemu.stdin.flush()

    def exactly(self, n: int) -> bytes:
        deadline = time.monotonic() + PATIENCE
        data = b""
        while len(data) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.qemu.stdout], [], [], left)[0]:
                raise TimeoutError("no reply on the UART")
            chunk = os.read(self.qemu.stdout.fileno(), n - len(data))
            if not chunk:
                raise ConnectionError("QEMU closed the UART")
            data += chunk
        return data

    def read_frame(self) -> bytes:
        head = self.exactly(16)
        length, = struct.unpack_from(">I", head, 8)
        return head + self.exactly(length)

    def call(self, frame_bytes: bytes) -> bytes:
        self.send(frame_bytes)
        return self.read_frame()


def uart_traffic(uart: Uart):
    """The calls of `traffic` on the UART (a UART-only build), a bad CRC,
    and line noise before a good frame (the noise is answered once, then
    the stream is resynchronised and the frame answered)."""
    for seq, c in enumerate(CALLS, start=1):
        uart.call(request(seq, *c))
    bad = bytearray(request(99, "add", "1", "2"))
    bad[12] ^= 1
    uart.call(bytes(bad))
    uart.call(b"noise!" + request(100, "add", "1", "2"))
    uart.read_frame()


def first_line(qemu: subprocess.Popen) -> str:
    """The firmware's first UART line, waited for at most PATIENCE."""
    deadline = time.monotonic() + PATIENCE
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([qemu.stdout], [], [], left)[0]:
            break
        byte = os.read(qemu.stdout.fileno(), 1)
        if not byte:
            break
        line += byte
    return line.decode(errors="replace").strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("elf")
    parser.add_argument("key", nargs="?", help="KID:HEX, for a build with AT_KEY")
    parser.add_argument("--max-start", type=int, metavar="BYTES",
                        help="exit 1 if the start-up peak is over BYTES")
    parser.add_argument("--max-serving", type=int, metavar="BYTES",
                        help="exit 1 if the peak after serving is over BYTES")
    parser.add_argument("--uart", action="store_true",
                        help="a UART-only build: start-up is measured after one "
                             "rpc.ping answered, serving over the UART")
    parser.add_argument("--mqtt", type=int, metavar="PORT",
                        help="an MQTT build: calls through the broker on 127.0.0.1:PORT")
    parser.add_argument("--mqtt-login", metavar="USER:PASS",
                        help="log in to the broker (a password file and ACL)")
    parser.add_argument("--name", default="mps2-an386",
                        help="the MQTT build's AT_NAME (default mps2-an386)")
    args = parser.parse_args()
    ebss = bss_end(open(args.elf, "rb").read())
    tcp_port, udp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    sockets = tempfile.mkdtemp()
    monitor = os.path.join(sockets, "monitor.sock")
    gdb = os.path.join(sockets, "gdb.sock")
    nic = (f"user,model=lan9118,hostfwd=tcp:127.0.0.1:{tcp_port}-:16724,"
           f"hostfwd=udp:127.0.0.1:{udp_port}-:16724")
    qemu = subprocess.Popen(
        ["qemu-system-arm", "-machine", "mps2-an386", "-cpu", "cortex-m4", "-nographic",
         "-monitor", f"unix:{monitor},server=on,wait=off",
         "-gdb", f"unix:{gdb},server=on,wait=off", "-S", "-nic", nic, "-kernel", args.elf],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        # QEMU waits at reset (-S): paint below the initial SP (the top of
        # RAM), then start. The runtime zeroes .bss and leaves the rest.
        paint(gdb, ebss, running=False)
        if args.uart:
            # No line to wait for: the first answer says it has started.
            uart = Uart(qemu)
            uart.call(request(1, "rpc.ping"))
            start = dump(monitor, ebss)
            paint(gdb, ebss, running=True)
            uart_traffic(uart)
        else:
            line = first_line(qemu)
            if "listening on" not in line:
                print(f"stack-peak: the firmware said {line!r}", file=sys.stderr)
                return 1
            start = dump(monitor, ebss)
            paint(gdb, ebss, running=True)
            if args.mqtt is not None:
                mqtt_traffic(args.mqtt, args.name, args.mqtt_login)
            if args.mqtt is None or "port 16724" in line:
                traffic(tcp_port, udp_port)
            if args.key is not None and args.mqtt is None:
                at_host_calls(tcp_port, udp_port, args.key)
        serving = dump(monitor, ebss)
    finally:
        qemu.kill()
        qemu.wait()
        for path in (monitor, gdb):
            try:
                os.unlink(path)
            except OSError:
                pass
        try:
            os.rmdir(sockets)
        except OSError:
            pass
    print(f"end of static RAM 0x{ebss:08x} ({ebss - RAM_START} bytes)")
    peak = max(start, serving)
    print(f"peak stack after start-up: {start} bytes")
    print(f"peak stack while serving:  {serving} bytes")
    print(f"peak stack after serving:  {peak} bytes")
    over = [f"{what} {got} bytes > budget {budget}"
            for what, got, budget in (("start-up", start, args.max_start),
                                      ("after serving", peak, args.max_serving))
            if budget is not None and got > budget]
    if over:
        print("stack-peak: over budget: " + "; ".join(over), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
