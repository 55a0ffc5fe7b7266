"""C-FIND (Study Root, STUDY level) by the PatientName of FILE, written in
FILE's own Specific Character Set, with its StudyInstanceUID.

usage: charset_find.py HOST PORT FILE
Prints JSON {"matches": n}.
"""
import json
import sys
import threading

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
src = pydicom.dcmread(path)
ds = Dataset()
if "SpecificCharacterSet" in src:
    ds.SpecificCharacterSet = src.SpecificCharacterSet
ds.QueryRetrieveLevel = "STUDY"
ds.StudyInstanceUID = src.StudyInstanceUID
ds.PatientName = src.PatientName
ds.PatientID = ""
ae = AE(ae_title="CHARSET")
ae.add_requested_context(FIND)
assoc = ae.associate(host, port, ae_title="TESSERA")
if not assoc.is_established:
    raise SystemExit("association failed")
# pydicom/pynetdicom#875: keep the association thread from taking responses.
_get_msg = assoc.dimse.get_msg
assoc.dimse.get_msg = lambda block=False: (
    (None, None) if threading.get_ident() == assoc.ident else _get_msg(block)
)
matches = 0
for status, ident in assoc.send_c_find(ds, FIND):
    if status and status.Status in (0xFF00, 0xFF01) and ident is not None:
        matches += 1
assoc.release()
print(json.dumps({"matches": matches}))
