#!/usr/bin/python3
"""Python's imaplib through every IMAP command mailproxy serves over Graph.

usage: graphimap.py HOST IMAPPORT SMTPPORT USER PASSWORD MAILBOX
INBOX holds three messages the test put there (see graph_imap_test.go),
in the order they arrived: 1 old (from bob, unread, received 2025-06-01),
2 report (from alice, read), 3 photos (read, multipart with an
attachment, a UTF-8 subject).
Prints one JSON line: what each step answered, for the test to check
against the Graph double; {"ok": false, "error": ...} on a failure.
"""
import base64
import imaplib
import json
import re
import smtplib
import socket
import sys
import time

host, port, smtp_port, user, password, mailbox = sys.argv[1:7]
out = {"ok": True}


def check(res):
    typ, dat = res
    if typ != "OK":
        raise RuntimeError("server said %s %r" % (typ, dat))
    return dat


def b64(b):
    return base64.b64encode(b).decode()


def fetch_parts(dat):
    """FETCH data → {seq: {item: bytes or str}} (literals by their item name)."""
    res = {}
    for d in dat:
        if isinstance(d, tuple):
            head, lit = d
            m = re.match(rb"(\d+) \(", head)
            if m:
                seq = int(m.group(1))
                res.setdefault(seq, {})
                head = head[m.end():]
            name = re.search(rb"(BODY\[[^\]]*\](<\d+>)?|RFC822(\.\w+)?) \{\d+\}$", head).group(1).decode()
            res[seq][name] = lit
            res[seq].setdefault("_", b"")
            res[seq]["_"] += head
    return res


