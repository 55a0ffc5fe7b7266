#!/usr/bin/env python3
"""C-FIND latency on a large index: Tessera vs Orthanc, in one run.

    python3 bench/find.py --tessera-bin PATH [--studies 100000] [--instances 10]
                          [--queries 200] [--out FILE] [--skip-orthanc | --skip-tessera]
                          [--orthanc-studies N] [--orthanc-populate-seconds 1500]

Study Root C-FIND at STUDY level, one query at a time over one association
per client, --queries queries per kind: PatientName wildcard (`Family123^*`),
PatientID, a one-week StudyDate range, AccessionNumber. Every query asks for
the same return keys. Both servers get the same query list (fixed seed).

Each query is timed with two clients, alternately, each on its own association:
  - raw (the main figure): bench/dimse_raw.py, a minimal DIMSE client that
    sends the pre-encoded request and only reads each response's Status, so
    the time is the server's (plus loopback), not Python's decoding;
  - pynetdicom: what a Python application sees (it decodes every match).
Both must count the same number of matches for every query, or the run stops
(exit 2). Match counts are also checked against the synthetic data; a server
that answers wrong is marked so in the report (exit 1).

The index:
  - Tessera: written directly into its SQLite schema by populate() below:
    --studies studies, one series of --instances instances each, half as many
    patients (two studies each).
  - Orthanc: no such shortcut (its schema is its own), so the same studies
    (same generator and seed: same patient names and IDs, dates, accession
    numbers, UIDs) are uploaded as one small instance per study (no pixel
    data) through POST /instances with --populate-clients threads, in study
    order, up to --orthanc-studies studies or --orthanc-populate-seconds,
    whichever comes first. When the cap cuts it short, Orthanc holds the
    first K studies of the same set, and its match counts are
    correspondingly lower (the report says so).
The populate cost of both is measured and reported.

The report (Markdown, stdout and --out) gives per query kind the p50/p95 of
both servers and the Orthanc/Tessera p95 ratio, for each client, plus the
machine, tool versions, populate costs and the exact commands.

populate(), FAMILY, GIVEN and week() are also used by bench/dicomweb.py.
"""

from __future__ import annotations

import argparse
import bisect
import io
import json
import logging
import math
import os
import platform
import random
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pydicom
import pynetdicom
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ingest as ing  # noqa: E402  (Server, free_port, proc_* helpers, log, CHILD_ENV)
from dimse_raw import DimseError, RawFindClient, encode_identifier  # noqa: E402

# pynetdicom leaves Nagle's algorithm on; with delayed ACKs that adds ~40 ms
# to every request sent as two PDUs (command, identifier). Measure the
# server, not that.
_connect = socket.socket.connect


def _connect_nodelay(self, address):
    _connect(self, address)
    if self.family in (socket.AF_INET, socket.AF_INET6):
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


socket.socket.connect = _connect_nodelay

# pynetdicom's warnings and errors (e.g. a response it could not place) go to stderr
_pyn_log = logging.StreamHandler()
_pyn_log.setFormatter(logging.Formatter("pynetdicom %(levelname)s: %(message)s"))
logging.getLogger("pynetdicom").addHandler(_pyn_log)
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

HOST = ing.HOST
log = ing.log
BenchError = ing.BenchError
CALLING_AET = "FINDBENCH"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PENDING = (0xFF00, 0xFF01)
RETURN_KEYS = ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyInstanceUID",
               "ModalitiesInStudy", "NumberOfStudyRelatedInstances")

FAMILY = ["Nguyễn", "Müller", "Smith", "García", "Kowalski", "Tanaka", "Dubois", "Rossi",
          "Andersson", "Novák", "O'Brien", "Silva", "Ivanov", "Kim", "Hansen", "Weber"]
GIVEN = ["Văn", "Anna", "John", "María", "Piotr", "Yuki", "Claire", "Luca", "Erik", "Jana"]


def fold(s):
    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c)).lower()


# ------------------------------------------------------------ synthetic data

