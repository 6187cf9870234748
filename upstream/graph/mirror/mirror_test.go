package mirror

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"mailproxy/fakegraph"
	"mailproxy/idp"
	"mailproxy/upstream/graph"
)

const (
	box   = "uids@contoso.example"
	boxID = "7d1b2c3d-0000-4000-8000-00000000aaaa"
)

type env struct {
	t    testing.TB
	g    *fakegraph.Server
	c    *graph.Client
	path string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ip := idp.New()
	isrv := httptest.NewServer(ip)
	t.Cleanup(isrv.Close)
	ip.AddMicrosoftApp(idp.MicrosoftApp{Tenant: "contoso", ClientID: "reader", Secret: "s", Mailbox: box, Roles: []string{"Mail.ReadWrite"}})
	g := fakegraph.New(ip)
	gsrv := httptest.NewTLSServer(g)
	t.Cleanup(gsrv.Close)
	g.URL = gsrv.URL
	g.AddMailbox(box, boxID)
	cc := &clientcredentials.Config{ClientID: "reader", ClientSecret: "s", TokenURL: isrv.URL + "/contoso/oauth2/v2.0/token",
		Scopes: []string{"https://graph.microsoft.com/.default"}}
	ctx := context.Background()
	c := graph.New(graph.Options{Profile: "test", Endpoint: gsrv.URL + "/v1.0", User: box, Tokens: tokenSource{cc.TokenSource(ctx)},
		HTTPClient: gsrv.Client(), LimitKey: "reader/" + box})
	return &env{t: t, g: g, c: c, path: filepath.Join(t.TempDir(), "state", "box.db")}
}

type tokenSource struct{ ts oauth2.TokenSource }

func (t tokenSource) Token(context.Context) (*oauth2.Token, error) { return t.ts.Token() }

func (e *env) mailbox() *Mailbox {
	m := New(e.path, filepath.Join(filepath.Dir(e.path), "bodies"), 1<<20)
	e.t.Cleanup(func() { m.Close() })
	return m
}

// put stores n messages in folder, a second apart, and returns their ids
// in the order they arrived.
func (e *env) put(folder string, n int, start time.Time) []string {
	var ids []string
	for i := range n {
		mime := fmt.Sprintf("From: a@example.com\r\nTo: %s\r\nSubject: message %d\r\nMessage-ID: <m%d-%d@example.com>\r\n\r\nbody %d\r\n", box, i, i, start.UnixNano(), i)
		ids = append(ids, e.g.PutAt(box, folder, []byte(mime), start.Add(time.Duration(i)*time.Second)))
	}
	return ids
}

func (e *env) sync(f *Folder) {
	e.t.Helper()
	if err := f.Sync(context.Background(), e.c, 0); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) inbox(m *Mailbox) *Folder {
	e.t.Helper()
	f, err := m.Folder(e.inboxID())
	if err != nil {
		e.t.Fatal(err)
	}
	return f
}

func (e *env) inboxID() string {
	for _, f := range e.g.Folders(box) {
		if f.WellKnown == "inbox" {
			return f.ID
		}
	}
	e.t.Fatal("no inbox")
	return ""
}

// uids maps ids to UIDs.
func uids(s Snapshot) map[string]uint32 {
	out := map[string]uint32{}
	for _, e := range s.List {
		out[e.ID] = e.UID
	}
	return out
}

