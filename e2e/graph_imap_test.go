package e2e

// IMAP over Microsoft Graph: mailproxy serves IMAP itself over the Graph
// double's mailbox, driven by Python's imaplib, mbsync and offlineimap.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/fakegraph"
)

var imapBoxes atomic.Int64

// graphIMAPBox adds a mailbox of its own to the double for one test.
func graphIMAPBox(t testing.TB) (address, id string) {
	g := graphDouble(t)
	n := imapBoxes.Add(1)
	address = fmt.Sprintf("imap%d@contoso.example", n)
	id = fmt.Sprintf("5f0c5c8e-2222-4333-8444-%012d", n)
	g.AddMailbox(address, id)
	return address, id
}

// graphIMAPProfile serves mailbox over IMAP (and SMTP when smtpAddr is
// set) through the app-only credential, its state in stateDir.
func graphIMAPProfile(name, mailbox, imapAddr, smtpAddr, stateDir, graphExtra string) string {
	y := fmt.Sprintf("  %s:\n    mailbox: %s\n    graph: {endpoint: %q, ca_file: %q, state_dir: %q%s}\n    imap: {listen: %s}\n",
		name, mailbox, graphEnv.url, graphEnv.ca, stateDir, graphExtra, imapAddr)
	if smtpAddr != "" {
		y += fmt.Sprintf("    smtp: {listen: %s}\n", smtpAddr)
	}
	return y + fmt.Sprintf("    local_users:\n      - {name: app, username: %s, password: %q}\n    credentials:\n"+
		"      type: microsoft365\n      authority: %s\n      tenant_id: %s\n      client_id: %s\n      client_secret: %s\n",
		localUser, localPass, env.idpURL, tenant, graphEnv.appID, graphSecret)
}

// folderID is the id of the double's folder named name (a display name, or
// a well-known name).
func folderID(t testing.TB, g *fakegraph.Server, mailbox, name string) string {
	t.Helper()
	for _, f := range g.Folders(mailbox) {
		if f.DisplayName == name || f.WellKnown == name {
			return f.ID
		}
	}
	t.Fatalf("the double has no folder %q in %s", name, mailbox)
	return ""
}

func inFolder(g *fakegraph.Server, mailbox, folder, marker string) []fakegraph.Message {
	var out []fakegraph.Message
	for _, m := range g.Messages(mailbox, folder) {
		if bytes.Contains(m.MIME, []byte(marker)) {
			out = append(out, m)
		}
	}
	return out
}