def synthetic(studies: int, seed: int = 7) -> tuple[list[tuple[str, str]], list[tuple[int, str, str]]]:
    """(patients, studies): patients[p] = (PatientID, PatientName); studies[s] =
    (patient index, StudyDate, AccessionNumber). Study s has StudyInstanceUID
    2.25.(10^20 + s) and SeriesInstanceUID 2.25.(2*10^20 + s); patient of study s is s % len(patients)."""
    rng = random.Random(seed)
    patients = [(f"PID{p:07d}", f"{rng.choice(FAMILY)}{p % 997}^{rng.choice(GIVEN)}")
                for p in range(max(1, studies // 2))]
    rows = []
    for s in range(studies):
        day = rng.randrange(0, 16 * 365)
        rows.append((s % len(patients), time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400)),
                     f"ACC{s:08d}"))
    return patients, rows


def populate(db, studies, per_series, seed=7):
    """Write the synthetic index into Tessera's SQLite schema; returns the patient count."""
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = int(time.time())
    pats, rows_ = synthetic(studies, seed)
    rows = [(p + 1, pid, "", name, fold(name), "19700101", "O", 0, 0, 0) for p, (pid, name) in enumerate(pats)]
    con.executemany("INSERT INTO patients (id, patient_id, issuer_of_patient_id, patient_name, patient_name_folded, "
                    "patient_birth_date, patient_sex, num_studies, num_series, num_instances) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    st, se, ins = [], [], []
    iid = 0
    for s, (p, date, acc) in enumerate(rows_):
        st.append((s + 1, p + 1, f"2.25.{10**20 + s}", date, "120000", acc, "1", "CT study", "", "",
                   "CT", 1, per_series, per_series * 500000, now, now))
        se.append((s + 1, s + 1, f"2.25.{2 * 10**20 + s}", "CT", 1, now, now, per_series))
        for i in range(per_series):
            iid += 1
            ins.append((iid, s + 1, f"2.25.{3 * 10**20 + iid}", CT_IMAGE, i + 1,
                        "1.2.840.10008.1.2.1", f"00/00/{iid:064x}.dcm"[:74], 500000, "0" * 64, now))
        if len(ins) > 200000:
            flush(con, st, se, ins)
            st, se, ins = [], [], []
    flush(con, st, se, ins)
    con.execute("UPDATE patients SET num_studies = (SELECT COUNT(*) FROM studies WHERE patient_fk = patients.id)")
    con.execute("UPDATE patients SET num_series = num_studies, num_instances = num_studies * ?", (per_series,))
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return len(pats)


def flush(con, st, se, ins):
    con.executemany("INSERT INTO studies (id, patient_fk, study_instance_uid, study_date, study_time, accession_number, "
                    "study_id, study_description, referring_physician_name, referring_physician_name_folded, "
                    "modalities_in_study, num_series, num_instances, size_bytes, created_at, updated_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", st)
    con.executemany("INSERT INTO series (id, study_fk, series_instance_uid, modality, series_number, created_at, "
                    "updated_at, num_instances) VALUES (?,?,?,?,?,?,?,?)", se)
    con.executemany("INSERT INTO instances (id, series_fk, sop_instance_uid, sop_class_uid, instance_number, "
                    "transfer_syntax_uid, object_key, size_bytes, sha256, received_at) VALUES (?,?,?,?,?,?,?,?,?,?)", ins)
    con.commit()


def week(rng):
    day = rng.randrange(0, 16 * 365 - 7)
    a = time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400))
    b = time.strftime("%Y%m%d", time.gmtime(1262304000 + (day + 6) * 86400))
    return f"{a}-{b}"


KINDS = ("PatientName wildcard", "PatientID", "StudyDate range (1 week)", "AccessionNumber")


