"""C-FIND latency on a large index (no pixel data).

Builds a SQLite index of N studies (one series each, M instances per series)
directly through Tessera's schema, starts `tessera serve` on it, and times
Study Root C-FIND queries at STUDY level with pynetdicom over one association:
PatientName wildcard, PatientID, StudyDate range, AccessionNumber.

usage: find.py --tessera-bin PATH [--studies 100000] [--instances 10]
               [--queries 200] [--out FILE]
"""
import argparse
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

# pynetdicom leaves Nagle's algorithm on; with delayed ACKs that adds ~40 ms
# to every request sent as two PDUs (command, identifier). Measure the
# server, not that.
_connect = socket.socket.connect


def _connect_nodelay(self, address):
    _connect(self, address)
    if self.family in (socket.AF_INET, socket.AF_INET6):
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


socket.socket.connect = _connect_nodelay

FAMILY = ["Nguyễn", "Müller", "Smith", "García", "Kowalski", "Tanaka", "Dubois", "Rossi",
          "Andersson", "Novák", "O'Brien", "Silva", "Ivanov", "Kim", "Hansen", "Weber"]
GIVEN = ["Văn", "Anna", "John", "María", "Piotr", "Yuki", "Claire", "Luca", "Erik", "Jana"]


def fold(s):
    return "".join(c for c in unicodedata.normalize("NFD", s) if not unicodedata.combining(c)).lower()


def populate(db, studies, per_series, seed=7):
    rng = random.Random(seed)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    now = int(time.time())
    patients = max(1, studies // 2)
    rows = []
    for p in range(patients):
        name = f"{rng.choice(FAMILY)}{p % 997}^{rng.choice(GIVEN)}"
        rows.append((p + 1, f"PID{p:07d}", "", name, fold(name), "19700101", "O", 0, 0, 0))
    con.executemany("INSERT INTO patients (id, patient_id, issuer_of_patient_id, patient_name, patient_name_folded, "
                    "patient_birth_date, patient_sex, num_studies, num_series, num_instances) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    st, se, ins = [], [], []
    iid = 0
    for s in range(studies):
        pid = s % patients + 1
        day = rng.randrange(0, 16 * 365)
        date = time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400))
        st.append((s + 1, pid, f"2.25.{10**20 + s}", date, "120000", f"ACC{s:08d}", "1", "CT study", "", "",
                   "CT", 1, per_series, per_series * 500000, now, now))
        se.append((s + 1, s + 1, f"2.25.{2 * 10**20 + s}", "CT", 1, now, now, per_series))
        for i in range(per_series):
            iid += 1
            ins.append((iid, s + 1, f"2.25.{3 * 10**20 + iid}", "1.2.840.10008.5.1.4.1.1.2", i + 1,
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
    return patients


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tessera-bin", required=True)
    ap.add_argument("--studies", type=int, default=100000)
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-find-")
    data = os.path.join(work, "data")
    subprocess.run([args.tessera_bin, "--data-dir", data, "stats"], check=True, capture_output=True)
    t0 = time.time()
    patients = populate(os.path.join(data, "index.sqlite"), args.studies, args.instances)
    build_s = time.time() - t0
    server = subprocess.Popen([args.tessera_bin, "--data-dir", data, "--dicom-bind", "127.0.0.1:0",
                               "--http-bind", "127.0.0.1:0", "serve"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.split("dicom=")[1].split()[0].rsplit(":", 1)[1])
        ae = AE(ae_title="FINDBENCH")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="TESSERA")
        rng = random.Random(11)
        kinds = {
            "PatientName wildcard": lambda: {"PatientName": f"{rng.choice(FAMILY)}{rng.randrange(997)}^*"},
            "PatientID": lambda: {"PatientID": f"PID{rng.randrange(patients):07d}"},
            "StudyDate range (1 week)": lambda: {"StudyDate": week(rng)},
            "AccessionNumber": lambda: {"AccessionNumber": f"ACC{rng.randrange(args.studies):08d}"},
        }
        results = {}
        for kind, make in kinds.items():
            times, matches = [], []
            for _ in range(args.queries):
                ds = Dataset()
                ds.QueryRetrieveLevel = "STUDY"
                for k in ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyInstanceUID",
                          "ModalitiesInStudy", "NumberOfStudyRelatedInstances"):
                    setattr(ds, k, "")
                for k, v in make().items():
                    setattr(ds, k, v)
                start = time.perf_counter()
                n = 0
                for status, ident in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
                    if status and status.Status in (0xFF00, 0xFF01):
                        n += 1
                times.append((time.perf_counter() - start) * 1000)
                matches.append(n)
            times.sort()
            results[kind] = (statistics.median(times), times[int(len(times) * 0.95) - 1],
                             statistics.mean(matches))
        assoc.release()
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [
        f"Index: {args.studies} studies, {args.studies} series, {args.studies * args.instances} instances, "
        f"{patients} patients (SQLite, built in {build_s:.0f} s). {args.queries} Study Root C-FIND queries "
        "per kind at STUDY level over one pynetdicom association; time from request to final response.",
        "",
        "| query | p50 ms | p95 ms | mean matches |",
        "|---|---:|---:|---:|",
    ]
    for kind, (p50, p95, m) in results.items():
        lines.append(f"| {kind} | {p50:.1f} | {p95:.1f} | {m:.1f} |")
    lines += ["", "Command:", "", "```", "python3 " + " ".join(sys.argv), "```"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


def week(rng):
    day = rng.randrange(0, 16 * 365 - 7)
    a = time.strftime("%Y%m%d", time.gmtime(1262304000 + day * 86400))
    b = time.strftime("%Y%m%d", time.gmtime(1262304000 + (day + 6) * 86400))
    return f"{a}-{b}"


if __name__ == "__main__":
    main()
