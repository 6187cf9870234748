#!/usr/bin/python3
"""Python's poplib as a legacy app uses it, for mailproxy's e2e tests.

usage: pop3client.py HOST PORT USER PASSWORD LOGIN OUTDIR [dele]
LOGIN: user (USER/PASS) or plain (AUTH PLAIN with an initial response).
Retrieves every message into OUTDIR/N.eml (and deletes them with dele).
Prints one JSON line: {"ok": true, "stat": [count, size], "uidl": [...]}.
"""
import base64
import json
import os
import poplib
import sys

host, port, user, password, mode, outdir = sys.argv[1:7]
dele = len(sys.argv) > 7 and sys.argv[7] == "dele"
result = {"ok": True}
try:
    p = poplib.POP3(host, int(port), timeout=120)
    if mode == "user":
        p.user(user)
        result["login"] = p.pass_(password).decode(errors="replace")
    else:
        ir = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        result["login"] = p._shortcmd("AUTH PLAIN " + ir).decode(errors="replace")
    result["stat"] = list(p.stat())
    result["uidl"] = [u.decode() for u in p.uidl()[1]]
    for i in range(1, result["stat"][0] + 1):
        lines = p.retr(i)[1]
        # poplib strips CRLF and undoes dot-stuffing: put the CRLFs back.
        open(os.path.join(outdir, "%d.eml" % i), "wb").write(b"".join(l + b"\r\n" for l in lines))
        if dele:
            p.dele(i)
    p.quit()
except Exception as e:
    result = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
print(json.dumps(result))
