#!/usr/bin/env python3
"""Context switches of a Tessera server per HL7 message, over all its
threads: a measure of hand-offs between threads that does not depend on
how fast the machine is that day. Sends the mixed load of bench/hl7.py.

usage: bench/hl7_switches.py BINARY... [--messages N]
"""
import argparse
import glob
import multiprocessing
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hl7 as load  # noqa: E402  (bench/hl7.py, not the hl7 package)


def switches(pid):
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        with open(status) as f:
            for line in f:
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def run(binary, messages, connections):
    server, port, data = load.start(binary)
    before = switches(server.pid)
    shards = [(port, list(range(i, messages, connections))) for i in range(connections)]
    with multiprocessing.Pool(connections) as pool:
        pool.map(load.sender, shards)
    after = switches(server.pid)
    server.terminate()
    server.wait()
    shutil.rmtree(data, ignore_errors=True)
    return (after - before) / messages


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binaries", nargs="+")
    p.add_argument("--messages", type=int, default=3000)
    args = p.parse_args()
    print("| binary | 1 connection | 8 connections |")
    print("|---|---:|---:|")
    for binary in args.binaries:
        one = run(binary, args.messages // 2, 1)
        eight = run(binary, args.messages, 8)
        print(f"| {binary} | {one:.1f} | {eight:.1f} |")


if __name__ == "__main__":
    main()
