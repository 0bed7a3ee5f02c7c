#!/usr/bin/env python3
"""Strict checks of .eml files written by idm-auth's mail tests.

    mail_check.py [--dns NAME=TXT]... [--dkim] FILE.eml...

Each file is parsed with Python's `email` package under `policy.strict`
(any defect raises), then checked: the standard headers are there and well
formed, `Message-ID` is on the sender's domain, the body is a
multipart/alternative of a UTF-8 text/plain and a UTF-8 text/html part, and
the HTML holds only the tags the templates write (no markup from outside).
With --dkim, the DKIM-Signature is verified by dkimpy (PyPI `dkimpy`, an
implementation independent of lettre's) against the keys given with --dns
instead of DNS (Ed25519 keys need PyPI `pynacl` too). Prints one line per file; exits 1 on any failure, 3 when
--dkim was asked for and dkimpy is not installed.
"""

import argparse
import email
import email.policy
import email.utils
import html
import html.parser
import sys

ALLOWED_TAGS = {"html", "head", "meta", "title", "style", "body", "table", "tr", "td", "p", "a", "img", "br"}
ALLOWED_ATTRS = {
    "lang", "charset", "name", "content", "style", "class", "role", "width", "height",
    "cellpadding", "cellspacing", "border", "align", "href", "src", "alt",
}


class TagCheck(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"unexpected tag <{tag}>")
        for name, value in attrs:
            if name not in ALLOWED_ATTRS:
                self.problems.append(f"unexpected attribute {name} on <{tag}>")
            if name in ("href", "src") and not (value or "").startswith(("https://", "http://")):
                self.problems.append(f"{name}={value!r} is not a web URL")


def check(path, dns, want_dkim, expect_name):
    problems = []
    data = open(path, "rb").read()
    try:
        msg = email.message_from_bytes(data, policy=email.policy.strict)
    except Exception as e:  # noqa: BLE001 - any defect is the finding
        return [f"strict parse failed: {type(e).__name__}: {e}"]
    for part in msg.walk():
        if part.defects:
            problems.append(f"defects in {part.get_content_type()}: {part.defects}")
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"):
        values = msg.get_all(name) or []
        if len(values) != 1:
            problems.append(f"{name}: {len(values)} occurrences")
    if problems:
        return problems
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        header = msg[name]
        if getattr(header, "defects", None):
            problems.append(f"{name} defects: {header.defects}")
    if str(msg["MIME-Version"]).strip() != "1.0":
        problems.append(f"MIME-Version is {msg['MIME-Version']}")
    try:
        email.utils.parsedate_to_datetime(str(msg["Date"]))
    except Exception as e:  # noqa: BLE001
        problems.append(f"Date does not parse: {e}")
    sender = msg["From"].addresses
    if len(sender) != 1 or not sender[0].domain or not sender[0].display_name:
        problems.append(f"From is not one named address: {msg['From']}")
    message_id = str(msg["Message-ID"]).strip()
    if not (message_id.startswith("<") and message_id.endswith(">") and message_id.count("@") == 1):
        problems.append(f"Message-ID is malformed: {message_id}")
    elif sender and message_id[1:-1].split("@")[1].lower() != sender[0].domain.lower():
        problems.append(f"Message-ID {message_id} is not on the sender's domain {sender[0].domain}")
    if expect_name and (not sender or sender[0].display_name != expect_name):
        problems.append(f"From does not name {expect_name!r}: {msg['From']}")
    if expect_name and expect_name not in str(msg["Subject"]):
        problems.append(f"Subject does not name {expect_name!r}: {msg['Subject']}")
    if msg.get_content_type() != "multipart/alternative":
        problems.append(f"body is {msg.get_content_type()}, not multipart/alternative")
    parts = [p for p in msg.iter_parts()]
    kinds = [p.get_content_type() for p in parts]
    if kinds != ["text/plain", "text/html"]:
        problems.append(f"parts are {kinds}")
    for part in parts:
        if (part.get_content_charset() or "").lower() != "utf-8":
            problems.append(f"{part.get_content_type()} charset is {part.get_content_charset()}")
        try:
            content = part.get_content()
        except Exception as e:  # noqa: BLE001
            problems.append(f"{part.get_content_type()} does not decode: {e}")
            continue
        if expect_name and expect_name not in html.unescape(content):
            problems.append(f"{part.get_content_type()} does not name {expect_name!r}")
        if part.get_content_type() == "text/html":
            tags = TagCheck()
            tags.feed(content)
            tags.close()
            problems.extend(tags.problems)
    if want_dkim:
        import dkim  # noqa: PLC0415 - optional, checked by the caller

        def dnsfunc(name, timeout=5):
            key = name.decode() if isinstance(name, bytes) else name
            return dns.get(key.rstrip("."), "").encode()

        if not msg.get("DKIM-Signature"):
            problems.append("no DKIM-Signature")
        elif not dkim.verify(data, dnsfunc=dnsfunc):
            problems.append("DKIM signature does not verify")
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dns", action="append", default=[], help="NAME=TXT record")
    parser.add_argument("--dkim", action="store_true", help="verify DKIM signatures")
    parser.add_argument("--expect-name", help="the tenant's name From, Subject and both parts must carry")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    dns = dict(entry.split("=", 1) for entry in args.dns)
    if args.dkim:
        try:
            import dkim  # noqa: F401, PLC0415
            import nacl.signing  # noqa: F401, PLC0415 - dkimpy's Ed25519
        except ImportError:
            print("dkimpy and pynacl are not installed (python3 -m pip install dkimpy pynacl)")
            return 3
    failed = 0
    for path in args.files:
        problems = check(path, dns, args.dkim, args.expect_name)
        if problems:
            failed += 1
            print(f"FAIL {path}")
            for p in problems:
                print(f"  - {p}")
        else:
            print(f"ok   {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
