#!/usr/bin/env python3
"""Smoke test of a running idmesh platform, through its public edge.

    smoke.py EDGE_URL ACCOUNT_URL MAIL_LOG_COMMAND...

Reads the operator token from IDM_OPERATOR_TOKEN. Creates an account with the
operator API, signs one user up from the browser side (placed in the default
region, weur) and one from the backend in apac; signs each in, refreshes
the session (and checks the old refresh token is dead), then signs in without
a password with an email code that it reads from the mail catcher's log
(MAIL_LOG_COMMAND prints it). Prints one line per check and, last,
"N passed, N failed". Exit code 0 only if every check passed.

Only the standard library: it runs wherever python3 does.
"""

import email
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

ORIGIN = "http://localhost:3000"


class Smoke:
    def __init__(self, edge, account, mail_log_command):
        self.edge = edge.rstrip("/")
        self.account = account.rstrip("/")
        self.mail_log_command = mail_log_command
        self.passed = 0
        self.failed = 0

    def call(self, method, url, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("content-type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok     {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAILED {name}: {detail}", flush=True)
        return ok

    def client(self, path, rk, body, session=None):
        headers = {"Origin": ORIGIN}
        if session:
            headers["Authorization"] = f"Bearer {session}"
            headers["Idm-Api-Key"] = rk
        else:
            headers["Authorization"] = f"Bearer {rk}"
        return self.call("POST", self.edge + path, body, headers)

    def backend(self, method, path, sk, body=None):
        return self.call(method, self.edge + path, body, {"Authorization": f"Bearer {sk}"})

    def mail_code_for(self, address, timeout=30):
        """The six-digit code of the newest message to `address` in the mail
        catcher's log (aiosmtpd's Debugging handler prints each message)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(
                self.mail_log_command, capture_output=True, text=True, check=False
            ).stdout
            # Each line is prefixed by the container name in compose logs.
            out = "\n".join(re.sub(r"^[^|]*\| ?", "", line) for line in out.splitlines())
            messages = re.findall(
                r"^-+ MESSAGE FOLLOWS -+\n(.*?)\n-+ END MESSAGE -+$", out, re.S | re.M
            )
            for raw in reversed(messages):
                lines = raw.splitlines()
                # aiosmtpd puts "mail options: ..." and a blank line first.
                while lines and (not lines[0].strip() or re.match(r"(mail|rcpt) options:", lines[0])):
                    lines.pop(0)
                msg = email.message_from_string("\n".join(lines))
                if address not in (msg.get("To") or ""):
                    continue
                for part in msg.walk():
                    if part.get_content_maintype() != "text":
                        continue
                    text = (part.get_payload(decode=True) or b"").decode(errors="replace")
                    # The code stands on a line of its own; anywhere else a
                    # run of six digits may be part of the issuer's name
                    # (`smoke <random hex>`), which once made this read it.
                    found = re.search(r"^\s*(\d{6})\s*$", text, re.M)
                    if found:
                        return found.group(1)
            time.sleep(1)
        return None

    def run(self):
        token = os.environ["IDM_OPERATOR_TOKEN"]
        tag = secrets.token_hex(4)
        password = "correct horse battery " + tag

        status, body = self.call(
            "POST",
            self.account + "/admin/v1/accounts",
            {"name": f"smoke {tag}"},
            {"Authorization": f"Bearer {token}"},
        )
        if not self.check("operator API creates an account", status == 201, f"{status} {body}"):
            return
        sk, rk = body["secret_key"], body["restricted_key"]

        status, body = self.backend(
            "PATCH", "/v1/issuer", sk, {"allowed_origins": ["localhost"]}
        )
        self.check("secret key sets allowed origins", status == 200, f"{status} {body}")

        users = {}
        # The browser's sign-up lands in the platform's default region (weur:
        # no trusted proxy, so no country); the backend places the second
        # user in apac explicitly. (Changing the issuer's default region
        # between the two would race the edge's key cache, which hears of
        # policy changes asynchronously.)
        address = f"smoke-weur-{tag}@example.com"
        status, body = self.client("/v1/client/sign_up", rk, {"email": address, "password": password})
        placed = body.get("user", {}).get("region") if isinstance(body, dict) else None
        self.check(
            f"browser signs up {address}, placed in weur",
            status == 201 and placed == "weur",
            f"{status} {body}",
        )
        users["weur"] = address
        address = f"smoke-apac-{tag}@example.com"
        status, body = self.backend(
            "POST", "/v1/users", sk, {"email": address, "password": password, "region": "apac"}
        )
        placed = body.get("region") if isinstance(body, dict) else None
        self.check(
            f"backend signs up {address} in apac",
            status == 201 and placed == "apac",
            f"{status} {body}",
        )
        users["apac"] = address

        for region, address in users.items():
            status, body = self.backend("GET", f"/v1/users?email={address}", sk)
            self.check(
                f"backend reads the {region} user back",
                status == 200 and isinstance(body, dict) and body.get("region") == region,
                f"{status} {body}",
            )
            status, body = self.client(
                "/v1/client/sign_in", rk, {"email": address, "password": password}
            )
            if not self.check(f"sign in {region}", status == 200, f"{status} {body}"):
                continue
            session, refresh = body["session_token"], body["refresh_token"]
            status, me = self.call(
                "GET",
                self.edge + "/v1/client/me",
                None,
                {"Origin": ORIGIN, "Authorization": f"Bearer {session}", "Idm-Api-Key": rk},
            )
            self.check(
                f"session of {region} user reads /v1/client/me",
                status == 200 and isinstance(me, dict) and me.get("email") == address,
                f"{status} {me}",
            )
            status, body = self.client("/v1/client/token/refresh", rk, {"refresh_token": refresh})
            self.check(
                f"refresh {region} session",
                status == 200 and body.get("refresh_token") not in (None, refresh),
                f"{status} {body}",
            )
            status, body = self.client("/v1/client/token/refresh", rk, {"refresh_token": refresh})
            self.check(
                f"used refresh token of {region} is refused",
                status == 401,
                f"{status} {body}",
            )

        address = users["weur"]
        status, body = self.client("/v1/client/email_codes", rk, {"email": address})
        if self.check("email code requested", status == 202, f"{status} {body}"):
            code = self.mail_code_for(address)
            if self.check("mail catcher received the code", code is not None, "no message"):
                status, body = self.client(
                    "/v1/client/email_codes/verify", rk, {"email": address, "code": code}
                )
                self.check(
                    "email code signs in",
                    status == 200 and "session_token" in (body or {}),
                    f"{status} {body}",
                )


def main():
    if len(sys.argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    smoke = Smoke(sys.argv[1], sys.argv[2], sys.argv[3:])
    try:
        smoke.run()
    except Exception as err:  # report, never hide: counts as a failure
        smoke.check("smoke run completed", False, repr(err))
    print(f"{smoke.passed} passed, {smoke.failed} failed")
    return 0 if smoke.failed == 0 and smoke.passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
