#!/usr/bin/env python3
"""DICOMweb benchmark: Tessera vs Orthanc + orthanc-dicomweb on this machine, in one run.

    python3 bench/dicomweb.py --tessera-bin PATH [--out results.md] [--skip-orthanc]
                              [--skip-tessera] [--studies 100000] [--orthanc-studies N]

Measures, for each server (Tessera first, then Orthanc; each on a fresh data
directory in a temp dir, on random 127.0.0.1 ports):

  1. QIDO-RS study search latency, p50/p95 per query kind (target: p95 < 20 ms
     at 100,000 studies). Queries: PatientID, PatientName wildcard, a one-week
     StudyDate range, AccessionNumber; one keep-alive HTTP connection, one
     query at a time, the response body read and parsed as JSON.
     - Tessera: the index is built directly in SQLite with bench/find.py's
       populate() (the same synthetic patients, dates and accession numbers),
       --studies studies with one series of --qido-instances instances each.
     - Orthanc: no such shortcut exists (its index schema is its own), so the
       same synthetic studies are uploaded as small DICOM files (no pixel
       data) through Orthanc's REST API (POST /instances, 4 parallel clients),
       up to --orthanc-studies studies or --orthanc-populate-seconds, whichever
       comes first. The upload rate is measured and reported. When Orthanc
       ends up with fewer studies than Tessera, Tessera is ALSO measured on an
       index of Orthanc's size, and the ratio row uses that equal-size run.
  2. Series metadata of a 1,000-instance series (target: p95 < 50 ms):
     GET /studies/S/series/X/metadata, --metadata-repeats times after one
     untimed warm-up request; the first (cold) request is reported apart.
     The instances are 64x64 MR images stored with STOW-RS.
  3. Frames per second: a series of --ct-instances 512x512 16-bit CT images
     (uncompressed, Explicit VR LE), stored with STOW-RS, read back as
     /frames/1 with Accept: multipart/related; type="application/octet-stream"
     by --clients concurrent clients (threads, one keep-alive connection
     each) for --frames-seconds; every response's size is checked. Run twice:
     with Accept-Encoding: identity (the server's frame path) and with
     gzip, deflate (what browsers and python-requests send; Orthanc then
     gzips every 512 KB frame, which costs it about 100 ms each); gzip
     responses are decompressed and checked too.
     QIDO and metadata requests use python-requests' default
     Accept-Encoding (gzip, deflate), as a browser would.
  4. STOW-RS ingest MB/s: loading that CT series, --stow-clients concurrent
     clients each POSTing batches of --stow-batch instances
     (multipart/related; type="application/dicom").

Every measurement verifies its answers: a wrong frame size, instance count
or HTTP status stops the run (exit 2, partial report); QIDO match counts
that differ from the synthetic data's are marked "wrong results" in the
table (exit 1). Exit 0 when everything was right.
Results go to stdout and --out as Markdown with both servers side by side and
Tessera/Orthanc ratios, plus the machine, load and exact commands.

Query strings are sent with `^ * , -` left literal and only ASCII names are
queried: Orthanc 1.10 does not percent-decode query values (found by
tests/peers/dicomweb_suite.py), and the benchmark must measure the same work
on both servers. Both servers get the same query list (fixed seed).
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import io
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pydicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import find as findbench  # noqa: E402  (populate(), FAMILY, GIVEN, week())
import ingest as ing  # noqa: E402  (Server, free_port, proc_* helpers, log)

HOST = ing.HOST
log = ing.log
BenchError = ing.BenchError
ASCII_FAMILY = [f for f in findbench.FAMILY if f.isascii() and "'" not in f]
ACCEPT_JSON = "application/dicom+json"
ACCEPT_OCTET = 'multipart/related; type="application/octet-stream"'
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


# ------------------------------------------------------------------ helpers

def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def qs(params: dict) -> str:
    return "&".join(f"{k}={quote(str(v), safe='^*,-')}" for k, v in params.items())


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for p in parts:
        out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        out.write(p)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def part10(ds: Dataset) -> bytes:
    b = io.BytesIO()
    pydicom.dcmwrite(b, ds, enforce_file_format=True)
    return b.getvalue()


def base_dataset(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    return ds


def synthetic_studies(studies: int, seed: int = 7):
    """The studies bench/find.py's populate() writes, in the same order and with
    the same random draws: (patient_id, name, date, accession, study_uid,
    series_uid, first_instance_index)."""
    rng = random.Random(seed)
    patients = max(1, studies // 2)
    names = [f"{rng.choice(findbench.FAMILY)}{p % 997}^{rng.choice(findbench.GIVEN)}" for p in range(patients)]
    for s in range(studies):
        p = s % patients
        day = rng.randrange(0, 16 * 365)
        date = time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400))
        yield (f"PID{p:07d}", names[p], date, f"ACC{s:08d}", f"2.25.{10**20 + s}", f"2.25.{2 * 10**20 + s}")


def query_list(studies: int, n: int, seed: int = 11) -> dict[str, list[dict]]:
    """n queries per kind, the same for both servers."""
    rng = random.Random(seed)
    patients = max(1, studies // 2)
    return {
        "PatientID": [{"PatientID": f"PID{rng.randrange(patients):07d}"} for _ in range(n)],
        "PatientName wildcard": [{"PatientName": f"{rng.choice(ASCII_FAMILY)}{rng.randrange(997)}*"}
                                 for _ in range(n)],
        "StudyDate range (1 week)": [{"StudyDate": findbench.week(rng)} for _ in range(n)],
        "AccessionNumber": [{"AccessionNumber": f"ACC{rng.randrange(studies):08d}"} for _ in range(n)],
    }


def expected_matches(studies: int, queries: dict[str, list[dict]]) -> dict[str, float]:
    """Mean match count per kind computed from the synthetic data itself."""
    rows = list(synthetic_studies(studies))
    by_pid, by_acc = {}, set()
    dates = []
    fam = {}
    for pid, name, date, acc, *_ in rows:
        by_pid[pid] = by_pid.get(pid, 0) + 1
        by_acc.add(acc)
        dates.append(date)
        key = name.split("^")[0]
        fam[key] = fam.get(key, 0) + 1
    dates.sort()
    import bisect
    out = {}
    for kind, qlist in queries.items():
        counts = []
        for q in qlist:
            if kind == "PatientID":
                counts.append(by_pid.get(q["PatientID"], 0))
            elif kind == "AccessionNumber":
                counts.append(1 if q["AccessionNumber"] in by_acc else 0)
            elif kind.startswith("StudyDate"):
                a, b = q["StudyDate"].split("-")
                counts.append(bisect.bisect_right(dates, b) - bisect.bisect_left(dates, a))
            else:
                prefix = q["PatientName"].rstrip("*")
                counts.append(sum(c for k, c in fam.items() if k.startswith(prefix)))
        out[kind] = statistics.mean(counts)
    return out


# ------------------------------------------------------------------ servers

@dataclass
class Target:
    name: str
    srv: ing.Server
    root: str           # DICOMweb root URL
    run_dir: str
    config_text: str | None = None


def wait_http(url: str, srv: ing.Server, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not srv.alive():
            raise BenchError(f"{srv.name} exited with code {srv.proc.returncode} during startup; log "
                             f"{srv.log_path}:\n{ing.tail(srv.log_path)}")
        try:
            r = requests.get(url, timeout=5, headers={"Accept": ACCEPT_JSON})
            if r.status_code < 500:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise BenchError(f"{srv.name} did not answer {url} within {timeout}s; log {srv.log_path}:\n"
                     f"{ing.tail(srv.log_path)}")


def start_tessera(args, run_dir: str, studies: int) -> tuple[Target, float]:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    # create the schema, then fill the index directly (as bench/find.py does)
    subprocess.run([args.tessera_run_bin, "--data-dir", data, "stats"], check=True, capture_output=True,
                   env=ing.CHILD_ENV, timeout=120)
    t0 = time.monotonic()
    findbench.populate(os.path.join(data, "index.sqlite"), studies, args.qido_instances)
    build_s = time.monotonic() - t0
    dp, hp = ing.free_port(), ing.free_port()
    cmd = [args.tessera_run_bin, "serve", "--data-dir", data, "--dicom-bind", f"{HOST}:{dp}",
           "--http-bind", f"{HOST}:{hp}"] + shlex.split(args.tessera_args)
    srv = ing.Server("Tessera", "TESSERA", cmd, data, dp, hp, os.path.join(run_dir, "tessera.log"))
    srv.start()
    root = f"http://{HOST}:{hp}{args.tessera_root}"
    wait_http(root + "/studies?limit=1", srv, args.startup_timeout)
    return Target("Tessera", srv, root, run_dir), build_s


def orthanc_config(data: str, hp: int, dp: int) -> dict:
    # Only what must differ from the defaults: paths, ports, no auth (loopback
    # only, RemoteAccessAllowed false), the DICOMweb plugin at /dicom-web/.
    # SyncStorageArea is turned off to make the populate phase affordable; it
    # does not change how queries or reads work, but it does favour Orthanc
    # in the STOW-RS MB/s figure (Tessera keeps its default fsync).
    return {
        "Name": "bench-orthanc",
        "StorageDirectory": os.path.join(data, "storage"),
        "IndexDirectory": os.path.join(data, "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dp,
        "HttpPort": hp,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "SyncStorageArea": False,
        "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "Ssl": False},
    }


def start_orthanc(args, run_dir: str) -> Target:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    dp, hp = ing.free_port(), ing.free_port()
    cfg = orthanc_config(data, hp, dp)
    text = json.dumps(cfg, indent=2)
    cpath = os.path.join(run_dir, "orthanc.json")
    with open(cpath, "w") as f:
        f.write(text)
    srv = ing.Server("Orthanc", "ORTHANC", [args.orthanc_bin, cpath], data, dp, hp,
                     os.path.join(run_dir, "orthanc.log"), config_text=text)
    srv.start()
    wait_http(f"http://{HOST}:{hp}/system", srv, args.startup_timeout)
    return Target("Orthanc", srv, f"http://{HOST}:{hp}/dicom-web", run_dir, config_text=text)


def populate_orthanc(args, t: Target, studies: int) -> tuple[int, float]:
    """Upload the synthetic studies (header-only instances) through POST /instances.
    Returns (studies uploaded, seconds)."""
    base = f"http://{HOST}:{t.srv.http_port}"
    deadline = time.monotonic() + args.orthanc_populate_seconds
    gen = synthetic_studies(studies)
    lock = threading.Lock()
    done = [0]
    errors: list[str] = []
    iid_base = 3 * 10**20

    def worker():
        sess = requests.Session()
        while time.monotonic() < deadline and not errors:
            with lock:
                try:
                    s_index = done[0]
                    row = next(gen)
                    done[0] += 1
                except StopIteration:
                    return
            pid, name, date, acc, suid, seuid = row
            for i in range(args.qido_instances):
                ds = base_dataset(CT_IMAGE)  # fresh: Dataset.copy() would share elements across threads
                ds.Modality, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "CT", "120000", "1", 1
                ds.StudyDescription = "CT study"
                ds.PatientID, ds.PatientName, ds.StudyDate, ds.AccessionNumber = pid, name, date, acc
                ds.StudyInstanceUID, ds.SeriesInstanceUID = suid, seuid
                ds.SOPInstanceUID = f"2.25.{iid_base + s_index * args.qido_instances + i + 1}"
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.InstanceNumber = i + 1
                r = sess.post(base + "/instances", data=part10(ds), timeout=60)
                if r.status_code != 200:
                    errors.append(f"POST /instances: HTTP {r.status_code} {r.text[:200]}")
                    return

    t0 = time.monotonic()
    last = [t0]

    def progress():
        while time.monotonic() < deadline and not stop.is_set():
            stop.wait(30)
            log(f"Orthanc populate: {done[0]} studies, {done[0] / (time.monotonic() - t0):.0f}/s")

    stop = threading.Event()
    threading.Thread(target=progress, daemon=True).start()
    with ThreadPoolExecutor(args.populate_clients) as ex:
        for f in [ex.submit(worker) for _ in range(args.populate_clients)]:
            f.result()
    stop.set()
    if errors:
        raise BenchError(f"Orthanc populate failed: {errors[0]}")
    el = time.monotonic() - t0
    stats = requests.get(base + "/statistics", timeout=30).json()
    got = int(stats["CountStudies"])
    if got != done[0]:
        raise BenchError(f"Orthanc holds {got} studies after uploading {done[0]}")
    del last
    return got, el


# --------------------------------------------------------------- measures

@dataclass
class Result:
    target: str
    metric: str
    value: float | None
    unit: str
    detail: str = ""
    better: str = "lower"      # for the ratio's reading
    size: int | None = None    # index size (studies) for QIDO rows
    ok: bool = True            # False: the answers were wrong (see detail)


def run_qido(t: Target, queries: dict[str, list[dict]], studies: int, expect: dict[str, float] | None,
             label: str) -> list[Result]:
    sess = requests.Session()
    sess.headers["Accept"] = ACCEPT_JSON
    # warm-up: a few queries of each kind, untimed
    for kind, qlist in queries.items():
        for q in qlist[:5]:
            sess.get(f"{t.root}/studies?{qs(q)}", timeout=60)
    out = []
    for kind, qlist in queries.items():
        times, matches = [], []
        for q in qlist:
            t0 = time.perf_counter()
            r = sess.get(f"{t.root}/studies?{qs(q)}", timeout=60)
            body = r.json() if r.content else []
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code not in (200, 204):
                raise BenchError(f"{t.name} QIDO {q}: HTTP {r.status_code} {r.text[:200]}")
            matches.append(len(body))
        mean_m = statistics.mean(matches)
        log(f"{t.name} QIDO {kind}: p50 {statistics.median(times):.1f} ms, p95 {pct(times, 95):.1f} ms, "
            f"mean matches {mean_m:.2f}")
        note = ""
        ok = expect is None or abs(mean_m - expect[kind]) < 1e-6
        if not ok:
            note = f" **(expected {expect[kind]:.2f} matches on average: WRONG RESULTS)**"
            log(f"{t.name} QIDO {kind}: mean matches {mean_m:.2f}, expected {expect[kind]:.2f}")
        detail = f"mean matches {mean_m:.2f}{note}"
        out.append(Result(t.name, f"QIDO {kind} p50 ({label})", statistics.median(times), "ms", detail,
                          size=studies, ok=ok))
        out.append(Result(t.name, f"QIDO {kind} p95 ({label})", pct(times, 95), "ms", detail, size=studies,
                          ok=ok))
    return out


def ct_dataset(study: str, series: str, i: int, rng: np.random.Generator) -> Dataset:
    ds = base_dataset(CT_IMAGE)
    ds.PatientID, ds.PatientName = "BENCHCT", "Bench^CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "CT", "20240101", "120000", 1, i + 1
    ds.ImagePositionPatient = [0, 0, float(i)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.Rows = ds.Columns = 512
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200 ** 2) * 1000
    px = (body + rng.normal(0, 20, (512, 512))).astype("<i2")
    ds.PixelData = px.tobytes()
    return ds


def mr_dataset(study: str, series: str, i: int) -> Dataset:
    ds = base_dataset(MR_IMAGE)
    ds.PatientID, ds.PatientName = "BENCHMR", "Bench^MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "MR", "20240101", "120000", 1, i + 1
    ds.SeriesDescription = "metadata bench"
    ds.ImagePositionPatient = [0, 0, float(i)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1.0, 1.0]
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype="<u2") % 4096).tobytes()
    return ds


def stow(t: Target, files: list[bytes], clients: int, batch: int) -> tuple[float, int]:
    """POST all files in batches with `clients` threads; returns (seconds, bytes sent)."""
    batches = [files[i:i + batch] for i in range(0, len(files), batch)]
    errors: list[str] = []
    it = iter(batches)
    lock = threading.Lock()

    def worker():
        sess = requests.Session()
        while not errors:
            with lock:
                b = next(it, None)
            if b is None:
                return
            body, ctype = multipart(b)
            r = sess.post(f"{t.root}/studies", data=body, headers={"Content-Type": ctype, "Accept": ACCEPT_JSON},
                          timeout=300)
            if r.status_code != 200:
                errors.append(f"STOW-RS: HTTP {r.status_code} {r.text[:300]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        for f in [ex.submit(worker) for _ in range(clients)]:
            f.result()
    el = time.perf_counter() - t0
    if errors:
        raise BenchError(f"{t.name} {errors[0]}")
    return el, sum(len(f) for f in files)


def run_stow_and_frames(args, t: Target) -> list[Result]:
    out = []
    rng = np.random.default_rng(5)
    study, series = generate_uid(), generate_uid()
    log(f"{t.name}: generating {args.ct_instances} 512x512 CT instances")
    cts = [ct_dataset(study, series, i, rng) for i in range(args.ct_instances)]
    files = [part10(d) for d in cts]
    cpu0 = ing.proc_cpu_seconds(t.srv.proc.pid)
    el, nbytes = stow(t, files, args.stow_clients, args.stow_batch)
    cpu = ing.proc_cpu_seconds(t.srv.proc.pid) - cpu0
    out.append(Result(t.name, "STOW-RS ingest", nbytes / 1e6 / el, "MB/s",
                      f"{len(files)} x {len(files[0]) / 1e6:.2f} MB CT in {el:.1f} s, {args.stow_clients} clients, "
                      f"batches of {args.stow_batch}; server CPU {cpu:.1f} s", better="higher"))
    out.append(Result(t.name, "STOW-RS ingest instances/s", len(files) / el, "inst/s", "", better="higher"))
    log(f"{t.name}: STOW-RS {nbytes / 1e6 / el:.1f} MB/s")

    # frames, N concurrent clients
    frame_size = 512 * 512 * 2
    urls = [f"{t.root}/studies/{study}/series/{series}/instances/{d.SOPInstanceUID}/frames/1" for d in cts]
    paths = ["/" + u.split("//", 1)[1].split("/", 1)[1] for u in urls]
    deadline_box = [0.0]
    errors: list[str] = []

    encoding_box = ["identity"]

    host_port = t.root.split("//", 1)[1].split("/", 1)[0]

    def client(seed):
        # http.client rather than requests: about a third of the client CPU
        # per 512 KB frame, so the 2-core box spends less on the client
        r_ = random.Random(seed)
        conn = http.client.HTTPConnection(host_port, timeout=60)
        headers = {"Accept": ACCEPT_OCTET, "Accept-Encoding": encoding_box[0]}
        lat = []
        nbytes_ = 0
        while time.perf_counter() < deadline_box[0] and not errors:
            t0 = time.perf_counter()
            conn.request("GET", r_.choice(paths), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.getheader("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            lat.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200 or len(body) < frame_size:
                errors.append(f"frames: HTTP {resp.status}, {len(body)} bytes "
                              f"({resp.getheader('Content-Type')}) {body[:200]!r}")
                break
            nbytes_ += len(body)
        conn.close()
        return lat, nbytes_

    # warm-up pass: every frame once (page cache, server caches)
    sess = requests.Session()
    sess.headers.update({"Accept": ACCEPT_OCTET, "Accept-Encoding": "identity"})
    for p in urls:
        r = sess.get(p, timeout=60)
        if r.status_code != 200:
            raise BenchError(f"{t.name} frames warm-up: HTTP {r.status_code} {r.text[:200]}")
    # identity: the server's frame path; gzip: what a browser or python-requests
    # sends by default (Orthanc then deflates every binary frame)
    for enc, label in (("identity", "Accept-Encoding: identity"), ("gzip, deflate", "Accept-Encoding: gzip")):
        encoding_box[0] = enc
        with ThreadPoolExecutor(args.clients) as ex:
            ru0 = os.times()
            cpu0 = ing.proc_cpu_seconds(t.srv.proc.pid)
            t0 = time.perf_counter()
            deadline_box[0] = t0 + args.frames_seconds
            results = [f.result() for f in [ex.submit(client, i) for i in range(args.clients)]]
            el = time.perf_counter() - t0
            cpu = ing.proc_cpu_seconds(t.srv.proc.pid) - cpu0
            ru1 = os.times()
        if errors:
            raise BenchError(f"{t.name} {errors[0]}")
        lat = [x for r in results for x in r[0]]
        total = sum(r[1] for r in results)
        client_cpu = (ru1.user - ru0.user) + (ru1.system - ru0.system)
        out.append(Result(t.name, f"frames/s, 512x512 CT, {args.clients} clients, {label}", len(lat) / el,
                          "frames/s",
                          f"{len(lat)} frames in {el:.1f} s, {total / 1e6 / el:.0f} MB/s of frame bytes; latency "
                          f"p50 {statistics.median(lat):.1f} ms p95 {pct(lat, 95):.1f} ms; server CPU {cpu:.1f} s, "
                          f"benchmark client CPU {client_cpu:.1f} s", better="higher"))
        log(f"{t.name}: {len(lat) / el:.0f} frames/s ({label})")
    return out


def run_metadata(args, t: Target) -> list[Result]:
    study, series = generate_uid(), generate_uid()
    files = [part10(mr_dataset(study, series, i)) for i in range(args.series_instances)]
    stow(t, files, args.stow_clients, 50)
    sess = requests.Session()
    sess.headers["Accept"] = ACCEPT_JSON
    url = f"{t.root}/studies/{study}/series/{series}/metadata"
    times = []
    cold = None
    for i in range(args.metadata_repeats + 1):
        # Timed to the last byte of the body: parsing 1.5 MB of JSON in
        # Python costs about as much again and is the client's, not the
        # server's (it is done below, untimed, to check the answer).
        t0 = time.perf_counter()
        r = sess.get(url, timeout=300)
        _ = r.content
        ms = (time.perf_counter() - t0) * 1000
        body = r.json()
        if r.status_code != 200 or len(body) != args.series_instances:
            raise BenchError(f"{t.name} series metadata: HTTP {r.status_code}, "
                             f"{len(body) if isinstance(body, list) else '?'} items, "
                             f"expected {args.series_instances}")
        if i == 0:
            cold = ms
        else:
            times.append(ms)
    size = len(r.content)
    detail = f"{args.series_instances} instances, {size / 1e6:.1f} MB JSON; first request {cold:.0f} ms"
    return [Result(t.name, f"series metadata p50 ({args.series_instances} inst)", statistics.median(times), "ms",
                   detail),
            Result(t.name, f"series metadata p95 ({args.series_instances} inst)", pct(times, 95), "ms", detail)]


# ------------------------------------------------------------------- report

def render(args, results: list[Result], env: dict, notes: list[str]) -> str:
    L = [f"# Tessera vs Orthanc: DICOMweb ({env['date']})", ""]
    L.append(f"Machine: {env['cpus']} CPUs ({env['cpu']}), {env['mem']}, kernel {env['kernel']}; data on "
             f"{env['fs']}; load average before the run {env['load']}. Servers and the benchmark client share "
             "the CPUs.")
    L.append("")
    if env.get("debug_build"):
        L.append("**Warning: the Tessera binary is a debug build; use target/release/tessera for numbers to "
                 "quote.**")
        L.append("")
    for n in notes:
        L.append(f"- {n}")
    if notes:
        L.append("")
    targets = [t for t in ("Tessera", "Orthanc") if any(r.target == t for r in results)]
    metrics: list[str] = []
    for r in results:
        if r.metric not in metrics:
            metrics.append(r.metric)
    cols = targets + (["Tessera/Orthanc"] if len(targets) == 2 else [])
    L.append("| metric | target | " + " | ".join(cols) + " |")
    L.append("|---|---|" + "---:|" * len(cols))
    targets_for = {
        "QIDO": "p95 < 20 ms", "series metadata": "p95 < 50 ms",
    }
    for m in metrics:
        cells, vals = [], []
        for t in targets:
            r = next((x for x in results if x.target == t and x.metric == m), None)
            if r is None or r.value is None:
                cells.append("n/a")
                vals.append(None)
            else:
                cells.append(f"{r.value:.1f} {r.unit}" + ("" if r.ok else " **wrong results**"))
                vals.append(r.value)
        if len(targets) == 2:
            a, b = vals
            cells.append(f"{a / b:.2f}x" if a and b else "n/a")
        goal = next((g for k, g in targets_for.items() if m.startswith(k) and "p95" in m), "")
        L.append(f"| {m} | {goal} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("Ratios are Tessera divided by Orthanc: below 1 is better for Tessera on latencies (ms), above 1 "
             "on throughputs (MB/s, frames/s).")
    L.append("")
    L.append("## Details")
    L.append("")
    for r in results:
        if r.detail:
            L.append(f"- {r.target}, {r.metric}: {r.detail}")
    L.append("")
    L.extend(ing.commands_footer(env))
    return "\n".join(L)


# --------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="DICOMweb benchmark, Tessera vs Orthanc + orthanc-dicomweb.")
    ap.add_argument("--tessera-bin", help="tessera binary (required unless --skip-tessera)")
    ap.add_argument("--out", default="results.md")
    ap.add_argument("--skip-orthanc", action="store_true")
    ap.add_argument("--skip-tessera", action="store_true", help="measure Orthanc only")
    ap.add_argument("--studies", type=int, default=100_000, help="QIDO index size for Tessera (default 100000)")
    ap.add_argument("--orthanc-studies", type=int, default=None,
                    help="QIDO index size to aim for in Orthanc (default: --studies)")
    ap.add_argument("--orthanc-populate-seconds", type=float, default=1200.0,
                    help="time budget for uploading the QIDO studies into Orthanc (default 1200)")
    ap.add_argument("--populate-clients", type=int, default=4)
    ap.add_argument("--qido-instances", type=int, default=1, help="instances per study in the QIDO index")
    ap.add_argument("--queries", type=int, default=200, help="queries per kind (default 200)")
    ap.add_argument("--series-instances", type=int, default=1000)
    ap.add_argument("--metadata-repeats", type=int, default=20)
    ap.add_argument("--ct-instances", type=int, default=200, help="512x512 CT instances for STOW and frames")
    ap.add_argument("--clients", type=int, default=8, help="concurrent frame clients (default 8)")
    ap.add_argument("--frames-seconds", type=float, default=20.0)
    ap.add_argument("--stow-clients", type=int, default=4)
    ap.add_argument("--stow-batch", type=int, default=10)
    ap.add_argument("--tessera-root", default="/dicom-web", help="DICOMweb path on Tessera's HTTP port")
    ap.add_argument("--tessera-args", default="", help="extra 'tessera serve' arguments (shell-quoted)")
    ap.add_argument("--orthanc-bin", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc")
    ap.add_argument("--workdir", default=None, help="parent of the temp dirs (default $TMPDIR or /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    if a.skip_tessera and a.skip_orthanc:
        ap.error("nothing to measure")
    if not a.skip_tessera:
        if not a.tessera_bin or not os.access(a.tessera_bin, os.X_OK):
            ap.error("--tessera-bin PATH is required (or --skip-tessera)")
        a.tessera_bin = os.path.abspath(a.tessera_bin)
    if not a.skip_orthanc:
        if not os.access(a.orthanc_bin, os.X_OK):
            ap.error(f"Orthanc not found at {a.orthanc_bin} (apt-get install -y orthanc orthanc-dicomweb)")
        if not os.path.exists("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"):
            ap.error("the DICOMweb plugin is missing (apt-get install -y orthanc-dicomweb)")
    a.orthanc_studies = a.orthanc_studies or a.studies
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    base, env = ing.prepare_run(args, "tessera-dicomweb-")
    env["tools"] = {"python requests": requests.__version__, "pydicom": pydicom.__version__}
    if not args.skip_orthanc:
        env["tools"]["Orthanc"] = ing.tool_version([args.orthanc_bin, "--version"])
        env["tools"]["orthanc-dicomweb"] = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "orthanc-dicomweb"], capture_output=True, text=True).stdout or "?"
    if not args.skip_tessera:
        env["tools"]["tessera"] = ing.tool_version([args.tessera_bin, "--version"])
        env["debug_build"] = f"{os.sep}debug{os.sep}" in args.tessera_bin
    results: list[Result] = []
    notes: list[str] = []
    queries = query_list(args.studies, args.queries)
    targets_run: list[Target] = []
    rc = 0
    try:
        orthanc_studies = None
        if not args.skip_orthanc:
            # Orthanc first: its reachable index size decides Tessera's equal-size run
            run_dir = tempfile.mkdtemp(prefix="orthanc-", dir=base)
            t = start_orthanc(args, run_dir)
            targets_run.append(t)
            env["server_cmds"].append(shlex.join(t.srv.cmd))
            env["orthanc_config"] = t.config_text
            log(f"Orthanc: uploading up to {args.orthanc_studies} studies "
                f"(budget {args.orthanc_populate_seconds:.0f} s)")
            orthanc_studies, el = populate_orthanc(args, t, args.orthanc_studies)
            notes.append(f"Orthanc QIDO index: {orthanc_studies:,} studies x {args.qido_instances} instance(s), "
                         f"uploaded through POST /instances with {args.populate_clients} clients in {el:.0f} s "
                         f"({orthanc_studies / el:.0f} studies/s)"
                         + ("" if orthanc_studies >= args.orthanc_studies else
                            f"; the {args.orthanc_populate_seconds:.0f} s budget ran out before "
                            f"{args.orthanc_studies:,}"))
            log(f"Orthanc: {orthanc_studies} studies in {el:.0f} s; QIDO")
            oq = query_list(orthanc_studies, args.queries) if orthanc_studies != args.studies else queries
            results += run_qido(t, oq, orthanc_studies, expected_matches(orthanc_studies, oq),
                                f"{orthanc_studies:,} studies")
            results += run_metadata(args, t)
            results += run_stow_and_frames(args, t)
            t.srv.stop()
        if not args.skip_tessera:
            sizes = [args.studies]
            if orthanc_studies and orthanc_studies != args.studies:
                sizes.append(orthanc_studies)
            for k, size in enumerate(sizes):
                run_dir = tempfile.mkdtemp(prefix=f"tessera-{size}-", dir=base)
                log(f"Tessera: building a {size}-study index")
                t, build_s = start_tessera(args, run_dir, size)
                targets_run.append(t)
                env["server_cmds"].append(shlex.join([args.tessera_bin if c == args.tessera_run_bin else c
                                                      for c in t.srv.cmd]))
                notes.append(f"Tessera QIDO index: {size:,} studies x {args.qido_instances} instance(s), built "
                             f"directly in SQLite by bench/find.py populate() in {build_s:.0f} s")
                q = queries if size == args.studies else query_list(size, args.queries)
                results += run_qido(t, q, size, expected_matches(size, q), f"{size:,} studies")
                if k == 0:
                    results += run_metadata(args, t)
                    results += run_stow_and_frames(args, t)
                t.srv.stop()
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except BenchError as e:
        log(f"ERROR: {e}")
        notes.insert(0, f"**INCOMPLETE: stopped with an error: {str(e).splitlines()[0]}**")
        rc = 2
    finally:
        for t in targets_run:
            t.srv.stop()
        if args.keep or rc:
            log(f"left data and logs under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if rc == 0 and any(not r.ok for r in results):
        notes.insert(0, "**Some answers were wrong (marked in the table): those timings do not count.**")
        rc = 1
    report = render(args, results, env, notes)
    with open(args.out, "w") as f:
        f.write(report + "\n")
    print(report)
    log(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
