#!/usr/bin/python3
"""Send a message file with Python's smtplib, as a legacy app would.

usage: smtpsend.py HOST PORT USER PASSWORD FROM TO MSGFILE [COUNT]
An empty USER sends without AUTH. COUNT messages go over one session; the
bytes @N@ in the file are replaced by the message number. Prints one JSON
line: {"ok": true} or {"ok": false, "code": N, "msg": "..."}.
"""
import json
import smtplib
import sys

host, port, user, password, frm, to, path = sys.argv[1:8]
count = int(sys.argv[8]) if len(sys.argv) > 8 else 1
data = open(path, "rb").read()
result = {"ok": True}
try:
    s = smtplib.SMTP(host, int(port), timeout=300)
    s.ehlo()
    if user:
        s.login(user, password)
    for i in range(count):
        s.sendmail(frm, [to], data.replace(b"@N@", str(i).encode()))
    s.quit()
except smtplib.SMTPRecipientsRefused as e:
    code, msg = list(e.recipients.values())[0]
    result = {"ok": False, "code": code, "msg": msg.decode(errors="replace")}
except smtplib.SMTPResponseException as e:
    result = {"ok": False, "code": e.smtp_code, "msg": e.smtp_error.decode(errors="replace")}
except (smtplib.SMTPException, OSError) as e:
    result = {"ok": False, "code": 0, "msg": repr(e)}
print(json.dumps(result))
