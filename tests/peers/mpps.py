"""Send one MPPS N-CREATE or N-SET with pynetdicom, each on its own
association, and print the response status as JSON.

usage: mpps.py PORT create UID [--step SPS_ID] [--accession A] [--study UID]
       mpps.py PORT set UID --status COMPLETED|DISCONTINUED [--series UID...]
"""
import argparse
import json

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

p = argparse.ArgumentParser()
p.add_argument("port", type=int)
p.add_argument("op", choices=["create", "set"])
p.add_argument("uid")
p.add_argument("--step", default="")
p.add_argument("--accession", default="")
p.add_argument("--study", default="")
p.add_argument("--status", default="COMPLETED")
p.add_argument("--series", nargs="*", default=[])
args = p.parse_args()

ae = AE(ae_title="MODALITY1")
ae.add_requested_context(ModalityPerformedProcedureStep)
assoc = ae.associate("127.0.0.1", args.port, ae_title="TESSERA")
if not assoc.is_established:
    raise SystemExit("association failed")
ds = Dataset()
if args.op == "create":
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Vũ^Thị Mai"
    ds.PatientID = "PID22-0"
    item = Dataset()
    item.StudyInstanceUID = args.study
    item.AccessionNumber = args.accession
    item.ScheduledProcedureStepID = args.step
    item.RequestedProcedureID = ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PerformedProcedureStepID = "PPS-" + args.uid[-6:]
    ds.PerformedStationAETitle = "PETCT1"
    ds.PerformedProcedureStepStartDate = "20261206"
    ds.PerformedProcedureStepStartTime = "081500"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    status, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep, args.uid)
else:
    ds.PerformedProcedureStepStatus = args.status
    ds.PerformedProcedureStepEndDate = "20261206"
    ds.PerformedProcedureStepEndTime = "084500"
    series = []
    for uid in args.series:
        s = Dataset()
        s.SeriesInstanceUID = uid
        s.ReferencedImageSequence = []
        series.append(s)
    ds.PerformedSeriesSequence = series
    if args.status == "DISCONTINUED":
        reason = Dataset()
        reason.CodeValue = "110514"
        reason.CodingSchemeDesignator = "DCM"
        reason.CodeMeaning = "Incorrect worklist entry selected"
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
    status, _ = assoc.send_n_set(ds, ModalityPerformedProcedureStep, args.uid)
assoc.release()
print(json.dumps({"status": status.Status if status else None}))
