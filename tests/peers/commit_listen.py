"""Listen as AE COMMITSCU for one storage commitment N-EVENT-REPORT.

usage: commit_listen.py PORT TIMEOUT_SECONDS
Prints JSON {"event_type", "committed": [...], "failed": [...]}; exit 1 on timeout.
"""
import json
import sys
import threading

from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

got = {}
done = threading.Event()


def on_report(event):
    ds = event.event_information
    got["event_type"] = event.request.EventTypeID
    got["committed"] = sorted(str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", []))
    got["failed"] = sorted(
        [str(i.ReferencedSOPInstanceUID), int(i.FailureReason)] for i in ds.get("FailedSOPSequence", [])
    )
    done.set()
    return 0x0000, None


ae = AE(ae_title="COMMITSCU")
ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
server = ae.start_server(("127.0.0.1", int(sys.argv[1])), block=False,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
ok = done.wait(float(sys.argv[2]))
server.shutdown()
print(json.dumps(got))
sys.exit(0 if ok else 1)
