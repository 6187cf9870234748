package e2e

// IMAP over Graph with the sync tools people run against big mailboxes:
// mbsync (isync) and offlineimap, to a local Maildir.

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailproxy/fakegraph"
)

// syncTree is a mailbox of the double filled for a sync tool: folders
// (IMAP name → message count) and every message's $value by Message-ID.
type syncTree struct {
	box     string
	folders map[string]string // IMAP name → the double's folder id
	byMsgID map[string]string // Message-ID → immutable id
}

// treeFolders are the 10 folders of the 5,000-message tree.
var treeFolders = []struct {
	name, parent, display string
	n                     int
}{
	{"INBOX", "", "inbox", 1000},
	{"Projects", "msgfolderroot", "Projects", 500},
	{"Projects/Alpha", "Projects", "Alpha", 500},
	{"Projects/Beta", "Projects", "Beta", 400},
	{"Clients", "msgfolderroot", "Clients", 500},
	{"Clients/Acme", "Clients", "Acme", 400},
	{"Receipts", "msgfolderroot", "Receipts", 500},
	{"Newsletters", "msgfolderroot", "Newsletters", 500},
	{"Archive", "", "archive", 350},
	{"Sent Items", "", "sentitems", 350},
}

// fillTree puts total messages (scaled over treeFolders) in box: plain
// and multipart, 8-bit and base64, 1 KB to 60 KB, some read or flagged.
func fillTree(t testing.TB, g *fakegraph.Server, box string, scale float64) *syncTree {
	t.Helper()
	tr := &syncTree{box: box, folders: map[string]string{}, byMsgID: map[string]string{}}
	ids := map[string]string{}
	rnd := rand.New(rand.NewPCG(1, 2))
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	k := 0
	for _, f := range treeFolders {
		id := f.display
		if f.parent != "" {
			parent := f.parent
			if p, ok := ids[parent]; ok {
				parent = p
			}
			id = g.AddFolder(box, parent, f.display)
		}
		ids[f.name] = id
		tr.folders[f.name] = id
		for range int(float64(f.n) * scale) {
			k++
			msgID := fmt.Sprintf("<tree-%d-%d@e2e>", k, rnd.Uint32())
			g.SetRead(tr.put(g, id, msgID, k, rnd, t0.Add(time.Duration(k)*time.Minute)), k%3 != 0)
		}
	}
	return tr
}

func (tr *syncTree) put(g *fakegraph.Server, folder, msgID string, k int, rnd *rand.Rand, at time.Time) string {
	size := 1000 + rnd.IntN(60_000)
	var mime string
	head := fmt.Sprintf("From: Sender %d <sender%d@example.com>\r\nTo: %s\r\nSubject: tree message %d\r\nDate: %s\r\nMessage-ID: %s\r\n",
		k, k%17, tr.box, k, at.Format(time.RFC1123Z), msgID)
	if k%4 == 0 {
		data := make([]byte, size*3/4)
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		mime = head + "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: text/plain; charset=utf-8\r\n" +
			"Content-Transfer-Encoding: 8bit\r\n\r\nGrüße, the file %d is attached.\r\n--xx\r\nContent-Type: application/octet-stream\r\n" +
			"Content-Disposition: attachment; filename=\"f.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + wrap(base64.StdEncoding.EncodeToString(data)) + "--xx--\r\n"
		mime = strings.Replace(mime, "%d", strconv.Itoa(k), 1)
	} else {
		mime = head + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + strings.Repeat("Zeile ü "+strconv.Itoa(k)+"\r\n", size/12)
	}
	id := g.PutAt(tr.box, folder, []byte(mime), at)
	tr.byMsgID[msgID] = id
	if k%7 == 0 {
		g.SetFlag(id, "flagged")
	}
	return id
}

func wrap(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	return b.String() + s + "\r\n"
}

