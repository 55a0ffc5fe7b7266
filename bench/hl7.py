#!/usr/bin/env python3
"""HL7 v2 ingest benchmark: ADT messages over MLLP, acknowledged after the
commit, on 1 and on 8 connections, against a fresh Tessera.

usage: bench/hl7.py --tessera-bin target/release/tessera [--messages N]
       [--connections 1,8] [--mix mixed|adt|orders]

Each connection sends its share of N messages one after the other, waiting
for each acknowledgement (as an interface engine does). A third of the
messages admit a new patient (A01 with PV1), a third update one (A08), and
a third are new orders (ORM^O01) that schedule worklist steps. Prints messages
per second, the server's CPU per message and the senders' CPU (the
client-bound limit).
"""
import argparse
import multiprocessing
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time


MIX = "mixed"


def message(n):
    """With --mix mixed (the default), a third admit a new patient (A01 with PV1), a third update one (A08),
    and a third are new orders (ORM^O01 NW with one ORC/OBR group) that
    schedule a worklist step for that patient."""
    kind = {"mixed": n % 3, "adt": n % 2, "orders": 2}[MIX]
    patient = n // 3 if MIX == "mixed" else n // 2
    if kind == 2:
        return (
            f"MSH|^~\\&|RIS|GENERAL|TESSERA|RAD|20261201000000||ORM^O01^ORM_O01|B{n}|P|2.5.1||||||UNICODE UTF-8\r"
            f"PID|1||P{patient}^^^GENERAL^MR||Nguyễn^Văn {patient}^^^Mr||19800214|M\r"
            f"ORC|NW|PL{n}|FL{n}||SC||^^^20261205093000^^R||20261201000000|||1234^Lê^Thị Hồng||||||CT01\r"
            f"OBR|1|PL{n}|FL{n}|CTCHEST^CT Chest^LOCAL||||||||||||1234^Lê^Thị Hồng||ACC{n}|RP{n}|SPS{n}||||CT\r"
        ).encode("utf-8")
    trigger = "A01" if kind == 0 else "A08"
    return (
        f"MSH|^~\\&|HIS|GENERAL|TESSERA|RAD|20261201000000||ADT^{trigger}^ADT_A01|B{n}|P|2.5||||||UNICODE UTF-8\r"
        f"EVN|{trigger}|20261201000000\r"
        f"PID|1||P{patient}^^^GENERAL^MR||Nguyễn^Văn {patient}^^^Mr||19800214|M|||"
        f"12 Lý Thường Kiệt^^Hà Nội^^100000^VN\r"
        f"PV1|1|I|RAD^201^A^GENERAL||||1234^Trần^Bình||||||||||||V{patient}\r"
    ).encode("utf-8")


def sender(args):
    port, numbers = args
    start = resource.getrusage(resource.RUSAGE_SELF)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ok = 0
    for n in numbers:
        s.sendall(b"\x0b" + message(n) + b"\x1c\r")
        reply = b""
        while not reply.endswith(b"\x1c\r"):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            reply += chunk
        ok += b"MSA|AA|" in reply
    s.close()
    end = resource.getrusage(resource.RUSAGE_SELF)
    return ok, (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(binary):
    """A fresh Tessera on free ports: (process, MLLP port, data dir)."""
    data = tempfile.mkdtemp(prefix="tessera-hl7-")
    server = subprocess.Popen(
        [binary, "--data-dir", data, "--dicom-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0",
         "--hl7-bind", "127.0.0.1:0", "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = server.stdout.readline()
    return server, int(line.split("hl7=")[1].split()[0].rsplit(":", 1)[1]), data


def run(binary, messages, connections):
    server, port, data = start(binary)
    shards = [(port, list(range(i, messages, connections))) for i in range(connections)]
    cpu0 = cpu_seconds(server.pid)
    t0 = time.perf_counter()
    with multiprocessing.Pool(connections) as pool:
        results = pool.map(sender, shards)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(server.pid) - cpu0
    server.terminate()
    server.wait()
    shutil.rmtree(data, ignore_errors=True)
    ok = sum(r[0] for r in results)
    client = sum(r[1] for r in results)
    return ok, wall, cpu, client


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tessera-bin", required=True)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--connections", default="1,8")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mix", choices=["mixed", "adt", "orders"], default="mixed",
                   help="mixed: A01, A08 and ORM^O01 in turn; adt: A01 and A08; orders: ORM^O01 only")
    args = p.parse_args()
    global MIX
    MIX = args.mix
    print("| connections | messages/s | AA | server CPU / message | sender CPU / message | client-bound limit |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in [int(x) for x in args.connections.split(",")]:
        runs = sorted((run(args.tessera_bin, args.messages, c) for _ in range(args.repeat)),
                      key=lambda r: r[1])
        ok, wall, cpu, client = runs[len(runs) // 2]
        n = args.messages
        print(f"| {c} | {n / wall:.0f} | {ok}/{n} | {1e6 * cpu / n:.0f} µs | {1e6 * client / n:.0f} µs "
              f"| {n / client:.0f} msg/s |")


if __name__ == "__main__":
    main()
