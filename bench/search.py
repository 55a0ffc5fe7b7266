#!/usr/bin/env python3
"""Full-text search over many studies: rebuild rate and query latency.

usage: bench/search.py --tessera-bin target/release/tessera
       [--studies 1000000] [--queries 100] [--keep DIR]

Makes a SQLite index of --studies studies (patients with Vietnamese,
German, Polish, French and other names, CT/MR/CR/US/DX series with
descriptions and body parts, a report on every fifth study) by writing
the rows directly (migrated by `tessera stats`), then times `tessera
reindex`, starts the server, and sends each query kind --queries times to
GET /api/v1/search from loopback (no account: loopback is served), one at
a time. Prints the reindex rate, and p50/p95/p99 per query kind, measured
by the client from request to the last byte. Then --fresh times stores
new studies by STOW-RS, one at a time, and polls the search every 20 ms
until each is found: the time from the STOW-RS answer to the first
search that finds it. --paint N loads the study browser N times per
address in headless Chromium (bench/paint.mjs) and reports the time to
the first results painted.
"""
import argparse
import http.client
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.parse

FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Müller", "Schmidt", "Schäfer", "Wójcik", "Kowalski",
          "Żółkiewski", "Lefèvre", "Dubois", "García", "Smith", "Johnson", "Brown", "Yamada",
          "Öztürk", "Andersson", "Håkansson"]
GIVEN = ["Văn An", "Thị Mai", "Hans", "Jürgen", "Łukasz", "Zofia", "François", "Hélène", "José",
         "John", "Mary", "Tarou", "Ayşe", "Björn"]
EXAMS = [("CT", "CT CHEST WITH CONTRAST", "CHEST"), ("CT", "CT ABDOMEN PELVIS", "ABDOMEN"),
         ("MR", "MR BRAIN WITH AND WITHOUT CONTRAST", "HEAD"), ("MR", "MR KNEE LEFT", "KNEE"),
         ("CR", "CHEST PA AND LATERAL", "CHEST"), ("US", "US ABDOMEN", "ABDOMEN"),
         ("DX", "XR HAND RIGHT", "HAND"), ("MR", "MR LUMBAR SPINE", "LSPINE")]
REPORTS = ["No acute cardiopulmonary abnormality.",
           "Small pulmonary nodule in the right upper lobe, follow-up in six months.",
           "Kleiner Rundherd im Oberlappen links, sonst unauffällig.",
           "Brak zmian ogniskowych w mózgowiu.",
           "Tràn dịch màng phổi hai bên, lượng ít."]
