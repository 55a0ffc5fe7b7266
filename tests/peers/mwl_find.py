"""Query a Modality Worklist SCP with pynetdicom and print the matches as
JSON: one object per match with PatientName, PatientID, AccessionNumber
and the first Scheduled Procedure Step item's Modality, station AE titles,
start date and status.

usage: mwl_find.py PORT [--modality M] [--station AE] [--date RANGE]
       [--time RANGE] [--name PATTERN]
"""
import argparse
import json

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("--modality", default="")
p.add_argument("--station", default="")
p.add_argument("--date", default="")
p.add_argument("--time", default="")
p.add_argument("--name", default="")
args = p.parse_args()

query = Dataset()
query.SpecificCharacterSet = "ISO_IR 192"
query.PatientName = args.name
query.PatientID = ""
query.AccessionNumber = ""
query.StudyInstanceUID = ""
item = Dataset()
item.Modality = args.modality
item.ScheduledStationAETitle = args.station
item.ScheduledProcedureStepStartDate = args.date
item.ScheduledProcedureStepStartTime = args.time
item.ScheduledProcedureStepStatus = ""
item.ScheduledProcedureStepID = ""
query.ScheduledProcedureStepSequence = [item]

ae = AE(ae_title="MODALITY1")
ae.add_requested_context(ModalityWorklistInformationFind)
assoc = ae.associate("127.0.0.1", args.port, ae_title="TESSERA")
if not assoc.is_established:
    raise SystemExit("association failed")
matches, final = [], None
for status, ds in assoc.send_c_find(query, ModalityWorklistInformationFind):
    final = status.Status if status else None
    if status and status.Status in (0xFF00, 0xFF01) and ds is not None:
        sps = ds.ScheduledProcedureStepSequence[0]
        stations = sps.ScheduledStationAETitle
        matches.append({
            "PatientName": str(ds.PatientName),
            "CharacterSet": ds.get("SpecificCharacterSet", ""),
            "PatientID": ds.PatientID,
            "AccessionNumber": ds.AccessionNumber,
            "StudyInstanceUID": ds.StudyInstanceUID,
            "Modality": sps.Modality,
            "Stations": [stations] if isinstance(stations, str) else list(stations),
            "StartDate": sps.ScheduledProcedureStepStartDate,
            "Status": sps.ScheduledProcedureStepStatus,
        })
assoc.release()
print(json.dumps({"final": final, "matches": matches}, ensure_ascii=False))
