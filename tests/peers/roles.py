"""Propose SCP/SCU role selection for CT Image Storage and print what the
acceptor answered, as JSON: {"as_scu": bool, "as_scp": bool}.

usage: roles.py HOST PORT
"""
import json
import sys

from pynetdicom import AE, build_role
from pynetdicom.sop_class import CTImageStorage

ae = AE(ae_title="ROLES")
ae.add_requested_context(CTImageStorage)
role = build_role(CTImageStorage, scu_role=True, scp_role=True)
assoc = ae.associate(sys.argv[1], int(sys.argv[2]), ae_title="TESSERA", ext_neg=[role])
if not assoc.is_established:
    sys.exit("association failed")
cx = assoc.accepted_contexts[0]
# pynetdicom reports the roles from the requestor's side.
print(json.dumps({"as_scu": cx.as_scu, "as_scp": cx.as_scp}))
assoc.release()
