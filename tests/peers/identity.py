"""Call Tessera with a user identity (PS3.7 D.3.3.7, user name and
password) and try each service once, with pynetdicom.

usage: identity.py PORT FILE [--user U --password P] [--aet AET]

Prints JSON: {"established": bool, "echo", "store", "find": status or
null}, statuses as integers (0 success, 292 = 0x0124 not authorized);
null when the association was gone before an answer.
"""
import argparse
import json

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.pdu_primitives import UserIdentityNegotiation
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification


def status_of(rsp):
    return int(rsp.Status) if rsp is not None and "Status" in rsp else None


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
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    ext = []
    if args.user:
        identity = UserIdentityNegotiation()
        identity.user_identity_type = 2
        identity.primary_field = args.user.encode()
        identity.secondary_field = args.password.encode()
        ext.append(identity)
    assoc = ae.associate("127.0.0.1", args.port, ae_title="TESSERA", ext_neg=ext)
    out = {"established": assoc.is_established, "echo": None, "store": None, "find": None}
    if assoc.is_established:
        out["echo"] = status_of(assoc.send_c_echo())
        if assoc.is_established:
            out["store"] = status_of(assoc.send_c_store(ds))
        if assoc.is_established:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            final = None
            for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
                if status is not None and "Status" in status:
                    final = int(status.Status)
            out["find"] = final
        if assoc.is_established:
            assoc.release()
    print(json.dumps(out))


main()