def query_list(studies: int, n: int, seed: int = 11) -> dict[str, list[tuple[str, str]]]:
    """n (keyword, value) matching keys per kind; the same draws as earlier versions of this script."""
    rng = random.Random(seed)
    patients = max(1, studies // 2)
    make = {
        "PatientName wildcard": lambda: ("PatientName", f"{rng.choice(FAMILY)}{rng.randrange(997)}^*"),
        "PatientID": lambda: ("PatientID", f"PID{rng.randrange(patients):07d}"),
        "StudyDate range (1 week)": lambda: ("StudyDate", week(rng)),
        "AccessionNumber": lambda: ("AccessionNumber", f"ACC{rng.randrange(studies):08d}"),
    }
    return {kind: [make[kind]() for _ in range(n)] for kind in KINDS}


def expected_counts(pats, rows, held: int, queries) -> dict[str, list[int]]:
    """Per query, the number of studies among the first `held` that match it."""
    by_pid, by_prefix, dates = {}, {}, sorted(r[1] for r in rows[:held])
    accs = {r[2] for r in rows[:held]}
    for p, _, _ in rows[:held]:
        pid, name = pats[p]
        by_pid[pid] = by_pid.get(pid, 0) + 1
        key = name.split("^")[0] + "^"  # the queries are `Family123^*`
        by_prefix[key] = by_prefix.get(key, 0) + 1
    out = {}
    for kind, qs in queries.items():
        counts = []
        for key, value in qs:
            if key == "PatientName":
                counts.append(by_prefix.get(value.rstrip("*"), 0))
            elif key == "PatientID":
                counts.append(by_pid.get(value, 0))
            elif key == "StudyDate":
                a, b = value.split("-")
                counts.append(bisect.bisect_right(dates, b) - bisect.bisect_left(dates, a))
            else:
                counts.append(1 if value in accs else 0)
        out[kind] = counts
    return out


def query_dataset(key: str, value: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: some patient names are not ASCII
    ds.QueryRetrieveLevel = "STUDY"
    for k in RETURN_KEYS:
        setattr(ds, k, "")
    setattr(ds, key, value)
    return ds


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


# ------------------------------------------------------------------ servers

def wait_dicom(srv: ing.Server, timeout: float) -> float:
    """Seconds until the server accepts an association for C-FIND."""
    t0 = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        if not srv.alive():
            raise BenchError(f"{srv.name} exited with code {srv.proc.returncode} during startup; log "
                             f"{srv.log_path}:\n{ing.tail(srv.log_path)}")
        try:
            RawFindClient(HOST, srv.dicom_port, srv.aet, CALLING_AET, timeout=5).release()
            return time.monotonic() - t0
        except (OSError, DimseError) as e:
            last = e
            time.sleep(0.2)
    raise BenchError(f"{srv.name} did not accept an association within {timeout:.0f} s ({last}); log "
                     f"{srv.log_path}:\n{ing.tail(srv.log_path)}")


def start_tessera(args, run_dir: str) -> tuple[ing.Server, float]:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    # create the schema, then fill the index directly
    subprocess.run([args.tessera_run_bin, "--data-dir", data, "stats"], check=True, capture_output=True,
                   env=ing.CHILD_ENV, timeout=120)
    t0 = time.monotonic()
    populate(os.path.join(data, "index.sqlite"), args.studies, args.instances)
    build_s = time.monotonic() - t0
    dp, hp = ing.free_port(), ing.free_port()
    cmd = [args.tessera_run_bin, "serve", "--data-dir", data, "--dicom-bind", f"{HOST}:{dp}",
           "--http-bind", f"{HOST}:{hp}"] + shlex.split(args.tessera_args)
    srv = ing.Server("Tessera", args.tessera_aet, cmd, data, dp, hp, os.path.join(run_dir, "tessera.log"))
    srv.start()
    wait_dicom(srv, args.startup_timeout)
    return srv, build_s


def orthanc_config(data: str, dp: int, hp: int) -> dict:
    # Only what differs from Orthanc's defaults, plus the C-FIND limits spelt
    # out. SyncStorageArea off makes populating affordable and does not touch
    # C-FIND (answered from the SQLite index: every requested key is a main
    # DICOM tag or computed from the index, so no file is read).
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
        "StorageCompression": False,
        "DicomAlwaysAllowFind": True,   # the benchmark's AET is not a known modality
        "LimitFindResults": 0,          # 0 = no limit: every match is answered
        "LimitFindInstances": 0,
        "Plugins": [],
    }


def start_orthanc(args, run_dir: str) -> tuple[ing.Server, str]:
    data = os.path.join(run_dir, "data")
    os.makedirs(data)
    dp, hp = ing.free_port(), ing.free_port()
    text = json.dumps(orthanc_config(data, dp, hp), indent=2)
    cpath = os.path.join(run_dir, "orthanc.json")
    with open(cpath, "w") as f:
        f.write(text)
    srv = ing.Server("Orthanc", "ORTHANC", [args.orthanc_bin, cpath], data, dp, hp,
                     os.path.join(run_dir, "orthanc.log"), config_text=text)
    srv.start()
    wait_dicom(srv, args.startup_timeout)
    return srv, text


def orthanc_instance(pats, rows, s: int) -> bytes:
    """Study s as one header-only CT instance (Part 10 bytes), with the keys Tessera's index has."""
    p, date, acc = rows[s]
    pid, name = pats[p]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"2.25.{3 * 10**20 + s + 1}"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = pid, name, "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = f"2.25.{10**20 + s}", date, "120000"
    ds.AccessionNumber, ds.StudyID, ds.StudyDescription = acc, "1", "CT study"
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber = f"2.25.{2 * 10**20 + s}", "CT", 1
    ds.InstanceNumber = 1
    b = io.BytesIO()
    pydicom.dcmwrite(b, ds, enforce_file_format=True)
    return b.getvalue()


@dataclass
class Populate:
    studies: int      # studies the server holds
    seconds: float
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None
    data_bytes: int | None = None
    capped: bool = False


def populate_orthanc(args, srv: ing.Server, pats, rows, target: int) -> Populate:
    """Upload studies 0, 1, 2, ... in order until `target` or the time cap.
    Every study taken is finished, so Orthanc holds exactly the first K."""
    base = f"http://{HOST}:{srv.http_port}"
    deadline = time.monotonic() + args.orthanc_populate_seconds
    lock = threading.Lock()
    nxt = [0]
    errors: list[str] = []

    def worker():
        sess = requests.Session()  # one keep-alive connection per thread
        while not errors and not stop.is_set() and time.monotonic() < deadline:
            with lock:
                s = nxt[0]
                if s >= target:
                    return
                nxt[0] += 1
            r = sess.post(base + "/instances", data=orthanc_instance(pats, rows, s), timeout=120)
            if r.status_code != 200:
                errors.append(f"POST /instances (study {s}): HTTP {r.status_code} {r.text[:200]}")

    stop = threading.Event()
    t0 = time.monotonic()

    def progress():
        while not stop.wait(30):
            log(f"Orthanc populate: {nxt[0]} studies, {nxt[0] / (time.monotonic() - t0):.0f}/s")

    threading.Thread(target=progress, daemon=True).start()
    cpu0, ru0 = ing.proc_cpu_seconds(srv.proc.pid), os.times()
    ex = ThreadPoolExecutor(args.populate_clients)
    try:
        for f in [ex.submit(worker) for _ in range(args.populate_clients)]:
            f.result()
    finally:
        stop.set()  # on Ctrl-C / SIGTERM too: the workers stop after their current upload
        ex.shutdown(wait=True)
    el = time.monotonic() - t0
    cpu, ru1 = ing.proc_cpu_seconds(srv.proc.pid) - cpu0, os.times()
    if errors:
        raise BenchError(f"Orthanc populate failed: {errors[0]}")
    got = int(requests.get(base + "/statistics", timeout=60).json()["CountStudies"])
    if got != nxt[0]:
        raise BenchError(f"Orthanc holds {got} studies after {nxt[0]} were uploaded")
    return Populate(got, el, cpu, (ru1.user - ru0.user) + (ru1.system - ru0.system), ing.dir_bytes(srv.data_dir),
                    capped=got < target)


# ---------------------------------------------------------------- measure

@dataclass
class KindResult:
    raw_ms: list[float] = field(default_factory=list)
    pyn_ms: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    server_cpu_s: float = 0.0

    @property
    def wrong(self) -> int:
        return sum(1 for a, b in zip(self.matches, self.expected) if a != b)


def pyn_find(assoc, ds: Dataset) -> int:
    n = 0
    for status, _ident in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
        if not status:
            raise BenchError("pynetdicom: no response (association aborted or timed out)")
        if status.Status in PENDING:
            n += 1
        elif status.Status != 0x0000:
            raise BenchError(f"pynetdicom: C-FIND status {status.Status:#06x}")
    return n


def measure(args, srv: ing.Server, queries, expected) -> dict[str, KindResult]:
    datasets = {k: [query_dataset(*q) for q in qs] for k, qs in queries.items()}
    idents = {k: [encode_identifier(ds) for ds in dss] for k, dss in datasets.items()}  # encoded before timing
    ae = AE(ae_title=CALLING_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, "1.2.840.10008.1.2")
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 60, 120, 600  # a 100,000-study Orthanc query takes ~0.1-0.5 s
    assoc = ae.associate(HOST, srv.dicom_port, ae_title=srv.aet)
    if not assoc.is_established:
        raise BenchError(f"pynetdicom could not associate with {srv.name}")
    # pynetdicom 3.0's association thread (the "reactor") polls the DIMSE
    # queue for incoming requests. send_c_find() pauses it first, but the
    # pause races (it reads an _is_paused flag the reactor sets just before
    # wait() returns), so the reactor sometimes takes a C-FIND-RSP off the
    # queue and drops it ("Received unexpected C-FIND service message"): a
    # lost match, or a lost final response and a hang until dimse_timeout.
    # Seen against Tessera, which answers in well under a millisecond, and
    # more often on a busy machine. This client serves no requests, so the
    # reactor is kept from taking messages at all.
    _get_msg = assoc.dimse.get_msg
    assoc.dimse.get_msg = lambda block=False: (None, None) if threading.get_ident() == assoc.ident \
        else _get_msg(block)
    raw = RawFindClient(HOST, srv.dicom_port, srv.aet, CALLING_AET, max_pdu=args.max_pdu, timeout=120)
    out = {}
    try:
        for kind in queries:  # warm-up, untimed
            for i in range(min(args.warmup, len(idents[kind]))):
                raw.find(idents[kind][i])
                pyn_find(assoc, datasets[kind][i])
        for kind, qs in queries.items():
            r = KindResult(expected=expected[kind])
            cpu0 = ing.proc_cpu_seconds(srv.proc.pid)
            for i, q in enumerate(qs):
                # alternate which client goes first, so neither always gets the warmer server
                for which in ((0, 1) if i % 2 == 0 else (1, 0)):
                    t0 = time.perf_counter()
                    if which == 0:
                        n_raw = raw.find(idents[kind][i])
                        r.raw_ms.append((time.perf_counter() - t0) * 1000)
                    else:
                        n_pyn = pyn_find(assoc, datasets[kind][i])
                        r.pyn_ms.append((time.perf_counter() - t0) * 1000)
                if n_raw != n_pyn:
                    raise BenchError(f"{srv.name}: {q[0]}={q[1]!r}: the raw client counted {n_raw} matches, "
                                     f"pynetdicom {n_pyn}")
                r.matches.append(n_raw)
            r.server_cpu_s = ing.proc_cpu_seconds(srv.proc.pid) - cpu0
            log(f"{srv.name} {kind}: raw p50 {statistics.median(r.raw_ms):.1f} p95 {pct(r.raw_ms, 95):.1f} ms; "
                f"pynetdicom p50 {statistics.median(r.pyn_ms):.1f} p95 {pct(r.pyn_ms, 95):.1f} ms; "
                f"mean matches {statistics.mean(r.matches):.2f}"
                + (f"; {r.wrong} answers differ from the data" if r.wrong else ""))
            out[kind] = r
        raw.release()
        assoc.release()
    finally:
        raw.close()
        if assoc.is_alive():
            assoc.abort()
    return out


# ------------------------------------------------------------------- report

def render(args, env, results: dict[str, dict[str, KindResult]], notes) -> str:
    L = [f"# C-FIND latency: Tessera vs Orthanc ({env['date']})", ""]
    L.append(f"Machine: {env['cpus']} CPUs ({env['cpu']}), {env['mem']}, kernel {env['kernel']}; load average "
             f"before the run {env['load']}. Servers and the benchmark client share the CPUs.")
    L.append("")
    if env.get("debug_build"):
        L.append("**Warning: the Tessera binary is a debug build; use target/release/tessera for numbers to quote.**")
        L.append("")
    for n in notes:
        L.append(f"- {n}")
    if notes:
        L.append("")
    L.append(f"Study Root C-FIND at STUDY level, {args.queries} queries per kind (after {args.warmup} untimed "
             f"warm-up queries per kind), one at a time, each timed from before the request is sent to after "
             f"the final response is read. Return keys: {', '.join(RETURN_KEYS)}. Target: p95 < 50 ms.")
    L.append("")
    servers = [s for s in ("Tessera", "Orthanc") if s in results]
    both = len(servers) == 2
    for client, attr, what in (
            ("raw DIMSE client", "raw_ms", "bench/dimse_raw.py: pre-encoded request, reads only each response's "
                                           "Status, never decodes a match: the server's time plus loopback"),
            ("pynetdicom", "pyn_ms", f"pynetdicom {pynetdicom.__version__}: decodes every match into a "
                                     "Dataset, as a Python application would")):
        L.append(f"### {client}")
        L.append("")
        L.append(what + ".")
        L.append("")
        head = ["query"]
        for s in servers:
            head += [f"{s} p50 ms", f"{s} p95 ms"]
        if both:
            head.append("p95 Orthanc/Tessera")
        for s in servers:
            head.append(f"{s} mean matches")
        L.append("| " + " | ".join(head) + " |")
        L.append("|---|" + "---:|" * (len(head) - 1))
        for kind in KINDS:
            row = [kind]
            p95 = {}
            for s in servers:
                r = results[s].get(kind)
                if r is None:
                    row += ["n/a", "n/a"]
                    continue
                v = getattr(r, attr)
                p95[s] = pct(v, 95)
                row += [f"{statistics.median(v):.1f}", f"{p95[s]:.1f}"]
            if both:
                row.append(f"{p95['Orthanc'] / p95['Tessera']:.1f}x" if len(p95) == 2 and p95["Tessera"] else "n/a")
            for s in servers:
                r = results[s].get(kind)
                row.append("n/a" if r is None else f"{statistics.mean(r.matches):.2f}"
                           + (f" (**{r.wrong} wrong**)" if r.wrong else ""))
            L.append("| " + " | ".join(row) + " |")
        L.append("")
    L.append("Ratios above 1 mean Orthanc is slower. Matches are counted by both clients and checked against "
             "each other for every query (they agreed), and against the synthetic data; \"wrong\" counts queries "
             "whose match count differs from it.")
    L.append("")
    L.append("## Details")
    L.append("")
    for s in servers:
        for kind, r in results[s].items():
            n = len(r.raw_ms) + len(r.pyn_ms)
            L.append(f"- {s}, {kind}: server CPU {1000 * r.server_cpu_s / n:.2f} ms per query (both clients); "
                     f"raw max {max(r.raw_ms):.1f} ms, pynetdicom max {max(r.pyn_ms):.1f} ms; matches "
                     f"min {min(r.matches)} max {max(r.matches)}, expected mean {statistics.mean(r.expected):.2f}")
    L.append("")
    L.extend(ing.commands_footer(env))
    return "\n".join(L)


# --------------------------------------------------------------------- main

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="C-FIND latency benchmark, Tessera vs Orthanc.")
    ap.add_argument("--tessera-bin", help="tessera binary (required unless --skip-tessera)")
    ap.add_argument("--studies", type=int, default=100_000, help="studies in the index (default 100000)")
    ap.add_argument("--instances", type=int, default=10,
                    help="instances per study in Tessera's index (default 10; Orthanc gets 1 per study)")
    ap.add_argument("--queries", type=int, default=200, help="timed queries per kind (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed queries per kind first (default 5)")
    ap.add_argument("--out", help="also write the Markdown report here")
    ap.add_argument("--skip-orthanc", action="store_true", help="measure Tessera only")
    ap.add_argument("--skip-tessera", action="store_true", help="measure Orthanc only")
    ap.add_argument("--orthanc-studies", type=int, default=None,
                    help="studies to upload into Orthanc, the first N of the same set (default: --studies)")
    ap.add_argument("--orthanc-populate-seconds", type=float, default=1500.0,
                    help="time cap for uploading into Orthanc (default 1500)")
    ap.add_argument("--populate-clients", type=int, default=4, help="parallel POST /instances clients (default 4)")
    ap.add_argument("--max-pdu", type=int, default=65536, help="maximum PDU length the raw client proposes")
    ap.add_argument("--tessera-aet", default="TESSERA")
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
    if not a.skip_orthanc and not os.access(a.orthanc_bin, os.X_OK):
        ap.error(f"Orthanc not found at {a.orthanc_bin} (apt-get install -y orthanc), or use --skip-orthanc")
    a.orthanc_studies = min(a.orthanc_studies or a.studies, a.studies)
    if a.studies < 2 or a.queries < 1:
        ap.error("--studies must be >= 2 and --queries >= 1")
    return a