func TestUIDsFollowArrivalAndSurviveARestart(t *testing.T) {
	e := newEnv(t)
	// Stored out of order: the UIDs follow receivedDateTime, not the
	// order delta lists them in.
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	late := e.put("inbox", 5, t0.Add(time.Hour))
	early := e.put("inbox", 5, t0)
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	s := f.Snapshot()
	got := uids(s)
	for i, id := range append(early, late...) {
		if got[id] != uint32(i+1) {
			t.Fatalf("message %d has UID %d, want %d (UIDs must follow arrival)", i, got[id], i+1)
		}
	}
	if s.Next != 11 || s.Validity == 0 {
		t.Fatalf("UIDNEXT %d, UIDVALIDITY %d", s.Next, s.Validity)
	}

	// A restart: the same UIDs from the file, and one delta request.
	m.Close()
	m2 := e.mailbox()
	f2 := e.inbox(m2)
	before := e.g.Requests()
	if s2 := f2.Snapshot(); s2.Validity != s.Validity || !mapsEqual(uids(s2), got) {
		t.Fatal("the state file did not keep the UIDs")
	}
	e.sync(f2)
	if n := e.g.Requests() - before; n != 1 {
		t.Fatalf("a sync after a restart made %d requests, want 1 (the delta link)", n)
	}
	more := e.put("inbox", 2, t0.Add(2*time.Hour))
	e.sync(f2)
	if g := uids(f2.Snapshot()); g[more[0]] != 11 || g[more[1]] != 12 {
		t.Fatalf("new messages got UIDs %d, %d, want 11, 12", g[more[0]], g[more[1]])
	}
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestRemovedAndMovedMessages(t *testing.T) {
	e := newEnv(t)
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	ids := e.put("inbox", 4, t0)
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	e.g.Remove(ids[1])
	other := e.g.AddFolder(box, "msgfolderroot", "Projects")
	e.g.MoveTo(ids[2], other)
	e.sync(f)
	got := uids(f.Snapshot())
	if _, ok := got[ids[1]]; ok {
		t.Fatal("a message removed on Graph is still there")
	}
	if _, ok := got[ids[2]]; ok {
		t.Fatal("a message moved away is still there")
	}
	// Moved back, it is a new message here: a new UID, never its old one.
	e.g.MoveTo(ids[2], "inbox")
	e.sync(f)
	if u := uids(f.Snapshot())[ids[2]]; u != 5 {
		t.Fatalf("a message moved back got UID %d, want 5 (UIDs only grow)", u)
	}
	// In the other folder it has its own UIDs.
	p, _ := m.Folder(other)
	e.sync(p)
	if s := p.Snapshot(); len(s.List) != 0 || s.Validity == f.Snapshot().Validity {
		t.Fatalf("Projects: %d messages, UIDVALIDITY %d (Inbox's is %d)", len(s.List), s.Validity, f.Snapshot().Validity)
	}
}

func TestLostStateIsANewUIDValidity(t *testing.T) {
	e := newEnv(t)
	e.put("inbox", 3, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	old := f.Snapshot()
	m.Close()
	if err := os.Remove(e.path); err != nil {
		t.Fatal(err)
	}
	// UIDVALIDITY is the clock's seconds (as Dovecot's): a state lost
	// and made again within the second it was made in is not a case.
	time.Sleep(time.Until(time.Unix(int64(old.Validity)+1, 0)))
	m2 := e.mailbox()
	f2 := e.inbox(m2)
	e.sync(f2)
	now := f2.Snapshot()
	if now.Validity <= old.Validity {
		t.Fatalf("UIDVALIDITY %d after the state was lost, was %d: it must change (and grow)", now.Validity, old.Validity)
	}
	if len(now.List) != 3 || now.List[0].UID != 1 {
		t.Fatalf("after a loss: %+v", now.List)
	}
}

func TestExpiredDeltaLinkResyncsAndKeepsUIDs(t *testing.T) {
	e := newEnv(t)
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	ids := e.put("inbox", 3, t0)
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	before := uids(f.Snapshot())
	e.g.ExpireDeltaTokens()
	e.g.Remove(ids[0])
	e.g.SetRead(ids[1], true)
	added := e.put("inbox", 1, t0.Add(time.Hour))
	e.sync(f)
	s := f.Snapshot()
	after := uids(s)
	if _, ok := after[ids[0]]; ok || after[ids[1]] != before[ids[1]] || after[ids[2]] != before[ids[2]] || after[added[0]] != 4 {
		t.Fatalf("after a full round: %v (before %v)", after, before)
	}
	if e, _, _ := s.Find(after[ids[1]]); e.Flags&Seen == 0 {
		t.Fatal("the round did not bring the read state")
	}
}

func TestFlagsFromGraph(t *testing.T) {
	e := newEnv(t)
	ids := e.put("inbox", 3, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	e.g.SetRead(ids[0], true)
	e.g.SetFlag(ids[1], "flagged")
	e.g.SetCategories(ids[2], []string{"$Label1", "Red category"})
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	s := f.Snapshot()
	u := uids(s)
	a, _, _ := s.Find(u[ids[0]])
	b, _, _ := s.Find(u[ids[1]])
	c, _, _ := s.Find(u[ids[2]])
	if a.Flags != Seen || b.Flags != Flagged || c.Flags != 0 {
		t.Fatalf("flags %v %v %v", a.Flags, b.Flags, c.Flags)
	}
	if !slices.Equal(c.Keywords, []string{"$Label1"}) || !slices.Equal(c.Other, []string{"Red category"}) {
		t.Fatalf("categories: keywords %q, other %q", c.Keywords, c.Other)
	}
	env, ok := f.Envelope(ids[0])
	if !ok || env.Subject != "message 0" || len(env.From) != 1 || env.From[0].Addr != "a@example.com" || !strings.HasPrefix(env.MessageID, "<m0-") {
		t.Fatalf("envelope %+v", env)
	}
}

func TestConcurrentSessionsShareOneRound(t *testing.T) {
	e := newEnv(t)
	e.put("inbox", 50, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	m := e.mailbox()
	e.g.Latency = 50 * time.Millisecond
	before := e.g.Requests()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			f, err := m.Folder(e.inboxID())
			if err == nil {
				err = f.Sync(context.Background(), e.c, time.Minute)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := e.g.Requests() - before; n != 1 {
		t.Fatalf("8 sessions selecting one folder made %d delta requests, want 1", n)
	}
	if n := len(e.inbox(m).Snapshot().List); n != 50 {
		t.Fatalf("%d messages", n)
	}
}

func TestLocalChangesAreKept(t *testing.T) {
	e := newEnv(t)
	ids := e.put("inbox", 2, time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	m := e.mailbox()
	f := e.inbox(m)
	e.sync(f)
	u := uids(f.Snapshot())
	if err := f.Update([]uint32{u[ids[0]]}, func(x *Entry) { x.Flags |= Deleted }); err != nil {
		t.Fatal(err)
	}
	e.g.SetRead(ids[0], true)
	e.sync(f)
	m.Close()
	f = e.inbox(e.mailbox())
	x, _, _ := f.Snapshot().Find(u[ids[0]])
	if x.Flags != Seen|Deleted {
		t.Fatalf("flags %v: \\Deleted is mailproxy's own and must stay across a round and a restart", x.Flags)
	}
}

func TestBodiesAreBoundedOnDisk(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBodies(dir, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	fetches := 0
	get := func(id string, size int) {
		t.Helper()
		f, n, err := b.Open(context.Background(), id, func(context.Context) (io.ReadCloser, error) {
			fetches++
			return io.NopCloser(strings.NewReader(strings.Repeat("x", size))), nil
		})
		if err != nil || n != int64(size) {
			t.Fatalf("%s: %v %d", id, err, n)
		}
		data, _ := io.ReadAll(f)
		f.Close()
		if len(data) != size {
			t.Fatalf("%s: read %d", id, len(data))
		}
	}
	get("a", 4000)
	get("b", 4000)
	get("a", 4000) // cached
	get("c", 4000) // evicts b, the least recently used
	get("a", 4000)
	if fetches != 3 || b.Size() > 10_000 {
		t.Fatalf("%d fetches, %d bytes cached", fetches, b.Size())
	}
	get("b", 4000)
	if fetches != 4 {
		t.Fatal("b should have been evicted")
	}
	get("huge", 50_000) // larger than the cache: served, not kept
	if b.Size() > 10_000 {
		t.Fatalf("%d bytes cached", b.Size())
	}
	// A restart keeps what fits.
	b2, err := OpenBodies(dir, 10_000)
	if err != nil || b2.Size() == 0 || b2.Size() > 10_000 {
		t.Fatalf("reopened: %v, %d bytes", err, b2.Size())
	}
}
