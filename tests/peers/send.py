"""Send Part-10 files with pynetdicom over one or more parallel associations.

usage: send.py HOST PORT FILE_OR_DIR... [--aet TESSERA] [--calling-aet AE] [--assocs N]
               [--ack-log PATH] [--allow-failures] [--echo] [--timeout S]
Each association proposes the SOP class and transfer syntax of its files,
so data sets travel as they are stored. Prints a JSON summary:
{"sent": n, "success": n, "statuses": {"0x0000": n, ...}}
With --ack-log, every file answered with success is appended (and flushed)
as soon as its response arrives.
"""
import argparse
import json
import logging
import os
import sys
import threading

from pydicom import dcmread
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification


def collect(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files.extend(os.path.join(root, n) for n in sorted(names))
        else:
            files.append(p)
    return sorted(files)


def keep_responses(assoc):
    """pynetdicom's association thread can take a C-STORE-RSP off the queue
    while send_c_store() waits for it, and drop it ("Received unexpected
    C-STORE service message", pydicom/pynetdicom#875); the store then looks
    unanswered. This client serves no requests, so that thread is kept from
    taking messages."""
    get_msg = assoc.dimse.get_msg
    assoc.dimse.get_msg = lambda block=False: (
        (None, None) if threading.get_ident() == assoc.ident else get_msg(block)
    )


def worker(files, args, results, ack, lock):
    datasets = []
    contexts = set()
    for f in files:
        ds = dcmread(f)
        contexts.add((ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID))
        datasets.append((f, ds))
    ae = AE(ae_title=args.calling_aet)
    ae.acse_timeout = 30
    ae.dimse_timeout = args.timeout
    ae.network_timeout = args.timeout
    ae.maximum_pdu_size = 65536
    requested = [build_context(c, t) for c, t in sorted(contexts)]
    if args.echo:
        requested.append(build_context(Verification))
    ae.requested_contexts = requested[:128]
    assoc = ae.associate(args.host, args.port, ae_title=args.aet)
    if not assoc.is_established:
        with lock:
            results["statuses"]["association-failed"] = results["statuses"].get("association-failed", 0) + len(files)
        return
    keep_responses(assoc)
    try:
        if args.echo:
            st = assoc.send_c_echo()
            with lock:
                results["echo"] = f"0x{st.Status:04X}" if st else "none"
        for f, ds in datasets:
            if not assoc.is_established:
                break
            status = assoc.send_c_store(ds)
            code = f"0x{status.Status:04X}" if status and "Status" in status else "none"
            with lock:
                results["sent"] += 1
                results["statuses"][code] = results["statuses"].get(code, 0) + 1
                if code == "0x0000":
                    results["success"] += 1
                    if ack:
                        ack.write(f + "\n")
                        ack.flush()
                        os.fsync(ack.fileno())
    finally:
        if assoc.is_established:
            assoc.release()


def main():
    # pynetdicom's own warnings and errors (a dropped response, an abort)
    # on stderr, so a failed run says why.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").addHandler(handler)
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("paths", nargs="*")
    p.add_argument("--aet", default="TESSERA")
    p.add_argument("--calling-aet", default="PYNETDICOM")
    p.add_argument("--assocs", type=int, default=1)
    p.add_argument("--ack-log")
    p.add_argument("--allow-failures", action="store_true")
    p.add_argument("--echo", action="store_true")
    p.add_argument("--timeout", type=float, default=120,
                   help="DIMSE and network timeout in seconds (a server that died is noticed after it)")
    args = p.parse_args()
    files = collect(args.paths)
    shards = [files[i::args.assocs] for i in range(args.assocs)]
    results = {"sent": 0, "success": 0, "statuses": {}}
    lock = threading.Lock()
    ack = open(args.ack_log, "a") if args.ack_log else None
    threads = [
        threading.Thread(target=worker, args=(s, args, results, ack, lock))
        for s in shards
        if s or args.echo
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results))
    ok = results["success"] == len(files) and results.get("echo", "0x0000") == "0x0000"
    sys.exit(0 if ok or args.allow_failures else 1)


if __name__ == "__main__":
    main()
