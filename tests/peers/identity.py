"""Call Tessera with a user identity (PS3.7 D.3.3.7, user name and
password) and try each service once, with pynetdicom.

usage: identity.py PORT FILE [--user U --password P] [--aet AET]

Prints JSON: {"established": bool, "echo", "store", "find", "move",
"get", "commit", "mpps": status or null}, statuses as integers (0
success, 292 = 0x0124 not authorized, anything else: the service ran and
answered for itself); null when the association was gone before an
answer, and then "lost" says which service, after how long, and whether
the association was aborted.
"""
import argparse
import json
import time

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


def status_of(rsp):
    return int(rsp.Status) if rsp is not None and "Status" in rsp else None


def final_status(responses):
    final = None
    for status, _ in responses:
        if status is not None and "Status" in status:
            final = int(status.Status)
    return final


def study_query(uid):
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    return query


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("file")
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("--aet", default="IDENTITY")
    args = p.parse_args()
    ds = dcmread(args.file)
    ae = AE(ae_title=args.aet)
    # A hang must fail the test, not stall it.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for context in (
        Verification,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
        StorageCommitmentPushModel,
        ModalityPerformedProcedureStep,
    ):
        ae.add_requested_context(context)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ext = [build_role(ds.SOPClassUID, scu_role=True, scp_role=True)]
    if args.user:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 2
        identity.primary_field = args.user.encode()
        identity.secondary_field = args.password.encode()
        ext.append(identity)
    # C-GET sends what it finds back on this association, and a storage
    # commitment report may come on it too; take both.
    handlers = [
        (evt.EVT_C_STORE, lambda event: 0x0000),
        (evt.EVT_N_EVENT_REPORT, lambda event: (0x0000, None)),
    ]
    assoc = ae.associate("127.0.0.1", args.port, ae_title="TESSERA", ext_neg=ext, evt_handlers=handlers)
    # Commitment last: its report may follow on this association.
    services = ["echo", "store", "find", "move", "get", "mpps", "commit"]
    out = {"established": assoc.is_established, **{s: None for s in services}}
    calls = {
        "echo": lambda: status_of(assoc.send_c_echo()),
        "store": lambda: status_of(assoc.send_c_store(ds)),
        "find": lambda: final_status(
            assoc.send_c_find(study_query(""), StudyRootQueryRetrieveInformationModelFind)
        ),
        # An unknown destination: a permitted C-MOVE answers A801.
        "move": lambda: final_status(
            assoc.send_c_move(
                study_query(ds.StudyInstanceUID), "NOWHERE", StudyRootQueryRetrieveInformationModelMove
            )
        ),
        "get": lambda: final_status(
            assoc.send_c_get(study_query(ds.StudyInstanceUID), StudyRootQueryRetrieveInformationModelGet)
        ),
        "commit": lambda: status_of(
            assoc.send_n_action(commit_request(ds), 1, StorageCommitmentPushModel, COMMITMENT_INSTANCE)[0]
        ),
        "mpps": lambda: status_of(
            assoc.send_n_create(mpps_request(ds), ModalityPerformedProcedureStep, generate_uid())[0]
        ),
    }
    for service in services:
        if not assoc.is_established:
            break
        started = time.monotonic()
        out[service] = calls[service]()
        if out[service] is None:
            # Why there was no answer, for the test's failure message.
            out["lost"] = {
                "service": service,
                "after_secs": round(time.monotonic() - started, 3),
                "aborted": assoc.is_aborted,
            }
    if assoc.is_established:
        assoc.release()
    print(json.dumps(out))


def commit_request(ds):
    request = Dataset()
    request.TransactionUID = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    request.ReferencedSOPSequence = [item]
    return request


def mpps_request(ds):
    request = Dataset()
    request.PatientName = ds.get("PatientName", "")
    request.PatientID = ds.get("PatientID", "")
    step = Dataset()
    step.StudyInstanceUID = ds.StudyInstanceUID
    step.AccessionNumber = ""
    step.ScheduledProcedureStepID = ""
    step.RequestedProcedureID = ""
    request.ScheduledStepAttributesSequence = [step]
    request.PerformedProcedureStepID = "PPS-IDENTITY"
    request.PerformedStationAETitle = "IDENTITY"
    request.PerformedProcedureStepStartDate = "20261203"
    request.PerformedProcedureStepStartTime = "120000"
    request.PerformedProcedureStepStatus = "IN PROGRESS"
    request.Modality = ds.get("Modality", "CT")
    request.PerformedSeriesSequence = []
    return request


main()
