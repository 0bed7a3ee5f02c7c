#!/usr/bin/env python3
"""An SMTP relay not written by idmesh, for the mail delivery tests:
aiosmtpd (PyPI) with STARTTLS and AUTH.

    smtp_relay.py --port N --out DIR --password-file FILE [--cert C --key K]

With --cert/--key it offers STARTTLS and requires it before AUTH and MAIL;
without, it speaks plain SMTP and offers neither STARTTLS nor AUTH. AUTH
(PLAIN or LOGIN) accepts the user `idmesh` with the password currently in
--password-file (read at every attempt, so a test can change it while the
relay runs). Each accepted message is written to DIR as N.eml, exactly as
received. Prints `READY <port>` once listening; stops when stdin closes.
"""

import argparse
import logging
import pathlib
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keep:
    def __init__(self, out):
        self.out = pathlib.Path(out)
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if session.ssl is None and server.require_starttls:
            return "530 5.7.0 Must issue a STARTTLS command first"
        with self.lock:
            self.count += 1
            n = self.count
        tmp = self.out / f".{n}.tmp"
        tmp.write_bytes(envelope.original_content)
        tmp.rename(self.out / f"{n}.eml")
        return "250 2.0.0 OK"


def authenticator(password_file):
    def check(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        expected = pathlib.Path(password_file).read_text().strip().encode()
        ok = auth_data.login == b"idmesh" and auth_data.password == expected
        print(f"AUTH {mechanism} {'ok' if ok else 'refused'}", flush=True)
        # handled=False: aiosmtpd answers (235 or 535) itself; True would
        # mean this function already answered, and a refused client would
        # wait for a reply that never comes.
        return AuthResult(success=ok, handled=False)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    kwargs = {}
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        kwargs = dict(
            tls_context=context,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=authenticator(args.password_file),
            auth_required=True,
        )
    controller = Controller(
        Keep(args.out), hostname="127.0.0.1", port=args.port, **kwargs
    )
    controller.start()
    print(f"READY {args.port}", flush=True)
    # Each session and command on stdout, after READY (the test echoes it).
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
