"""Forwarding destination: Storage SCP plus Storage Commitment Push Model SCP.

usage: commit_scp.py --port P [--ae DEST] --mode same|new|never --log FILE
                     [--callback-ae TESSERA] [--callback-host 127.0.0.1]
                     [--callback-port N] [--fail-first K] [--refuse-action]
                     [--delay S]
Listens on 127.0.0.1:P (0 picks a free port), accepts any called AE title and
prints "ready PORT" once listening. Runs until SIGTERM.
Every event is appended (and flushed) to --log as one JSON line:
  {"event": "store", "sop_instance_uid": uid}
  {"event": "action", "transaction_uid": uid, "refs": [[class, uid], ...]}
  {"event": "report", "mode": "same"|"new", "transaction_uid": uid,
   "committed": [uid...], "failed": [uid...], "status": int|null}
  {"event": "report_failed", "error": text}  (new: retried; same: given up)
References to instances received here (same SOP class) are committed, others
fail with reason 0112H; the first K N-ACTIONs (--fail-first) fail all with
0110H. same: report on the requesting association after --delay seconds.
new: once that association has ended (and --delay passed), report on a new
association to the callback listener, proposing the SCP role; retried every
second, 30 tries. never: no report. --refuse-action: N-ACTION answers 0110H
(the action is still logged) and nothing is reported.
"""
import argparse
import json
import signal
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

INSTANCE = "1.2.840.10008.1.20.1.1"

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--ae", default="DEST")
p.add_argument("--mode", choices=["same", "new", "never"], required=True)
p.add_argument("--callback-ae", default="TESSERA")
p.add_argument("--callback-host", default="127.0.0.1")
p.add_argument("--callback-port", type=int, default=0)
p.add_argument("--fail-first", type=int, default=0)
p.add_argument("--refuse-action", action="store_true")
p.add_argument("--delay", type=float, default=0.2)
p.add_argument("--log", required=True)
args = p.parse_args()

lock = threading.Lock()
log_file = open(args.log, "a")
received = {}  # SOP Instance UID -> SOP Class UID
actions = [0]


def log(**entry):
    with lock:
        log_file.write(json.dumps(entry) + "\n")
        log_file.flush()


def on_store(event):
    uid = str(event.request.AffectedSOPInstanceUID)
    with lock:
        received[uid] = str(event.request.AffectedSOPClassUID)
    log(event="store", sop_instance_uid=uid)
    return 0x0000


def build_report(txn, refs, lost):
    ds = Dataset()
    ds.TransactionUID = txn
    ok, bad = [], []
    for cls, uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = cls
        item.ReferencedSOPInstanceUID = uid
        with lock:
            here = received.get(uid) == cls
        if here and not lost:
            ok.append(item)
        else:
            item.FailureReason = 0x0110 if lost else 0x0112
            bad.append(item)
    if ok:
        ds.ReferencedSOPSequence = ok
    if bad:
        ds.FailedSOPSequence = bad
    summary = {"transaction_uid": txn,
               "committed": [str(i.ReferencedSOPInstanceUID) for i in ok],
               "failed": [str(i.ReferencedSOPInstanceUID) for i in bad]}
    return ds, (2 if bad else 1), summary


def status_of(rsp):
    return int(rsp.Status) if rsp is not None and "Status" in rsp else None


def report_same(assoc, report, event_type, summary):
    # Sending from inside the N-ACTION handler would deadlock: send_*() waits
    # for the acceptor's reactor to pause, which it only does between
    # messages, i.e. once the N-ACTION-RSP has been sent.
    time.sleep(args.delay)
    try:
        rsp, _ = assoc.send_n_event_report(report, event_type, StorageCommitmentPushModel, INSTANCE)
        status = status_of(rsp)
    except Exception as exc:  # association gone before the report
        log(event="report_failed", error=repr(exc))
        return
    log(event="report", mode="same", **summary, status=status)


def report_new(assoc, report, event_type, summary):
    time.sleep(args.delay)
    while assoc.is_alive():
        time.sleep(0.05)
    for _ in range(30):
        error = None
        caller = AE(ae_title=args.ae)
        caller.acse_timeout = caller.dimse_timeout = 10
        caller.add_requested_context(StorageCommitmentPushModel)
        out = caller.associate(args.callback_host, args.callback_port, ae_title=args.callback_ae,
                               ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)])
        if out.is_established:
            try:
                rsp, _ = out.send_n_event_report(report, event_type, StorageCommitmentPushModel, INSTANCE)
                status = status_of(rsp)
                if status is None:
                    error = "no N-EVENT-REPORT-RSP"
            except Exception as exc:
                error = repr(exc)
            if out.is_established:
                out.release()
        else:
            error = "association not established"
        if error is None:
            log(event="report", mode="new", **summary, status=status)
            return
        log(event="report_failed", error=error)
        time.sleep(1)


def on_action(event):
    if event.request.ActionTypeID != 1:
        return 0x0123, None
    info = event.action_information
    txn = str(info.TransactionUID)
    refs = [[str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)]
            for i in info.get("ReferencedSOPSequence", [])]
    log(event="action", transaction_uid=txn, refs=refs)
    if args.refuse_action:
        return 0x0110, None
    with lock:
        actions[0] += 1
        lost = actions[0] <= args.fail_first
    if args.mode != "never":
        report, event_type, summary = build_report(txn, refs, lost)
        target = report_same if args.mode == "same" else report_new
        threading.Thread(target=target, args=(event.assoc, report, event_type, summary),
                         daemon=True).start()
    return 0x0000, None


ae = AE(ae_title=args.ae)
ae.dimse_timeout = 10
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
ae.add_supported_context(StorageCommitmentPushModel)
ae.add_supported_context(Verification)
server = ae.start_server(("127.0.0.1", args.port), block=False,
                         evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_N_ACTION, on_action)])
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())
print(f"ready {server.server_address[1]}", flush=True)
while not stop.wait(0.5):
    pass
server.shutdown()
log_file.close()