def stop_logged(srv: ing.Server) -> None:
    t0 = time.monotonic()
    rc = srv.stop()
    log(f"{srv.name} stopped in {time.monotonic() - t0:.1f} s (exit code {rc})")


def main(argv=None) -> int:
    args = parse_args(argv)
    base, env = ing.prepare_run(args, "tessera-find-")
    env["tools"] = {"Python": platform.python_version(), "pynetdicom": pynetdicom.__version__,
                  "pydicom": pydicom.__version__}
    if not args.skip_orthanc:
        env["tools"]["Orthanc"] = ing.tool_version([args.orthanc_bin, "--version"])
    if not args.skip_tessera:
        env["tools"]["tessera"] = ing.tool_version([args.tessera_bin, "--version"])
        env["debug_build"] = f"{os.sep}debug{os.sep}" in args.tessera_bin

    pats, rows = synthetic(args.studies)
    queries = query_list(args.studies, args.queries)
    results: dict[str, dict[str, KindResult]] = {}
    notes: list[str] = []
    servers: list[ing.Server] = []
    rc = 0
    try:
        if not args.skip_tessera:
            run_dir = tempfile.mkdtemp(prefix="tessera-", dir=base)
            log(f"Tessera: building a {args.studies}-study index")
            srv, build_s = start_tessera(args, run_dir)
            servers.append(srv)
            env["server_cmds"].append(shlex.join([args.tessera_bin if c == args.tessera_run_bin else c
                                                  for c in srv.cmd]))
            tessera_mb = ing.dir_bytes(srv.data_dir) / 1e6
            notes.append(f"Tessera index: {args.studies:,} studies, {args.studies:,} series, "
                         f"{args.studies * args.instances:,} instances, {len(pats):,} patients, written directly "
                         f"into its SQLite schema by find.py populate() in {build_s:.1f} s "
                         f"(data dir {tessera_mb:.0f} MB; no DICOM files)")
            results["Tessera"] = measure(args, srv, queries, expected_counts(pats, rows, args.studies, queries))
            stop_logged(srv)
        if not args.skip_orthanc:
            run_dir = tempfile.mkdtemp(prefix="orthanc-", dir=base)
            srv, text = start_orthanc(args, run_dir)
            servers.append(srv)
            env["server_cmds"].append("TCP_NODELAY=1 " + shlex.join(srv.cmd))
            env["orthanc_config"] = text
            log(f"Orthanc: uploading up to {args.orthanc_studies} studies "
                f"(cap {args.orthanc_populate_seconds:.0f} s, {args.populate_clients} clients)")
            pop = populate_orthanc(args, srv, pats, rows, args.orthanc_studies)
            rate = pop.studies / pop.seconds
            log(f"Orthanc: {pop.studies} studies in {pop.seconds:.0f} s ({rate:.0f}/s)")
            notes.append(
                f"Orthanc index: {pop.studies:,} studies x 1 instance (header only, no pixel data), the first "
                f"{pop.studies:,} of the same synthetic set, uploaded through POST /instances with "
                f"{args.populate_clients} clients in {pop.seconds:.1f} s ({rate:.0f} studies/s); Orthanc CPU "
                f"{pop.server_cpu_s:.0f} s, uploader CPU {pop.client_cpu_s:.0f} s, data dir "
                f"{pop.data_bytes / 1e6:.0f} MB. Tessera's index has {args.instances} instance(s) per study, "
                "Orthanc's 1: STUDY-level C-FIND does not look at instances except to count them "
                "(NumberOfStudyRelatedInstances)")
            if pop.studies < args.studies:
                why = (f"the {args.orthanc_populate_seconds:.0f} s cap ran out" if pop.capped
                       else "--orthanc-studies")
                notes.append(f"**Orthanc holds only {pop.studies:,} of the {args.studies:,} studies ({why}): "
                             "it answers the same queries with fewer matches (see the mean matches columns), "
                             "on a smaller index, so its latencies are not for the same work.**")
            results["Orthanc"] = measure(args, srv, queries, expected_counts(pats, rows, pop.studies, queries))
            stop_logged(srv)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except (BenchError, DimseError, OSError, subprocess.SubprocessError) as e:
        log(f"ERROR: {e}")
        notes.insert(0, f"**INCOMPLETE: stopped with an error: {str(e).splitlines()[0]}**")
        rc = 2
    finally:
        for s in servers:
            s.stop()
        if args.keep or rc:
            log(f"left data and logs under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if rc == 0 and any(r.wrong for res in results.values() for r in res.values()):
        notes.insert(0, "**Some match counts differ from the synthetic data (marked \"wrong\" in the tables).**")
        rc = 1
    report = render(args, env, results, notes)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
        log(f"wrote {args.out}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