// messageID is a stored message's Message-ID, read from its header.
func messageID(b []byte) string {
	head, _, _ := bytes.Cut(b, []byte("\n\n"))
	_, v, ok := bytes.Cut(head, []byte("\nMessage-ID: "))
	if !ok {
		return ""
	}
	v, _, _ = bytes.Cut(v, []byte("\n"))
	return string(bytes.TrimSpace(v))
}

// withoutTUID drops the X-TUID header mbsync adds to what it stores (its
// man page: it finds messages it copied by it): that line is not the
// message's.
func withoutTUID(b []byte) []byte {
	head, _, _ := bytes.Cut(b, []byte("\n\n"))
	i := bytes.Index(head, []byte("\nX-TUID: "))
	if i < 0 {
		return b
	}
	j := bytes.IndexByte(b[i+1:], '\n')
	return append(b[:i+1:i+1], b[i+1+j+1:]...)
}

// maildir reads every message file under dir: path → content.
func maildir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && (filepath.Base(filepath.Dir(p)) == "cur" || filepath.Base(filepath.Dir(p)) == "new") {
			b, _ := os.ReadFile(p)
			out[p] = b
		}
		return nil
	})
	return out
}

func mbsyncrc(dir, addr string) string {
	os.MkdirAll(filepath.Join(dir, "mail"), 0o700)
	rc := filepath.Join(dir, "mbsyncrc")
	os.WriteFile(rc, []byte(fmt.Sprintf(`IMAPAccount graph
Host 127.0.0.1
Port %s
User %s
Pass "%s"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account graph

MaildirStore local
Path %s/mail/
Inbox %s/mail/INBOX
SubFolders Verbatim

Channel tree
Far :remote:
Near :local:
Patterns *
Create Near
Sync All
Expunge Both
SyncState *
`, portOf(addr), localUser, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(localPass), dir, dir)), 0o600)
	return rc
}

func runMbsync(t testing.TB, rc string) time.Duration {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("mbsync", "-c", rc, "-a")
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(rc))
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("Error")) || bytes.Contains(out, []byte("rror:")) {
		t.Fatalf("mbsync: %v\n%s", err, out)
	}
	return time.Since(start)
}

// onGraph is every message of the tree's folders as the double has it
// now, by immutable id.
func (tr *syncTree) onGraph(g *fakegraph.Server) map[string]fakegraph.Message {
	out := map[string]fakegraph.Message{}
	for _, f := range tr.folders {
		for _, m := range g.Messages(tr.box, f) {
			out[m.ID] = m
		}
	}
	return out
}

// checkMaildir compares what mbsync stored with the double: every message
// of the tree once, byte for byte its $value (with LF line ends, as
// Maildir keeps them).
func checkMaildir(t testing.TB, g *fakegraph.Server, tr *syncTree, files map[string][]byte) {
	t.Helper()
	graph := tr.onGraph(g)
	seen := map[string]bool{}
	for p, b := range files {
		mid := messageID(b)
		id, ok := tr.byMsgID[mid]
		if !ok {
			continue
		}
		if seen[id] {
			t.Fatalf("%s twice in the Maildir", mid)
		}
		seen[id] = true
		msg, ok := graph[id]
		if !ok {
			t.Fatalf("%s (%s) is no longer on Graph but is in the Maildir", mid, p)
		}
		b = withoutTUID(b)
		if want := bytes.ReplaceAll(msg.MIME, []byte("\r\n"), []byte("\n")); !bytes.Equal(b, want) {
			i := 0
			for i < min(len(b), len(want)) && b[i] == want[i] {
				i++
			}
			t.Fatalf("%s: %d bytes differ from the %d of its $value at %d: %q vs %q", p, len(b), len(want), i, b[max(0, i-40):min(len(b), i+40)], want[max(0, i-40):min(len(want), i+40)])
		}
	}
	for id := range graph {
		if !seen[id] {
			t.Fatalf("%s was not synchronised", id)
		}
	}
}

