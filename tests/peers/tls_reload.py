"""Check that a SIGHUP makes Tessera's DICOM TLS port present a new
certificate without dropping an open association.

usage: tls_reload.py PORT CA CLIENT_CERT CLIENT_KEY PID NEW_CERT NEW_KEY
                     LIVE_CERT LIVE_KEY

Opens a pynetdicom association over TLS and sends a C-ECHO, notes the
server certificate, copies NEW_CERT/NEW_KEY over LIVE_CERT/LIVE_KEY (the
files Tessera was started with), sends SIGHUP to PID, waits until a new
TLS connection shows the new certificate, then sends a second C-ECHO on
the first association and releases it. Prints JSON:
{"before", "after", "expected", "echo_before", "echo_after", "released"}
with the certificates as SHA-256 hex of their DER.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification


def context(ca, cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.load_cert_chain(cert, key)
    return ctx


def presented(port, ctx):
    """SHA-256 of the certificate a fresh handshake shows."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(path):
    with open(path) as f:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read())).hexdigest()


def main():
    port, ca, cert, key, pid, new_cert, new_key, live_cert, live_key = sys.argv[1:10]
    port, pid = int(port), int(pid)
    ctx = context(ca, cert, key)
    ae = AE(ae_title="RELOADER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="TESSERA", tls_args=(ctx, "127.0.0.1"))
    if not assoc.is_established:
        print(json.dumps({"error": "association over TLS not established"}))
        sys.exit(1)
    echo_before = assoc.send_c_echo().Status
    before = presented(port, ctx)
    shutil.copyfile(new_cert, live_cert + ".tmp")
    shutil.copyfile(new_key, live_key + ".tmp")
    os.replace(live_key + ".tmp", live_key)
    os.replace(live_cert + ".tmp", live_cert)
    os.kill(pid, signal.SIGHUP)
    after = before
    deadline = time.time() + 10
    while after == before and time.time() < deadline:
        time.sleep(0.1)
        after = presented(port, ctx)
    echo_after = assoc.send_c_echo().Status if assoc.is_established else None
    assoc.release()
    print(json.dumps({
        "before": before,
        "after": after,
        "expected": file_fingerprint(new_cert),
        "echo_before": int(echo_before),
        "echo_after": None if echo_after is None else int(echo_after),
        "released": assoc.is_released,
    }))


main()
