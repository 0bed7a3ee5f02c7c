#!/usr/bin/env python3
"""Drives Debian's headless Chromium over the DevTools protocol
(--remote-debugging-pipe: JSON messages ended by NUL on file descriptors 3
and 4, so no websocket library is needed; the standard library only).

    devtools.py CHROMIUM URL [URL ...]

Loads each URL in turn in one browser (one cookie jar), waits until the
page sets `window.__idmDone`, and prints one JSON document:

    {"pages": [{"url", "result", "cookies", "console"}...]}

`result` is the page's `window.__idmResult`; `cookies` is the browser's own
cookie jar after the page finished (Storage.getCookies), `console` every
console message and browser log entry (CORS refusals are reported there by
the browser itself) while the page ran. The tests map their host names to
127.0.0.1 with --host-resolver-rules (see tests/tests/e2e/edge.rs).
"""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT = 30.0


class Browser:
    def __init__(self, chromium):
        self.profile = tempfile.mkdtemp(prefix="idm-devtools-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # Well above 4, so dup2 to 3 and 4 always makes a fresh, inheritable fd.
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 100)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 100)

        def child():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                "--host-resolver-rules=MAP *.test 127.0.0.1",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=child,
        )
        for fd in (to_browser_r, from_browser_w, high_r, high_w):
            os.close(fd)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            reply = self.read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)
        raise TimeoutError(method)

    def read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_browser, 65536)
            if not chunk:
                raise EOFError("the browser closed the pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def console_lines(events):
    lines = []
    for event in events:
        method = event.get("method")
        params = event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            lines.append({"source": "console", "level": params.get("type"), "text": text})
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            lines.append(
                {"source": entry.get("source"), "level": entry.get("level"), "text": entry.get("text")}
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            lines.append({"source": "exception", "level": "error", "text": details.get("text")})
    return lines


def main():
    chromium, urls = sys.argv[1], sys.argv[2:]
    browser = Browser(chromium)
    pages = []
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.send(f"{domain}.enable", session=session)
        for url in urls:
            browser.events = []
            browser.send("Page.navigate", {"url": url}, session=session)
            result = None
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                value = browser.send(
                    "Runtime.evaluate",
                    {
                        "expression": "window.__idmDone ? JSON.stringify(window.__idmResult) : null",
                        "returnByValue": True,
                    },
                    session=session,
                ).get("result", {}).get("value")
                if value is not None:
                    result = json.loads(value)
                    break
                time.sleep(0.1)
            # Late console entries (a CORS refusal is logged as the fetch fails).
            time.sleep(0.3)
            browser.send("Runtime.evaluate", {"expression": "1"}, session=session)
            cookies = browser.send("Storage.getCookies").get("cookies", [])
            pages.append(
                {
                    "url": url,
                    "result": result,
                    "cookies": cookies,
                    "console": console_lines(browser.events),
                }
            )
    finally:
        browser.close()
    json.dump({"pages": pages}, sys.stdout)


if __name__ == "__main__":
    main()