QUERIES = {
    "name": "nguyen",
    "name with typo": "kowalsky",
    "id": "id:P0424242",
    "free text": "brain contrast 2023",
    "name and text": "muller chest",
    "report phrase": "\"pulmonary nodule\"",
    "filter only": "",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not listen on {port}")


def fill(db_path, n):
    rng = random.Random(7)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA journal_mode=WAL")
    now = int(time.time())
    patients, studies, series, reports = [], [], [], []
    for i in range(n):
        family, given = rng.choice(FAMILY), rng.choice(GIVEN)
        patients.append((i + 1, f"P{i:07d}", f"{family}^{given}", f"{family}^{given}".lower(),
                         f"19{rng.randint(30, 99)}0101", rng.choice("MFO")))
        modality, description, body = rng.choice(EXAMS)
        date = f"{rng.randint(2015, 2026)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        uid = f"2.25.{i + 1}"
        referring = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        studies.append((i + 1, i + 1, uid, date, f"A{i:08d}", description, referring,
                        referring.lower(), modality, now, now))
        series.append((i + 1, i + 1, f"{uid}.1", modality, description, body, now, now))
        if i % 5 == 0:
            reports.append((uid, f"A{i:08d}", f"PL{i}", "final", rng.choice(REPORTS), now, now))
    db.executemany(
        "INSERT INTO patients (id, patient_id, patient_name, patient_name_folded, "
        "patient_birth_date, patient_sex) VALUES (?, ?, ?, ?, ?, ?)", patients)
    db.executemany(
        "INSERT INTO studies (id, patient_fk, study_instance_uid, study_date, accession_number, "
        "study_description, referring_physician_name, referring_physician_name_folded, "
        "modalities_in_study, num_series, num_instances, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?)", studies)
    db.executemany(
        "INSERT INTO series (id, study_fk, series_instance_uid, modality, series_description, "
        "body_part_examined, num_instances, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)", series)
    db.executemany(
        "INSERT INTO reports (study_instance_uid, accession_number, placer_order, status, body, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)", reports)
    # The rebuild reads the studies; the triggers' rows are not needed.
    db.execute("DELETE FROM search_outbox")
    db.commit()
    db.close()


def get(conn, path):
    t0 = time.perf_counter()
    conn.request("GET", path)
    rsp = conn.getresponse()
    body = rsp.read()
    elapsed = time.perf_counter() - t0
    if rsp.status != 200:
        raise SystemExit(f"{path}: {rsp.status} {body[:200]!r}")
    return elapsed


def stow(conn, path):
    with open(path, "rb") as f:
        body = f.read()
    boundary = "tessera-bench-boundary"
    payload = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + body
               + f"\r\n--{boundary}--\r\n".encode())
    conn.request("POST", "/dicom-web/studies", payload, {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    rsp = conn.getresponse()
    rsp.read()
    if rsp.status != 200:
        raise SystemExit(f"STOW-RS: {rsp.status}")


def freshness(conn, work, rounds):
    gen = os.path.join(os.path.dirname(__file__), "..", "tests", "peers", "gen.py")
    delays = []
    for n in range(rounds):
        out = os.path.join(work, f"fresh{n}")
        name = f"Freshness^Probe{n:03d}"
        subprocess.run(["python3", gen, out, "--count", "1", "--rows", "64", "--cols", "64",
                        "--seed", str(9000 + n), "--patient-name", name,
                        "--patient-id", f"FRESH{n}"], check=True, stdout=subprocess.DEVNULL)
        stow(conn, os.path.join(out, "img00000.dcm"))
        t0 = time.perf_counter()
        path = "/api/v1/search?" + urllib.parse.urlencode({"q": f"id:FRESH{n}"})
        while True:
            conn.request("GET", path)
            rsp = conn.getresponse()
            body = rsp.read()
            if b'"total":1' in body:
                break
            if time.perf_counter() - t0 > 30:
                raise SystemExit(f"study {n} not searchable after 30 s")
            time.sleep(0.02)
        delays.append((time.perf_counter() - t0) * 1000)
    return delays


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tessera-bin", required=True)
    p.add_argument("--studies", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--keep")
    p.add_argument("--fresh", type=int, default=20)
    p.add_argument("--paint", type=int, default=0,
                   help="page loads per address for bench/paint.mjs (study browser, headless Chromium)")
    args = p.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="tessera-search-")
    data = os.path.join(work, "data")
    try:
        if not os.path.exists(os.path.join(data, "search")):
            subprocess.run([args.tessera_bin, "--data-dir", data, "stats"], check=True,
                           stdout=subprocess.DEVNULL)
            t0 = time.perf_counter()
            fill(os.path.join(data, "index.sqlite"), args.studies)
            print(f"rows for {args.studies} studies written in {time.perf_counter() - t0:.0f} s")
            t0 = time.perf_counter()
            subprocess.run([args.tessera_bin, "--data-dir", data, "reindex"], check=True)
            took = time.perf_counter() - t0
            print(f"tessera reindex: {args.studies} studies in {took:.1f} s "
                  f"({args.studies / took:.0f} studies/s)")
        http_port = free_port()
        server = subprocess.Popen(
            [args.tessera_bin, "--data-dir", data, "--dicom-bind", f"127.0.0.1:{free_port()}",
             "--http-bind", f"127.0.0.1:{http_port}", "--hl7-bind", "off", "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(http_port, server, "tessera")
            conn = http.client.HTTPConnection("127.0.0.1", http_port)
            print(f"{'query':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  hits")
            for kind, q in QUERIES.items():
                params = {"q": q, "limit": 50}
                if kind == "filter only":
                    params.update({"modality": "MR", "from": "2024-01-01", "sort": "date"})
                path = "/api/v1/search?" + urllib.parse.urlencode(params)
                get(conn, path)  # warm
                conn.request("GET", path)
                rsp = conn.getresponse()
                total = rsp.read().split(b'"total":')[1].split(b",")[0].decode()
                times = [get(conn, path) * 1000 for _ in range(args.queries)]
                print(f"{kind:<16} {pct(times, 50):8.1f} {pct(times, 95):8.1f} "
                      f"{pct(times, 99):8.1f}  {total}")
            if args.paint:
                paint = subprocess.run(
                    ["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "paint.mjs"),
                     "--base", f"http://127.0.0.1:{http_port}", "--runs", str(args.paint)],
                    check=True, capture_output=True, text=True)
                print(f"study browser, first results painted: {paint.stdout.strip()}")
            if args.fresh:
                delays = freshness(conn, work, args.fresh)
                print(f"searchable after STOW-RS: p50 {pct(delays, 50):.0f} ms, "
                      f"max {max(delays):.0f} ms over {len(delays)} studies")
        finally:
            server.terminate()
            server.wait()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
