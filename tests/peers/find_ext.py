"""Study Root C-FIND at STUDY level with SOP Class Extended Negotiation.

usage: find_ext.py HOST PORT --ext HEX [--key Keyword=Value ...]
Prints JSON {"accepted": HEX or null, "matches": [StudyInstanceUID, ...]}.
"""
import argparse
import json
import threading

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

p = argparse.ArgumentParser()
p.add_argument("host")
p.add_argument("port", type=int)
p.add_argument("--ext", required=True)
p.add_argument("--key", action="append", default=[])
args = p.parse_args()

item = SOPClassExtendedNegotiation()
item.sop_class_uid = FIND
item.service_class_application_information = bytes.fromhex(args.ext)
ae = AE(ae_title="FINDEXT")
ae.add_requested_context(FIND)
assoc = ae.associate(args.host, args.port, ae_title="TESSERA", ext_neg=[item])
if not assoc.is_established:
    raise SystemExit("association failed")
# pynetdicom's association thread can take a C-FIND-RSP off the queue while
# send_c_find() pauses it, and drop it ("Received unexpected C-FIND service
# message", pydicom/pynetdicom#875); fast answers make that likelier. This
# client serves no requests, so that thread is kept from taking messages.
_get_msg = assoc.dimse.get_msg
assoc.dimse.get_msg = lambda block=False: (
    (None, None) if threading.get_ident() == assoc.ident else _get_msg(block)
)
accepted = None
for neg in assoc.acceptor.extended_negotiation:
    if isinstance(neg, SOPClassExtendedNegotiation) and neg.sop_class_uid == FIND:
        accepted = neg.service_class_application_information.hex()
ds = Dataset()
ds.QueryRetrieveLevel = "STUDY"
ds.StudyInstanceUID = ""
for kv in args.key:
    k, v = kv.split("=", 1)
    setattr(ds, k, v)
matches = []
for status, ident in assoc.send_c_find(ds, FIND):
    if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
        matches.append(str(ident.StudyInstanceUID))
assoc.release()
print(json.dumps({"accepted": accepted, "matches": sorted(matches)}))
