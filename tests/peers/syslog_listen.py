"""A syslog collector over TLS (RFC 5425) for the audit trail's tests.

usage: syslog_listen.py PORT_FILE OUT CERT KEY

Listens on 127.0.0.1 (any port, written to PORT_FILE once listening) with
the given certificate, reads octet-counted frames ("LEN SP MSG") from each
connection, and appends every message as one JSON string per line to OUT.
"""
import json
import socket
import ssl
import sys
import threading


def serve(conn, out, lock):
    buf = b""
    with conn:
        while True:
            try:
                data = conn.recv(65536)
            except (ssl.SSLError, OSError):
                return
            if not data:
                return
            buf += data
            while b" " in buf:
                length, rest = buf.split(b" ", 1)
                if not length.isdigit():
                    return
                n = int(length)
                if len(rest) < n:
                    break
                message, buf = rest[:n], rest[n:]
                with lock, open(out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(message.decode("utf-8", errors="replace")) + "\n")


def main():
    port_file, out, cert, key = sys.argv[1:5]
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    lock = threading.Lock()
    with socket.create_server(("127.0.0.1", 0)) as server:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(server.getsockname()[1]))
        import os

        os.replace(port_file + ".tmp", port_file)
        while True:
            raw, _ = server.accept()
            try:
                conn = ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError):
                raw.close()
                continue
            threading.Thread(target=serve, args=(conn, out, lock), daemon=True).start()


main()