// mbsync keeps a 5,000-message tree of 10 folders: a first sync takes
// everything byte for byte; a second, and a third after a restart of
// mailproxy, take nothing; flags go both ways; a message deleted on Graph
// goes from the Maildir.
func TestMbsyncOverGraph(t *testing.T) {
	need(t)
	g := graphDouble(t)
	box, _ := graphIMAPBox(t)
	tr := fillTree(t, g, box, 1)
	imapAddr := freeAddr(t)
	state := t.TempDir()
	cfg := writeConfig(t, "profiles:\n"+graphIMAPProfile("tree", box, imapAddr, "", state, ""))
	p := startProxyFile(t, cfg, imapAddr)
	dir := t.TempDir()
	rc := mbsyncrc(dir, imapAddr)

	reqs, values := g.Requests(), g.Values()
	took := runMbsync(t, rc)
	files := maildir(t, filepath.Join(dir, "mail"))
	t.Logf("first sync of %d messages in %d folders: %s, %d Graph requests (%d MIME downloads), mailproxy peak RSS %s",
		len(tr.byMsgID), len(treeFolders), took.Round(time.Millisecond), g.Requests()-reqs, g.Values()-values, fmt.Sprintf("%d MB", peakRSS(t, p.cmd.Process.Pid)/1024))
	checkMaildir(t, g, tr, files)
	if n := g.Values() - values; n != int64(len(tr.byMsgID)) {
		t.Errorf("%d MIME downloads for %d messages: each once", n, len(tr.byMsgID))
	}

	again := func(what string) {
		t.Helper()
		reqs, values := g.Requests(), g.Values()
		took := runMbsync(t, rc)
		if n := g.Values() - values; n != 0 {
			t.Fatalf("%s downloaded %d messages again", what, n)
		}
		now := maildir(t, filepath.Join(dir, "mail"))
		if len(now) != len(files) {
			t.Fatalf("%s: %d files, was %d", what, len(now), len(files))
		}
		for f := range files {
			if _, ok := now[f]; !ok {
				t.Fatalf("%s changed %s", what, f)
			}
		}
		t.Logf("%s: %s, %d Graph requests, no MIME", what, took.Round(time.Millisecond), g.Requests()-reqs)
	}
	again("a second sync")
	p.stop()
	p = startProxyFile(t, cfg, imapAddr)
	again("a sync after mailproxy restarted")

	// A flag set locally reaches Graph; one set on Graph reaches the
	// Maildir; a message deleted on Graph leaves the Maildir.
	var local, unreadOnGraph, gone string
	var localFile string
	graph := tr.onGraph(g)
	for f, b := range files {
		id := tr.byMsgID[messageID(b)]
		m := graph[id]
		info := f[strings.LastIndex(f, ":2,")+3:]
		switch {
		case local == "" && m.Flag != "flagged" && !strings.Contains(info, "F"):
			local, localFile = id, f
		case unreadOnGraph == "" && !m.IsRead && id != local:
			unreadOnGraph = id
		case gone == "" && id != local && id != unreadOnGraph:
			gone = id
		}
	}
	base, info, _ := strings.Cut(localFile, ":2,")
	if err := os.Rename(localFile, base+":2,F"+info); err != nil {
		t.Fatal(err)
	}
	g.SetRead(unreadOnGraph, true)
	g.Remove(gone)
	runMbsync(t, rc)
	if m, _ := g.Message(local); m.Flag != "flagged" {
		t.Errorf("a flag set in the Maildir did not reach Graph: %q", m.Flag)
	}
	files = maildir(t, filepath.Join(dir, "mail"))
	checkMaildir(t, g, tr, files)
	for f, b := range files {
		id := tr.byMsgID[messageID(b)]
		if id == unreadOnGraph && !strings.Contains(f[strings.LastIndex(f, ":2,"):], "S") {
			t.Errorf("read on Graph, not \\Seen in the Maildir: %s", f)
		}
	}
}

