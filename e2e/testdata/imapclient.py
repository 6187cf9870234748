#!/usr/bin/python3
"""Python's imaplib as a legacy app uses it, for mailproxy's e2e tests.

usage: imapclient.py HOST PORT USER PASSWORD LOGIN ACTION [ARGS...]
LOGIN: quoted (imaplib's login: the password as a quoted string),
       literal (LOGIN user {n} with the password as a synchronising literal),
       plain (AUTHENTICATE PLAIN, the password UTF-8)
ACTION:
  fetch MARKER OUT        SELECT INBOX, SEARCH SUBJECT MARKER, FETCH BODY[] of
                          the match into OUT
  session MARKER DIR BIG  a whole client session; see session() below
Prints one JSON line: {"ok": true, ...} or {"ok": false, "error": "..."}.
"""
import imaplib
import json
import os
import sys
import time


def login(m, mode, user, password):
    if mode == "quoted":
        return m.login(user, password)
    if mode == "literal":
        m.literal = password.encode()
        typ, dat = m._simple_command("LOGIN", user)
        if typ != "OK":
            raise imaplib.IMAP4.error(dat[-1])
        m.state = "AUTH"
        return typ, dat
    if mode == "plain":
        return m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + password.encode())
    raise ValueError(mode)


def check(res):
    typ, dat = res
    if typ != "OK":
        raise RuntimeError("server said %s %r" % (typ, dat))
    return dat


def find(m, marker):
    uids = check(m.uid("SEARCH", None, "SUBJECT", '"%s"' % marker))[0].split()
    if len(uids) != 1:
        raise RuntimeError("SEARCH SUBJECT %s found %d messages" % (marker, len(uids)))
    return uids[0]


def fetch_body(m, uid):
    dat = check(m.uid("FETCH", uid, "(BODY.PEEK[])"))
    return dat[0][1]


def session(m, marker, outdir, bigfile):
    """SELECT, SEARCH, FETCH BODY[], APPEND a big literal, STORE, MOVE, EXPUNGE."""
    out = {}
    check(m.select("INBOX"))
    uid = find(m, marker)
    open(os.path.join(outdir, "fetched.eml"), "wb").write(fetch_body(m, uid))
    big = open(bigfile, "rb").read()
    t0 = time.time()
    check(m.append("INBOX", r"(\Seen)", None, big))
    out["append_s"] = round(time.time() - t0, 3)
    check(m.noop())
    big_uid = find(m, marker + "-big")
    open(os.path.join(outdir, "appended.eml"), "wb").write(fetch_body(m, big_uid))
    check(m.uid("STORE", uid, "+FLAGS", r"(\Flagged)"))
    out["flags"] = check(m.uid("FETCH", uid, "(FLAGS)"))[0].decode()
    check(m.create("Archive-" + marker))
    check(m.uid("MOVE", big_uid, "Archive-" + marker))
    out["inbox_after_move"] = len(check(m.uid("SEARCH", None, "SUBJECT", '"%s-big"' % marker))[0].split())
    check(m.select("Archive-" + marker))
    out["archive_after_move"] = len(check(m.uid("SEARCH", None, "ALL"))[0].split())
    check(m.select("INBOX"))
    check(m.uid("STORE", uid, "+FLAGS", r"(\Deleted)"))
    out["expunged"] = len([x for x in check(m.expunge()) if x])
    out["inbox_after_expunge"] = len(check(m.uid("SEARCH", None, "SUBJECT", '"%s"' % marker))[0].split())
    return out


def main():
    host, port, user, password, mode, action = sys.argv[1:7]
    args = sys.argv[7:]
    result = {"ok": True}
    try:
        m = imaplib.IMAP4(host, int(port), timeout=120)
        result["login"] = check(login(m, mode, user, password))[-1].decode(errors="replace")
        if action == "fetch":
            check(m.select("INBOX", readonly=True))
            open(args[1], "wb").write(fetch_body(m, find(m, args[0])))
        elif action == "session":
            result.update(session(m, *args))
        m.logout()
    except Exception as e:  # the test reads what failed
        result = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(result))


main()
