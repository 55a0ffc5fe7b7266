#!/usr/bin/env python3
"""Modality Worklist C-FIND latency with 10,000 scheduled steps: Tessera
(steps sent as HL7 ORM^O01 over MLLP) against Orthanc's ModalityWorklists
plugin (the same steps as .wl files in its worklist folder), in one run.

usage: bench/worklist.py --tessera-bin target/release/tessera
       [--items 10000] [--queries 40] [--orthanc-bin /usr/sbin/Orthanc]

Each query kind is sent --queries times by pynetdicom, each on a fresh
association (its set-up not timed); the latency is from the C-FIND-RQ to the final
response, all matches read. Prints p50 and p95 per server and the ratio.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from dimse_raw import RawFindClient, encode_identifier
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

MODALITIES = ["CT", "MR", "US", "CR", "DX"]
STATIONS = [f"{m}{n:02d}" for m in MODALITIES for n in range(1, 5)]


def item(n):
    modality = MODALITIES[n % len(MODALITIES)]
    return {
        "patient": f"P{n:06d}",
        "name": f"PATIENT{n % 997}^GIVEN{n % 13}",
        "accession": f"A{n:07d}",
        "modality": modality,
        "station": f"{modality}{(n // len(MODALITIES)) % 4 + 1:02d}",
        "date": f"202612{(n // 7) % 30 + 1:02d}",
        "time": f"{8 + n % 10:02d}{(n * 7) % 60:02d}00",
        "placer": f"PL{n:07d}",
        "step": f"S{n:07d}",
        "uid": f"1.2.826.0.1.3680043.10.999.{n}",
    }


def orm(i):
    return (
        f"MSH|^~\\&|RIS|H|TESSERA|R|20261201000000||ORM^O01|M{i['placer']}|P|2.5||||||UNICODE UTF-8\r"
        f"PID|1||{i['patient']}^^^H^MR||{i['name']}||19700101|O\r"
        f"ORC|NW|{i['placer']}|||SC||^^^{i['date']}{i['time']}^^R|||||||||||{i['station']}\r"
        f"OBR|1|{i['placer']}||PROC^Procedure^L" + "|" * 14 + f"{i['accession']}|RP{i['placer']}|{i['step']}"
        + "|" * 4 + f"{i['modality']}\r"
        f"ZDS|{i['uid']}^^Application^DICOM\r"
    ).encode()


def wl_file(i, path):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = i["name"]
    ds.PatientID = i["patient"]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = i["accession"]
    ds.RequestedProcedureID = "RP" + i["placer"]
    ds.RequestedProcedureDescription = "Procedure"
    ds.StudyInstanceUID = i["uid"]
    sps = Dataset()
    sps.Modality = i["modality"]
    sps.ScheduledStationAETitle = i["station"]
    sps.ScheduledProcedureStepStartDate = i["date"]
    sps.ScheduledProcedureStepStartTime = i["time"]
    sps.ScheduledProcedureStepID = i["step"]
    sps.ScheduledProcedureStepDescription = "Procedure"
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [sps]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    meta.MediaStorageSOPInstanceUID = i["uid"] + ".1"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send_orders(port, items):
    s = socket.create_connection(("127.0.0.1", port))
    for i in items:
        s.sendall(b"\x0b" + orm(i) + b"\x1c\r")
        reply = b""
        while not reply.endswith(b"\x1c\r"):
            reply += s.recv(65536)
        if b"MSA|AA|" not in reply:
            raise RuntimeError(reply.decode(errors="replace"))
    s.close()


def query(modality="", station="", date=""):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = ""
    ds.PatientID = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = ""
    sps.ScheduledProcedureStepID = ""
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


QUERIES = {
    "modality CT, one day": query(modality="CT", date="20261215"),
    "station MR02, three days": query(station="MR02", date="20261210-20261212"),
    "station CT02, one day": query(station="CT02", date="20261220"),
}


def measure(port, aet, repeats):
    """Per query: a fresh association (not timed), the C-FIND (timed)."""
    ae = AE(ae_title="MODALITY1")
    ae.dimse_timeout = 300
    ae.add_requested_context(ModalityWorklistInformationFind)
    out = {}
    for name, q in QUERIES.items():
        times, cpu, matches = [], [], 0
        for _ in range(repeats):
            assoc = ae.associate("127.0.0.1", port, ae_title=aet)
            if not assoc.is_established:
                raise RuntimeError(f"cannot associate with {aet}")
            # As for DCMTK: no Nagle delay on the client's small writes.
            assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0, c0 = time.perf_counter(), time.process_time()
            n = 0
            final = None
            for status, ds in assoc.send_c_find(q, ModalityWorklistInformationFind):
                final = status.Status if status else None
                if final in (0xFF00, 0xFF01):
                    n += 1
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            assoc.release()
            if final != 0:
                raise RuntimeError(f"{aet} answered {name!r} with status {final}")
            matches = n
        times.sort()
        out[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))], matches,
                     statistics.median(cpu))
    return out


def measure_raw(port, aet, repeats):
    """The server's time: a client that sends the pre-encoded request and
    counts responses without decoding them (bench/dimse_raw.py)."""
    out = {}
    for name, q in QUERIES.items():
        identifier = encode_identifier(q)
        times, matches = [], 0
        for _ in range(repeats):
            with RawFindClient("127.0.0.1", port, aet, calling_aet="MODALITY1",
                               sop_class="1.2.840.10008.5.1.4.31") as client:
                t0 = time.perf_counter()
                matches = client.find(identifier)
                times.append(time.perf_counter() - t0)
        times.sort()
        out[name] = (statistics.median(times), times[int(0.95 * (len(times) - 1))], matches)
    return out


def wait_port(port, proc, what):
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tessera-bin", required=True)
    p.add_argument("--orthanc-bin", default="/usr/sbin/Orthanc")
    p.add_argument("--plugin", default="/usr/share/orthanc/plugins/libModalityWorklists.so")
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--queries", type=int, default=40)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="tessera-wl-")
    items = [item(n) for n in range(args.items)]
    try:
        # Tessera, loaded through its HL7 port.
        dicom, http, hl7 = free_port(), free_port(), free_port()
        tessera = subprocess.Popen(
            [args.tessera_bin, "--data-dir", os.path.join(work, "tessera"),
             "--dicom-bind", f"127.0.0.1:{dicom}", "--http-bind", f"127.0.0.1:{http}",
             "--hl7-bind", f"127.0.0.1:{hl7}", "serve"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(hl7, tessera, "tessera")
        t0 = time.perf_counter()
        send_orders(hl7, items)
        load = time.perf_counter() - t0
        t = measure(dicom, "TESSERA", args.queries)
        t_raw = measure_raw(dicom, "TESSERA", args.queries)
        tessera.terminate()
        tessera.wait()

        # Orthanc with the worklist plugin over a folder of .wl files.
        folder = os.path.join(work, "worklists")
        os.makedirs(folder)
        for n, i in enumerate(items):
            wl_file(i, os.path.join(folder, f"{n:06d}.wl"))
        dicom = free_port()
        config = {
            "Name": "bench-orthanc", "DicomAet": "ORTHANC", "DicomPort": dicom,
            "HttpPort": free_port(), "StorageDirectory": os.path.join(work, "o-storage"),
            "IndexDirectory": os.path.join(work, "o-index"), "RemoteAccessAllowed": False,
            "Plugins": [args.plugin],
            "Worklists": {"Enable": True, "Database": folder},
            "DefaultEncoding": "Utf8",
            # Orthanc refuses worklist queries from unknown AEs otherwise.
            "DicomAlwaysAllowFindWorklist": True,
        }
        cfg = os.path.join(work, "orthanc.json")
        with open(cfg, "w") as f:
            json.dump(config, f)
        orthanc = subprocess.Popen([args.orthanc_bin, cfg], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env={**os.environ, "TCP_NODELAY": "1"})
        wait_port(dicom, orthanc, "orthanc")
        o = measure(dicom, "ORTHANC", args.queries)
        o_raw = measure_raw(dicom, "ORTHANC", args.queries)
        orthanc.terminate()
        orthanc.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.items} scheduled steps; Tessera loaded them as HL7 ORM^O01 in {load:.1f} s "
          f"({args.items / load:.0f} messages/s, one connection)\n")
    print("| query | matches | Tessera p50 | Tessera p95 | Orthanc p50 | Orthanc p95 | p95 ratio "
          "| client CPU per query (p50, against Tessera) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in QUERIES:
        tp50, tp95, tm, tcpu = t[name]
        op50, op95, om, _ = o[name]
        print(f"| {name} | {tm} (Orthanc {om}) | {1e3 * tp50:.1f} ms | {1e3 * tp95:.1f} ms "
              f"| {1e3 * op50:.1f} ms | {1e3 * op95:.1f} ms | {op95 / tp95:.1f}x | {1e3 * tcpu:.1f} ms |")

    print("\nThe same queries from a client that does not decode the matches "
          "(bench/dimse_raw.py), i.e. the servers' own time:\n")
    print("| query | matches | Tessera p50 | Tessera p95 | Orthanc p50 | Orthanc p95 | p95 ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in QUERIES:
        tp50, tp95, tm = t_raw[name]
        op50, op95, om = o_raw[name]
        print(f"| {name} | {tm} (Orthanc {om}) | {1e3 * tp50:.1f} ms | {1e3 * tp95:.1f} ms "
              f"| {1e3 * op50:.1f} ms | {1e3 * op95:.1f} ms | {op95 / tp95:.1f}x |")


if __name__ == "__main__":
    main()
