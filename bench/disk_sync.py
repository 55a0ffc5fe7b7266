#!/usr/bin/env python3
"""What a durable write costs on this disk, as the ingest journal makes one.

Writes a preallocated, already written file around the page cache
(O_DIRECT), as the journal does, and times, medians of --count:
  - a write of --size bytes, then the fdatasync after it;
  - a 4 KiB write and its fdatasync, to see the flush's fixed cost;
  - a write of --size bytes with RWF_DSYNC (one call: write and flush).

On one association every instance waits for its record's write and sync,
so these bound the ack path from below. The file is removed at the end;
run it where the archive keeps its data (`--dir`).
"""
import argparse
import mmap
import os
import statistics
import time

BLOCK = 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=".", help="folder on the disk to measure")
    ap.add_argument("--size", type=int, default=512 * 1024, help="bytes per record")
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    size = -(-args.size // BLOCK) * BLOCK
    path = os.path.join(args.dir, f".disk_sync.{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_DIRECT, 0o600)
    try:
        os.posix_fallocate(fd, 0, size * args.count)
        # O_DIRECT needs aligned memory: an anonymous mapping is page-aligned.
        record = mmap.mmap(-1, size)
        record.write(b"x" * size)
        small = mmap.mmap(-1, BLOCK)
        small.write(b"y" * BLOCK)
        # Written once first, as the journal zero-fills its segments, so that
        # no measured write allocates blocks.
        for i in range(args.count):
            os.pwrite(fd, record, i * size)
        os.fdatasync(fd)

        write, sync, small_sync, dsync = [], [], [], []
        for i in range(args.count):
            t0 = time.perf_counter()
            os.pwrite(fd, record, i * size)
            t1 = time.perf_counter()
            os.fdatasync(fd)
            write.append(t1 - t0)
            sync.append(time.perf_counter() - t1)
        for i in range(args.count):
            t0 = time.perf_counter()
            os.pwrite(fd, small, i * size)
            os.fdatasync(fd)
            small_sync.append(time.perf_counter() - t0)
        for i in range(args.count):
            t0 = time.perf_counter()
            os.pwritev(fd, [record], i * size, os.RWF_DSYNC)
            dsync.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.3f} ms"

    print(f"{size} B O_DIRECT write: {ms(write)}, fdatasync after it: {ms(sync)}")
    print(f"4096 B O_DIRECT write + fdatasync: {ms(small_sync)}")
    print(f"{size} B O_DIRECT write with RWF_DSYNC: {ms(dsync)}")


if __name__ == "__main__":
    main()
