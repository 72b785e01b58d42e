"""A TLS front for a plain-HTTP server, for the tests of --ca-bundle: accepts TLS with the given
certificate on a free loopback port (printed on the first line), and pipes each connection to
the upstream TCP address unchanged.

usage: python3 tls_forward.py CERT KEY UPSTREAM_HOST UPSTREAM_PORT
"""
import socket
import ssl
import sys
import threading

cert, key, up_host, up_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(raw):
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError):
        raw.close()
        return
    up = socket.create_connection((up_host, up_port))
    threading.Thread(target=pipe, args=(tls, up), daemon=True).start()
    pipe(up, tls)


while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
