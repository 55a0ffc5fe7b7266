#!/usr/bin/env python3
"""Slide-viewer tile benchmark: WADO-RS frames of a whole-slide image, Tessera
vs Orthanc + orthanc-dicomweb, on this machine, in one run.

    python3 bench/tiles.py --tessera-bin target/release/tessera [--out results.md]
                           [--tiles 4096] [--tile 256] [--clients 6] [--seconds 20]

One VL Whole Slide Microscopy instance of --tiles JPEG tiles (bench/make_wsi.py,
TILED_FULL) is stored in each server (Tessera: STOW-RS; Orthanc: POST
/instances), each on a fresh data directory. Then --clients threads (a
browser opens 6 connections per host) each keep one HTTP/1.1 connection and
ask for random single frames, as a slide viewer panning over the slide does,
for --seconds: GET .../frames/{n} with

    Accept: multipart/related; type="application/octet-stream"; transfer-syntax=*

(the JPEG bitstream as stored; both servers answer it). Every answer's size is
checked against the stored tile. Reported: tiles/s, latency p50/p95, server
CPU per tile, and the client-bound limit (tiles divided by this script's own
CPU seconds: no server can show more with this client). A second Tessera row
uses dicom-microscopy-viewer's own Accept header (type="image/jpeg").
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pydicom
import requests
from pydicom.encaps import generate_frames

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dicomweb as dw  # noqa: E402  (start_orthanc, wait_http)
import ingest as ing  # noqa: E402  (Server, free_port, proc_cpu_seconds, log)

HOST = ing.HOST
log = ing.log
ACCEPT_AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
ACCEPT_VIEWER = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'


def start_tessera(args, run_dir: str):
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    dp, hp = ing.free_port(), ing.free_port()
    cmd = [args.tessera_bin, "serve", "--data-dir", data, "--dicom-bind", f"{HOST}:{dp}",
           "--http-bind", f"{HOST}:{hp}", "--hl7-bind", "off"]
    srv = ing.Server("Tessera", "TESSERA", cmd, data, dp, hp, os.path.join(run_dir, "tessera.log"))
    srv.start()
    root = f"http://{HOST}:{hp}/dicom-web"
    dw.wait_http(root + "/studies?limit=1", srv, args.startup_timeout)
    return srv, root


def store(name: str, srv, root: str, path: str) -> float:
    body = open(path, "rb").read()
    t0 = time.monotonic()
    if name == "Tessera":
        boundary = "bench-boundary"
        payload = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
                   + f"\r\n--{boundary}--\r\n".encode())
        r = requests.post(root + "/studies", data=payload, timeout=600, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
    else:
        r = requests.post(f"http://{HOST}:{srv.http_port}/instances", data=body, timeout=600)
    if r.status_code != 200:
        raise ing.BenchError(f"{name}: storing the slide: HTTP {r.status_code} {r.text[:200]}")
    return time.monotonic() - t0


def fetch_tiles(args, port: int, path: str, frames: int, sizes: list[int], accept: str):
    """Each client: one connection, random frames, until the deadline."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = [0.0]
    start = threading.Barrier(args.clients + 1)

    def client(seed: int):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        mine = []
        start.wait()
        while time.monotonic() < deadline[0]:
            n = rng.randrange(1, frames + 1)
            t0 = time.perf_counter()
            conn.request("GET", f"{path}/frames/{n}", headers={"Accept": accept})
            resp = conn.getresponse()
            body = resp.read()
            mine.append(time.perf_counter() - t0)
            # The part holds the tile as stored, plus multipart framing.
            if resp.status != 200 or not (sizes[n - 1] <= len(body) <= sizes[n - 1] + 1024):
                with lock:
                    errors.append(f"frame {n}: HTTP {resp.status}, {len(body)} bytes, "
                                  f"tile is {sizes[n - 1]}")
                break
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    deadline[0] = t0 + args.seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return latencies, errors, elapsed, time.process_time() - cpu0


def measure(args, name: str, srv, root: str, path: str, frames: int, sizes: list[int], accept: str):
    prefix = root.split(f":{srv.http_port}", 1)[1]
    # Warm-up: every tile once, so neither server reads cold files.
    fetch_tiles(argparse.Namespace(clients=args.clients, seconds=3.0), srv.http_port,
                prefix + path, frames, sizes, accept)
    cpu0 = ing.proc_cpu_seconds(srv.proc.pid)
    lat, errors, elapsed, client_cpu = fetch_tiles(args, srv.http_port, prefix + path, frames, sizes, accept)
    server_cpu = ing.proc_cpu_seconds(srv.proc.pid) - cpu0
    if errors:
        raise ing.BenchError(f"{name}: {errors[0]}")
    lat.sort()
    return {
        "tiles_per_s": len(lat) / elapsed,
        "p50_ms": 1000 * statistics.median(lat),
        "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
        "server_cpu_ms": 1000 * server_cpu / len(lat),
        "client_limit": len(lat) / client_cpu if client_cpu else float("inf"),
        "tiles": len(lat),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", required=True)
    ap.add_argument("--orthanc-bin", default="/usr/sbin/Orthanc")
    ap.add_argument("--tiles", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--startup-timeout", type=float, default=60.0)
    ap.add_argument("--out")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tessera-tiles-")
    slide = os.path.join(work, "slide.dcm")
    subprocess.run([sys.executable, os.path.join(HERE, "make_wsi.py"), slide, "--tiles", str(args.tiles),
                    "--tile", str(args.tile)], check=True, capture_output=True)
    ds = pydicom.dcmread(slide)
    frames = int(ds.NumberOfFrames)
    sizes = [len(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    mb = os.path.getsize(slide) / 1e6
    log(f"slide: {frames} tiles of {args.tile}x{args.tile}, {mb:.0f} MB, mean tile {statistics.mean(sizes):.0f} B")

    rows = []
    for name in ("Tessera", "Orthanc"):
        run_dir = os.path.join(work, name.lower())
        os.makedirs(run_dir)
        if name == "Tessera":
            srv, root = start_tessera(args, run_dir)
        else:
            target = dw.start_orthanc(args, run_dir)
            srv, root = target.srv, target.root
        try:
            stored = store(name, srv, root, slide)
            log(f"{name}: stored in {stored:.1f} s")
            result = measure(args, name, srv, root, path, frames, sizes, ACCEPT_AS_STORED)
            rows.append((name, "as stored (octet-stream, transfer-syntax=*)", result))
            log(f"{name}: {result['tiles_per_s']:.0f} tiles/s")
            if name == "Tessera":
                result = measure(args, name, srv, root, path, frames, sizes, ACCEPT_VIEWER)
                rows.append((name, "dicom-microscopy-viewer's Accept (image/jpeg)", result))
                log(f"{name} (image/jpeg): {result['tiles_per_s']:.0f} tiles/s")
        finally:
            srv.stop()

    ratio = rows[0][2]["tiles_per_s"] / rows[-1][2]["tiles_per_s"]
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; slide: {frames} JPEG tiles of "
        f"{args.tile}x{args.tile} ({mb:.0f} MB) in one instance; {args.clients} clients, "
        f"{args.seconds:.0f} s each, random frames.",
        "",
        "| Server | Accept | tiles/s | p50 ms | p95 ms | server CPU per tile | client-bound limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, accept, r in rows:
        lines.append(f"| {name} | {accept} | {r['tiles_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
                     f"| {r['server_cpu_ms']:.2f} ms | {r['client_limit']:.0f} tiles/s |")
    lines += ["", f"Tessera / Orthanc (as stored): **{ratio:.1f}x**."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