func TestIMAPOverGraphCommands(t *testing.T) {
	need(t)
	g := graphDouble(t)
	box, _ := graphIMAPBox(t)
	imapAddr, smtpAddr := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+graphIMAPProfile("m365imap", box, imapAddr, smtpAddr, t.TempDir(), ", poll_interval: 1s"))
	startProxyFile(t, cfg, imapAddr, smtpAddr)

	report := []byte("From: Alice <alice@example.com>\r\nTo: " + box + "\r\nSubject: Quarterly report\r\nDate: Mon, 02 Feb 2026 09:00:00 +0000\r\n" +
		"Message-ID: <report@example.com>\r\nX-Mailer: report-generator 2\r\n\r\nThe numbers are excellent this quarter.\r\n")
	photos := []byte("From: Carol <carol@example.com>\r\nTo: " + box + "\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nDate: Tue, 03 Feb 2026 09:00:00 +0000\r\n" +
		"Message-ID: <photos@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, see the photo.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"p.bin\"\r\nContent-Disposition: attachment; filename=\"p.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0, 1, 2, 0xff}, 600)) + "\r\n--b1--\r\n")
	old := []byte("From: Bob <bob@example.com>\r\nTo: " + box + "\r\nSubject: old news\r\nDate: Sun, 01 Jun 2025 09:00:00 +0000\r\nMessage-ID: <old@example.com>\r\n\r\nnothing new\r\n")
	idReport := g.PutAt(box, "inbox", report, time.Date(2026, 2, 2, 9, 0, 0, 0, time.UTC))
	idPhotos := g.PutAt(box, "inbox", photos, time.Date(2026, 2, 3, 9, 0, 0, 0, time.UTC))
	idOld := g.PutAt(box, "inbox", old, time.Date(2025, 6, 1, 9, 0, 0, 0, time.UTC))
	g.SetRead(idReport, true)
	g.SetRead(idPhotos, true)
	stored := func(id string) []byte {
		m, ok := g.Message(id)
		if !ok {
			t.Fatalf("no message %s", id)
		}
		return m.MIME
	}
	photosMIME := stored(idPhotos)

	_, iport, _ := net.SplitHostPort(imapAddr)
	_, sport, _ := net.SplitHostPort(smtpAddr)
	r := runPy(t, "graphimap.py", "127.0.0.1", iport, sport, localUser, localPass, box)
	str := func(k string) string { return fmt.Sprint(r[k]) }
	dec := func(k string) []byte {
		b, err := base64.StdEncoding.DecodeString(str(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return b
	}

	t.Run("capabilities", func(t *testing.T) {
		for _, c := range []string{"IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "UNSELECT", "CHILDREN", "IMAP4rev1"} {
			if !strings.Contains(" "+str("capability")+" ", " "+c+" ") {
				t.Errorf("%s not advertised: %s", c, str("capability"))
			}
		}
	})
	t.Run("SELECT and the listing, in arrival order", func(t *testing.T) {
		if r["exists"] != float64(3) || r["uidnext"] != float64(4) || r["uidvalidity"] == float64(0) {
			t.Fatalf("SELECT: EXISTS %v UIDNEXT %v UIDVALIDITY %v", r["exists"], r["uidnext"], r["uidvalidity"])
		}
		l := fmt.Sprint(r["listing"])
		for _, want := range []string{`1 (UID 1 FLAGS () INTERNALDATE " 1-Jun-2025 09:00:00 +0000"`, `"old news" (("Bob" NIL "bob" "example.com"))`,
			`2 (UID 2 FLAGS (\Seen)`, `"Quarterly report"`, `"<report@example.com>"`, `"=?utf-8?q?Gr=C3=BC=C3=9Fe?="`} {
			if !strings.Contains(l, want) {
				t.Errorf("listing lacks %s:\n%s", want, l)
			}
		}
	})
	t.Run("body items are the MIME's parts, and PEEK keeps \\Seen off", func(t *testing.T) {
		hdrEnd := bytes.Index(photosMIME, []byte("\r\n\r\n")) + 4
		sameBytes(t, "BODY[HEADER]", dec("header"), photosMIME[:hdrEnd])
		sameBytes(t, "BODY[TEXT]", dec("text"), photosMIME[hdrEnd:])
		sameBytes(t, "BODY[]<0.100>", dec("partial"), photosMIME[:100])
		if !bytes.Equal(dec("part1"), []byte("Grüße, see the photo.")) {
			t.Errorf("BODY[1] = %q", dec("part1"))
		}
		if !bytes.HasPrefix(dec("subject_field"), []byte("Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n")) {
			t.Errorf("HEADER.FIELDS (SUBJECT) = %q", dec("subject_field"))
		}
		if bs := str("bodystructure"); !strings.Contains(bs, `("text" "plain" ("charset" "utf-8")`) || !strings.Contains(bs, `"mixed"`) {
			t.Errorf("BODYSTRUCTURE %s", bs)
		}
		if !strings.Contains(str("flags_after_peek"), `FLAGS (\Seen)`) {
			t.Errorf("after PEEK: %s (photos was read already)", str("flags_after_peek"))
		}
	})
	t.Run("BODY[] sets \\Seen", func(t *testing.T) {
		sameBytes(t, "BODY[] of a message stored from Outlook's side", dec("body1"), stored(idOld))
		if !strings.Contains(str("flags_after_body"), `\Seen`) {
			t.Errorf("after BODY[]: %s", str("flags_after_body"))
		}
	})
	t.Run("STORE maps flags to Graph", func(t *testing.T) {
		if s := str("store_silent"); strings.Contains(s, "FETCH") || strings.Contains(s, "FLAGS") {
			t.Errorf("STORE .SILENT answered %s", s)
		}
		if s := str("store"); !strings.Contains(s, `\Answered`) || !strings.Contains(strings.ToLower(s), "$work") {
			t.Errorf("STORE answered %s", s)
		}
		p, _ := g.Message(idPhotos)
		if p.Folder == "" || p.Flag != "flagged" {
			t.Errorf("\\Flagged on photos: Graph flag %q", p.Flag)
		}
		rp, _ := g.Message(idReport)
		if !rp.IsRead || rp.Extended["Integer 0x1081"] != "102" || !slices.ContainsFunc(rp.Categories, func(c string) bool { return strings.EqualFold(c, "$work") }) {
			t.Errorf("report after +\\Answered $Work: read %v, last verb %q, categories %q", rp.IsRead, rp.Extended["Integer 0x1081"], rp.Categories)
		}
		if o, _ := g.Message(idOld); o.IsRead {
			t.Error("-FLAGS \\Seen did not reach Graph (isRead)")
		}
	})
	t.Run("SEARCH", func(t *testing.T) {
		want := map[string]string{"unseen": "1", "flagged": "3", "answered": "2", "keyword": "2", "from": "2", "subject": "2",
			"header": "2", "since": "2 3", "before": "1", "uid": "2 3", "text": "2", "body": "2", "not_or": "1", "larger": "3"}
		got := r["search"].(map[string]any)
		for k, w := range want {
			if got[k] != w {
				t.Errorf("SEARCH %s = %q, want %q", k, got[k], w)
			}
		}
	})
	t.Run("CREATE, COPY, MOVE", func(t *testing.T) {
		if l := fmt.Sprint(r["list_after_create"]); !strings.Contains(l, `(\HasChildren) "/" "Work"`) || !strings.Contains(l, `"/" "Work/Sub"`) ||
			!strings.Contains(l, `\Sent`) || !strings.Contains(l, `\Trash`) || !strings.Contains(l, `\Drafts`) || !strings.Contains(l, `\Junk`) {
			t.Errorf("LIST after CREATE Work/Sub: %s", l)
		}
		if !regexp.MustCompile(`^\d+ 2 1$`).MatchString(str("copy")) {
			t.Errorf("COPYUID %q, want UIDVALIDITY 2 1", str("copy"))
		}
		work := folderID(t, g, box, "Work")
		if cs := inFolder(g, box, work, "report@example.com"); len(cs) != 1 || cs[0].ID == idReport {
			t.Errorf("COPY: %d copies in Work", len(cs))
		}
		if fmt.Sprint(r["move_expunge"]) != "[3]" || !strings.Contains(fmt.Sprint(r["move_copyuid"]), "COPYUID") {
			t.Errorf("MOVE: EXPUNGE %v, untagged OK %v", r["move_expunge"], r["move_copyuid"])
		}
		p, _ := g.Message(idPhotos)
		if sub := folderID(t, g, box, "Filed"); p.Folder != sub {
			t.Errorf("MOVE: photos is in %s, want Work/Sub, renamed Filed later (%s)", p.Folder, sub)
		}
	})
	t.Run("UID EXPUNGE deletes only the given \\Deleted message", func(t *testing.T) {
		if fmt.Sprint(r["uid_expunge"]) != "[2]" {
			t.Errorf("UID EXPUNGE answered EXPUNGE %v", r["uid_expunge"])
		}
		if !strings.Contains(str("flags_kept_deleted"), `\Deleted`) {
			t.Errorf("the other \\Deleted message: %s", str("flags_kept_deleted"))
		}
		if m, _ := g.Message(idReport); m.Folder != folderID(t, g, box, "recoverableitemsdeletions") {
			t.Errorf("the expunged message is in %s, want Recoverable Items", m.Folder)
		}
		if m, _ := g.Message(idOld); m.Folder != folderID(t, g, box, "inbox") {
			t.Error("UID EXPUNGE took a message outside its set")
		}
	})
	t.Run("APPEND without \\Draft is a normal message; with it a draft", func(t *testing.T) {
		if !strings.HasPrefix(str("append"), "[APPENDUID ") {
			t.Errorf("APPEND answered %s", str("append"))
		}
		work := folderID(t, g, box, "Work")
		ms := inFolder(g, box, work, "appended normal")
		if len(ms) != 1 || ms[0].IsDraft || !ms[0].IsRead || ms[0].Flag != "flagged" || !ms[0].Received.Equal(time.Date(2020, 1, 2, 10, 0, 0, 0, time.UTC)) {
			t.Fatalf("appended message: %+v", ms)
		}
		if !bytes.Contains(ms[0].MIME, []byte("appended body")) || !bytes.Contains(ms[0].MIME, []byte("<appended-normal@example.com>")) {
			t.Errorf("appended message lost its body or Message-ID:\n%s", ms[0].MIME)
		}
		if len(inFolder(g, box, "drafts", "appended normal")) != 0 || len(inFolder(g, box, "recoverableitemsdeletions", "appended normal")) != 1 {
			t.Error("the temporary draft was not deleted")
		}
		ds := inFolder(g, box, "drafts", "appended draft")
		if len(ds) != 1 || !ds[0].IsDraft || !strings.HasPrefix(str("append_draft"), "[APPENDUID ") {
			t.Errorf("APPEND \\Draft: %s %+v", str("append_draft"), ds)
		}
		if s := str("append_nowhere"); !strings.HasPrefix(s, "NO [TRYCREATE]") {
			t.Errorf("APPEND to a missing folder: %s", s)
		}
	})
	t.Run("RENAME, DELETE, STATUS, LSUB", func(t *testing.T) {
		l := fmt.Sprint(r["list_after_rename"])
		// Graph's DELETE puts a folder in Deleted Items, as Outlook does.
		if !strings.Contains(l, `"Filed"`) || strings.Contains(l, "Work/Sub") || strings.Contains(l, `"/" "Scratch"`) || !strings.Contains(l, `"Deleted Items/Scratch"`) {
			t.Errorf("LIST after RENAME and DELETE: %s", l)
		}
		var names []string
		for _, f := range g.Folders(box) {
			names = append(names, f.DisplayName)
		}
		if !slices.Contains(names, "Filed") || slices.Contains(names, "Sub") {
			t.Errorf("the double's folders: %q", names)
		}
		if s := str("status"); !strings.Contains(s, "MESSAGES 2") || !strings.Contains(s, "UIDNEXT 3") {
			t.Errorf("STATUS Work: %s", s)
		}
		if s := str("subscribe"); strings.Contains(s, `"Filed"`) || !strings.Contains(s, "INBOX") {
			t.Errorf("LSUB after UNSUBSCRIBE Filed: %s", s)
		}
	})
	t.Run("check while serve holds the state", func(t *testing.T) {
		start := time.Now()
		out, err := mailproxyCmd("check", "-config", cfg, "m365imap").CombinedOutput()
		if err != nil || !regexp.MustCompile(`imap   ok    served by mailproxy over Graph: \d+ folder\(s\) \(INBOX, Drafts, .*Work.*\), INBOX has \d+ message\(s\)`).Match(out) {
			t.Fatalf("check: %v\n%s", err, out)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("check took %s: it must not wait for serve's state file", d)
		}
	})
	t.Run("IDLE sees a message sent through SMTP → Graph", func(t *testing.T) {
		ie := r["idle_exists"].([]any)
		if ie[1].(float64) != ie[0].(float64)+1 || !strings.Contains(str("idle_done"), "OK") {
			t.Errorf("IDLE: EXISTS %v, then %s", ie, str("idle_done"))
		}
		t.Logf("EXISTS %.1f s after the SMTP send (poll_interval 1s)", r["idle_seconds"])
	})
}

// Bad input is answered BAD and the session goes on; a Graph connection
// lost in the middle of a body is NO [UNAVAILABLE] for that FETCH only,
// while another session works; a session reading a whole folder leaves
// Graph room for another's.
func TestIMAPOverGraphFaults(t *testing.T) {
	need(t)
	g := graphDouble(t)
	box, _ := graphIMAPBox(t)
	big := append([]byte("From: a@example.com\r\nTo: "+box+"\r\nSubject: big one\r\nMessage-ID: <big@e2e>\r\n\r\n"), bytes.Repeat([]byte("0123456789abcdef\r\n"), 20_000)...)
	g.Put(box, "inbox", big)
	for i := range 60 {
		g.Put(box, "inbox", []byte(fmt.Sprintf("From: a@example.com\r\nTo: %s\r\nSubject: small %d\r\nMessage-ID: <small-%d@e2e>\r\n\r\n%s\r\n", box, i, i, strings.Repeat("x", 20_000))))
	}
	imapAddr := freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+graphIMAPProfile("faults", box, imapAddr, "", t.TempDir(), ""))
	startProxyFile(t, cfg, imapAddr)
	login := func(t *testing.T) *rawIMAP {
		c := dialRaw(t, imapAddr)
		c.send(imapLogin(localUser, localPass))
		c.until("a1 OK")
		c.send("a2 SELECT INBOX\r\n")
		c.until("a2 OK")
		return c
	}

	t.Run("bad input", func(t *testing.T) {
		c := login(t)
		for _, cmd := range []string{"b1 FETCH\r\n", "b2 UID FROB 1\r\n", "b3 FETCH 1:* (BODY[HEADER.FIELDS)\r\n", "b4 STORE x +FLAGS (\\Seen)\r\n",
			"b5 SEARCH BEFORE notadate\r\n", "b6 NOOP \"open\r\n", "b7 SELECT {abc}\r\n", "b8 APPEND INBOX {999999999}\r\n"} {
			tag, _, _ := strings.Cut(cmd, " ")
			c.send(cmd)
			if l := c.until(tag + " "); !strings.HasPrefix(l, tag+" BAD") && !strings.HasPrefix(l, tag+" NO") {
				t.Errorf("%q answered %q", strings.TrimSpace(cmd), l)
			}
		}
		c.send("b9 UID FETCH 1 (UID FLAGS)\r\n")
		if l := c.until("b9 "); !strings.HasPrefix(l, "b9 OK") {
			t.Fatalf("after bad input the session answered %q", l)
		}
	})

	t.Run("Graph lost mid-body", func(t *testing.T) {
		a, b := login(t), login(t)
		a.send("c0 UID SEARCH HEADER Message-ID <big@e2e>\r\n")
		found := a.until("* SEARCH ")
		a.until("c0 OK")
		uid := strings.TrimPrefix(found, "* SEARCH ")
		g.BreakValue(50_000)
		a.send("c1 UID FETCH " + uid + " BODY.PEEK[]\r\n")
		if l := a.until("c1 "); !strings.HasPrefix(l, "c1 NO [UNAVAILABLE]") || !strings.Contains(l, "try again later") {
			t.Errorf("a FETCH whose body broke off answered %q", l)
		}
		b.send("c2 UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE)\r\n")
		if l := b.until("c2 "); !strings.HasPrefix(l, "c2 OK") {
			t.Errorf("another session meanwhile: %q", l)
		}
		g.BreakValue(-1)
		a.send("c3 UID FETCH " + uid + " BODY.PEEK[]\r\n")
		l := a.line()
		if !strings.HasSuffix(l, fmt.Sprintf("{%d}", len(big))) {
			t.Fatalf("the same FETCH once Graph is back: %q", l)
		}
		a.until("c3 OK")
	})

	t.Run("one session's folder read does not starve another's", func(t *testing.T) {
		g.Latency = 30 * time.Millisecond
		defer func() { g.Latency = 0 }()
		a, b := login(t), login(t)
		a.send("d1 FETCH 2:* BODY.PEEK[]\r\n") // 60 bodies, 30 ms each
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		b.send("d2 SELECT INBOX\r\nd3 UID FETCH 1 (UID FLAGS ENVELOPE)\r\n")
		b.until("d3 OK")
		waited := time.Since(start)
		aStart := time.Now()
		a.until("d1 OK")
		t.Logf("while a session read 60 bodies (%s more), another's SELECT and FETCH took %s", time.Since(aStart).Round(time.Millisecond), waited.Round(time.Millisecond))
		if waited > time.Second {
			t.Fatalf("another session waited %s behind a FETCH of a folder", waited)
		}
	})
}
