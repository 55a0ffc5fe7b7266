"""Storage Commitment Push Model SCU (pynetdicom).

usage: commit.py HOST PORT --mode same|new [--listen-port P] [--no-wait]
                 --ref CLASS:UID [--ref ...]
same: wait for the N-EVENT-REPORT on the requesting association.
new:  release at once and wait for it on a new association to our own
      listener (AE COMMITSCU on --listen-port).
--no-wait: only send the N-ACTION (new mode), refuse any report, do not listen.
Prints JSON: {"action_status", "event_type", "transaction_uid",
"committed": [uid...], "failed": [[uid, reason]...]}; exit 1 on timeout.
"""
import argparse
import json
import sys
import threading
import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

INSTANCE = "1.2.840.10008.1.20.1.1"

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--mode", choices=["same", "new"], required=True)
p.add_argument("--listen-port", type=int, default=0)
p.add_argument("--ref", action="append", default=[])
p.add_argument("--no-wait", action="store_true")
p.add_argument("--bulk", type=int, default=0, help="add this many made-up CT references")
p.add_argument("--timeout", type=float, default=30)
args = p.parse_args()

received = {}
done = threading.Event()


def on_report(event):
    ds = event.event_information
    received["event_type"] = event.request.EventTypeID
    received["transaction_uid"] = str(ds.TransactionUID)
    received["committed"] = sorted(str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", []))
    received["failed"] = sorted(
        [str(i.ReferencedSOPInstanceUID), int(i.FailureReason)] for i in ds.get("FailedSOPSequence", [])
    )
    done.set()
    return 0x0000, None


handlers = [(evt.EVT_N_EVENT_REPORT, on_report)]
ae = AE(ae_title="COMMITSCU")
ae.add_requested_context(StorageCommitmentPushModel)
server = None
if args.mode == "new" and not args.no_wait:
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    server = ae.start_server(("127.0.0.1", args.listen_port), block=False, evt_handlers=handlers)

request = Dataset()
request.TransactionUID = generate_uid()
items = []
for ref in args.ref:
    cls, uid = ref.split(":", 1)
    item = Dataset()
    item.ReferencedSOPClassUID = cls
    item.ReferencedSOPInstanceUID = uid
    items.append(item)
for n in range(args.bulk):
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = f"2.25.{n + 1}"
    items.append(item)
request.ReferencedSOPSequence = items

# With --no-wait no handler is bound, so a report on this association is
# refused (pynetdicom answers 0110H) and has to be delivered later.
assoc = ae.associate(args.host, args.port, ae_title="TESSERA",
                     evt_handlers=[] if args.no_wait else handlers)
if not assoc.is_established:
    sys.exit("association failed")
status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, INSTANCE)
action_status = f"0x{status.Status:04X}" if status else "none"
if args.mode == "same":
    deadline = time.time() + args.timeout
    while not done.is_set() and time.time() < deadline and assoc.is_established:
        time.sleep(0.05)
assoc.release()
if args.mode == "new" and not args.no_wait:
    done.wait(args.timeout)
if server:
    server.shutdown()
out = {"action_status": action_status, "transaction_uid": str(request.TransactionUID), **received}
print(json.dumps(out))
sys.exit(0 if (done.is_set() or args.no_wait) else 1)