// The same sync while Graph throttles 30 % of requests: mbsync completes
// without an error, and the retries do not storm Graph.
func TestMbsyncOverGraphThrottled(t *testing.T) {
	need(t)
	g := graphDouble(t)
	box, _ := graphIMAPBox(t)
	tr := fillTree(t, g, box, 0.1)
	imapAddr := freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+graphIMAPProfile("throttled", box, imapAddr, "", t.TempDir(), ""))
	startProxyFile(t, cfg, imapAddr)
	dir := t.TempDir()
	rc := mbsyncrc(dir, imapAddr)
	reqs, throttled := g.Requests(), g.Throttled()
	g.Throttle(0.3, "0.05")
	took := runMbsync(t, rc)
	g.Throttle(0, "")
	n, th := g.Requests()-reqs, g.Throttled()-throttled
	checkMaildir(t, g, tr, maildir(t, filepath.Join(dir, "mail")))
	t.Logf("%d messages under 30%% throttling: %s, %d requests, %d throttled", len(tr.byMsgID), took.Round(time.Millisecond), n, th)
	// Each refused request is tried again after Retry-After: about
	// 1/0.7 of the requests a calm sync makes, never a storm.
	calm := n - th
	if th == 0 || n > calm*3/2 {
		t.Fatalf("%d requests for %d that were needed (%d throttled): retries must not storm", n, calm, th)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// offlineimap (Python, imaplib2) keeps a tree too: every message byte for
// byte, nothing downloaded twice, a flag set locally reaches Graph.
func TestOfflineimapOverGraph(t *testing.T) {
	need(t)
	g := graphDouble(t)
	box, _ := graphIMAPBox(t)
	tr := fillTree(t, g, box, 0.02)
	imapAddr := freeAddr(t)
	cfg := writeConfig(t, "profiles:\n"+graphIMAPProfile("offline", box, imapAddr, "", t.TempDir(), ""))
	startProxyFile(t, cfg, imapAddr)
	dir := t.TempDir()
	rc := filepath.Join(dir, "offlineimaprc")
	os.WriteFile(rc, []byte(fmt.Sprintf(`[general]
accounts = graph
metadata = %s/meta

[Account graph]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = %s/mail

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = %s
remoteuser = %s
remotepass = %s
ssl = no
starttls = no
`, dir, dir, portOf(imapAddr), localUser, localPass)), 0o600)
	run := func() {
		t.Helper()
		cmd := exec.Command("offlineimap", "-c", rc, "-o", "-u", "basic")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("ERROR")) {
			t.Fatalf("offlineimap: %v\n%s", err, out)
		}
	}
	values := g.Values()
	run()
	files := maildir(t, filepath.Join(dir, "mail"))
	graph := tr.onGraph(g)
	seen := 0
	for p, b := range files {
		id, ok := tr.byMsgID[messageID(b)]
		if !ok {
			continue
		}
		seen++
		want := bytes.ReplaceAll(graph[id].MIME, []byte("\r\n"), []byte("\n"))
		if got := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")); !bytes.Equal(got, want) {
			t.Fatalf("%s differs from its $value (%d bytes, want %d)", p, len(got), len(want))
		}
	}
	if seen != len(graph) || g.Values()-values != int64(len(graph)) {
		t.Fatalf("offlineimap stored %d of %d messages with %d downloads", seen, len(graph), g.Values()-values)
	}
	values = g.Values()
	run()
	if n := g.Values() - values; n != 0 {
		t.Fatalf("a second run downloaded %d messages", n)
	}
	for p, b := range files {
		id := tr.byMsgID[messageID(b)]
		if graph[id].Flag == "flagged" || !strings.Contains(p, ":2,") {
			continue
		}
		base, info, _ := strings.Cut(p, ":2,")
		if err := os.Rename(p, base+":2,F"+info); err != nil {
			t.Fatal(err)
		}
		run()
		if m, _ := g.Message(id); m.Flag != "flagged" {
			t.Fatalf("a flag set in the Maildir did not reach Graph: %q", m.Flag)
		}
		return
	}
	t.Fatal("no unflagged message to flag")
}