def main():
    m = imaplib.IMAP4(host, int(port))
    check(m.login(user, password))
    out["capability"] = check(m.capability())[0].decode()

    # SELECT
    typ, dat = m.select("INBOX")
    check((typ, dat))
    out["exists"] = int(dat[0])
    out["uidvalidity"] = int(m.untagged_responses.get("UIDVALIDITY", [b"0"])[0])
    out["uidnext"] = int(m.untagged_responses.get("UIDNEXT", [b"0"])[0])

    # FETCH of what clients ask for a whole folder
    dat = check(m.fetch("1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"))
    out["listing"] = [d.decode() for d in dat]

    # FETCH of body items, without setting \Seen
    dat = check(m.fetch("3", "(BODYSTRUCTURE BODY.PEEK[HEADER] BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[]<0.100> BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    parts = fetch_parts(dat)[3]
    out["bodystructure"] = parts["_"].decode()
    out["header"] = b64(parts["BODY[HEADER]"])
    out["text"] = b64(parts["BODY[TEXT]"])
    out["part1"] = b64(parts["BODY[1]"])
    out["partial"] = b64(parts["BODY[]<0>"])
    out["subject_field"] = b64(parts["BODY[HEADER.FIELDS (SUBJECT)]"])
    out["flags_after_peek"] = check(m.fetch("3", "(FLAGS)"))[0].decode()

    # FETCH BODY[] sets \Seen (message 1 is unread)
    dat = check(m.fetch("1", "(BODY[])"))
    out["body1"] = b64(fetch_parts(dat)[1]["BODY[]"])
    out["flags_after_body"] = check(m.fetch("1", "(FLAGS)"))[0].decode()
    check(m.store("1", "-FLAGS.SILENT", "(\\Seen)"))

    # STORE
    out["store_silent"] = [d.decode() if isinstance(d, bytes) else d for d in check(m.store("3", "+FLAGS.SILENT", "(\\Flagged)"))]
    out["store"] = [d.decode() for d in check(m.store("2", "+FLAGS", "(\\Answered $Work)"))]

    # SEARCH
    searches = {
        "unseen": ("UNSEEN",),
        "flagged": ("FLAGGED",),
        "answered": ("ANSWERED",),
        "keyword": ("KEYWORD", "$Work"),
        "from": ("FROM", "alice"),
        "subject": ("SUBJECT", "report"),
        "header": ("HEADER", "X-Mailer", "report-generator"),
        "since": ("SINCE", "01-Jan-2026"),
        "before": ("BEFORE", "01-Jan-2026"),
        "uid": ("UID", "2:3"),
        "text": ("TEXT", "excellent"),
        "body": ("BODY", "numbers"),
        "not_or": ("NOT", "OR", "FLAGGED", "ANSWERED"),
        "larger": ("LARGER", "2000"),
    }
    out["search"] = {}
    for k, crit in searches.items():
        out["search"][k] = check(m.search(None, *crit))[0].decode()
    out["uid_search"] = check(m.uid("SEARCH", None, "ALL"))[0].decode()

    # CREATE, COPY (COPYUID), MOVE (EXPUNGE)
    check(m.create("Work/Sub"))
    out["list_after_create"] = [d.decode() for d in check(m.list())]
    typ, dat = m.uid("COPY", "2", "Work")
    check((typ, dat))
    out["copy"] = m.untagged_responses.pop("COPYUID", [b""])[0].decode() if "COPYUID" in m.untagged_responses else ""
    out["copy_tagged"] = dat[0].decode() if dat and dat[0] else ""
    typ, dat = m._simple_command("UID", "MOVE", "3", "Work/Sub")
    check((typ, dat))
    out["move_expunge"] = [d.decode() for d in m.untagged_responses.pop("EXPUNGE", [])]
    out["move_copyuid"] = [d.decode() for d in m.untagged_responses.pop("OK", [])]

    # EXPUNGE and UID EXPUNGE
    typ, dat = m.select("INBOX")
    uids = check(m.uid("SEARCH", None, "ALL"))[0].split()
    out["inbox_uids_before_expunge"] = [u.decode() for u in uids]
    check(m.uid("STORE", uids[-1], "+FLAGS.SILENT", "(\\Deleted)"))
    check(m.uid("STORE", uids[0], "+FLAGS.SILENT", "(\\Deleted)"))
    typ, dat = m._simple_command("UID", "EXPUNGE", uids[-1])
    check((typ, dat))
    out["uid_expunge"] = [d.decode() for d in m.untagged_responses.pop("EXPUNGE", [])]
    out["flags_kept_deleted"] = check(m.uid("FETCH", uids[0], "(FLAGS)"))[0].decode()
    check(m.uid("STORE", uids[0], "-FLAGS.SILENT", "(\\Deleted)"))

    # APPEND, with and without \Draft
    msg = b"From: app@example.com\r\nTo: %s\r\nSubject: appended normal\r\nMessage-ID: <appended-normal@example.com>\r\n\r\nappended body\r\n" % mailbox.encode()
    typ, dat = m.append("Work", "(\\Seen \\Flagged)", '"02-Jan-2020 10:00:00 +0000"', msg)
    check((typ, dat))
    out["append"] = dat[0].decode()
    draft = b"From: %s\r\nSubject: appended draft\r\nMessage-ID: <appended-draft@example.com>\r\n\r\ndraft body\r\n" % mailbox.encode()
    typ, dat = m.append("Drafts", "(\\Draft)", None, draft)
    check((typ, dat))
    out["append_draft"] = dat[0].decode()
    typ, dat = m.append("Nowhere", None, None, msg)
    out["append_nowhere"] = "%s %s" % (typ, dat[0].decode())

    # RENAME, DELETE
    check(m.rename("Work/Sub", "Filed"))
    check(m.create("Scratch"))
    check(m.delete("Scratch"))
    out["list_after_rename"] = [d.decode() for d in check(m.list())]
    out["status"] = check(m.status("Work", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)"))[0].decode()
    out["subscribe"] = check(m.unsubscribe("Filed")) and [d.decode() for d in check(m.lsub())]
    check(m.subscribe("Filed"))

    # IDLE sees a message sent through mailproxy's SMTP (sendMail)
    m.select("INBOX")
    before = int(check(m.select("INBOX"))[0])
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    if not m.readline().startswith(b"+"):
        raise RuntimeError("IDLE not accepted")
    s = smtplib.SMTP(host, int(smtp_port))
    s.login(user, password)
    s.sendmail(mailbox, [mailbox], b"From: %s\r\nTo: %s\r\nSubject: seen in idle\r\n\r\nhello idle\r\n" % (mailbox.encode(), mailbox.encode()))
    s.quit()
    sent = time.time()
    m.sock.settimeout(30)
    exists = None
    while exists is None:
        line = m.readline()
        if not line:
            raise RuntimeError("connection closed in IDLE")
        mm = re.match(rb"\* (\d+) EXISTS", line)
        if mm:
            exists = int(mm.group(1))
    out["idle_seconds"] = round(time.time() - sent, 2)
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if line.startswith(tag):
            out["idle_done"] = line.decode().strip()
            break
    out["idle_exists"] = [before, exists]
    m.logout()


try:
    main()
except Exception as e:  # noqa
    out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
print(json.dumps(out))
