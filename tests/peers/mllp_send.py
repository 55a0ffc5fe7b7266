"""Send HL7 v2 messages to an MLLP port with the `hl7` package's client and
print what came back, as JSON: one entry per message sent, with the raw
acknowledgement and its MSA-1, MSA-2 and ERR-3 code.

usage: mllp_send.py PORT FILE... [--repeat N] [--force-encoding ENC]
       [--connections N] [--ack-log PATH]
       [--tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem]]

Each FILE holds one message with `\n` line ends, sent with `\r` ones and
encoded in the set its MSH-18 names (8859/1: latin-1, else UTF-8) unless
--force-encoding says otherwise. --repeat sends each message N times in a
row. --connections spreads the files over N connections at once.
--ack-log appends MSH-10 of each message acknowledged AA, as it happens.
--tls-ca speaks TLS, trusting that CA for the server's certificate (which
must name 127.0.0.1); --tls-cert/--tls-key present a client certificate.
"""
import argparse
import json
import ssl
import sys
import threading

import hl7
from hl7.client import MLLPClient


def encoding_of(text):
    fields = text.split("\r", 1)[0].split("|")
    charset = fields[17].split("~")[0].strip().upper() if len(fields) > 17 else ""
    return "latin-1" if charset in ("8859/1", "ISO IR100") else "utf-8"


def secure(client, args):
    """Wrap the client's connected socket in TLS; the handshake runs here."""
    if not args.tls_ca:
        return client
    ctx = ssl.create_default_context(cafile=args.tls_ca)
    if args.tls_cert:
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    client.socket = ctx.wrap_socket(client.socket, server_hostname="127.0.0.1")
    return client


def send_all(port, files, args, results, lock, ack_log):
    with secure(MLLPClient("127.0.0.1", port), args) as client:
        for path in files:
            with open(path, encoding="utf-8") as f:
                text = f.read().replace("\r\n", "\n").strip("\n").replace("\n", "\r") + "\r"
            encoding = args.force_encoding or encoding_of(text)
            for _ in range(args.repeat):
                raw = client.send_message(text.encode(encoding))
                # Strip the MLLP envelope.
                body = raw.strip(b"\x0b\x1c\r\n")
                decoded = body.decode(encoding, errors="replace")
                ack = hl7.parse(decoded)
                entry = {
                    "file": path,
                    "ack": decoded,
                    "code": str(ack.segment("MSA")[1]),
                    "control": str(ack.segment("MSA")[2]),
                    "ack_control": str(ack.segment("MSH")[10]),
                }
                err = [s for s in decoded.split("\r") if s.startswith("ERR|")]
                fields = err[0].split("|") if err else []
                entry["error_code"] = fields[3].split("^")[0] if len(fields) > 3 else ""
                with lock:
                    results.append(entry)
                    if ack_log and entry["code"] == "AA":
                        ack_log.write(entry["control"] + "\n")
                        ack_log.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("files", nargs="+")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--force-encoding")
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--ack-log")
    p.add_argument("--tls-ca")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    args = p.parse_args()
    results, lock = [], threading.Lock()
    ack_log = open(args.ack_log, "a") if args.ack_log else None
    shards = [args.files[i :: args.connections] for i in range(args.connections)]
    errors = []

    def run(shard):
        try:
            send_all(args.port, shard, args, results, lock, ack_log)
        except Exception as e:  # reported, and the exit code says so
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(s,)) for s in shards if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"results": results, "errors": errors}, sys.stdout, ensure_ascii=False)
    sys.exit(1 if errors else 0)


main()
