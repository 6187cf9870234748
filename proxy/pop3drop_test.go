package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mailproxy/upstream"
)

type fakeDrop struct {
	mu      sync.Mutex
	msgs    map[string]string
	order   []string
	removed []string
	fail    error
}

func (f *fakeDrop) List(context.Context) ([]DropMessage, error) {
	var out []DropMessage
	for _, id := range f.order {
		out = append(out, DropMessage{ID: id, Size: int64(len(f.msgs[id])) + 7})
	}
	return out, nil
}

func (f *fakeDrop) Open(_ context.Context, id string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(f.msgs[id])), nil
}

func (f *fakeDrop) Remove(_ context.Context, ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.removed = append(f.removed, ids...)
	return nil
}

func startServedPOP3(t *testing.T, d *fakeDrop) *client {
	s := NewPOP3Server([]POP3Profile{{Name: "p", Backend: ServePOP3{Drop: d}, Users: []LocalUser{{Username: "joe", Password: "pw"}}}}, MailboxOptions{})
	addr := serveLocal(t, &s.sessions)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, r: bufio.NewReader(c)}
	cl.line()
	return cl
}

func TestServedPOP3Maildrop(t *testing.T) {
	d := &fakeDrop{msgs: map[string]string{
		"id-1": "Subject: one\nX: y\n\n.dot line\nsecond\nthird",
		"id-2": "Subject: two\r\n\r\nbody\r\n",
	}, order: []string{"id-1", "id-2"}}
	c := startServedPOP3(t, d)
	c.send("CAPA\r\n")
	var caps []string
	for l := c.line(); l != "."; l = c.line() {
		caps = append(caps, l)
	}
	if !strings.Contains(strings.Join(caps, " "), "TOP UIDL") {
		t.Fatalf("CAPA before login: %v", caps)
	}
	c.send("USER joe\r\nPASS pw\r\n")
	c.line()
	if l := c.line(); l != "+OK Logged in" {
		t.Fatalf("login: %q", l)
	}
	multi := func(cmd string) []string {
		c.send(cmd + "\r\n")
		if l := c.line(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("%s: %q", cmd, l)
		}
		var out []string
		for l := c.line(); l != "."; l = c.line() {
			out = append(out, l)
		}
		return out
	}
	c.send("STAT\r\n")
	if l := c.line(); l != "+OK 2 "+strconv.Itoa(len(d.msgs["id-1"])+7+len(d.msgs["id-2"])+7) {
		t.Fatalf("STAT: %q", l)
	}
	if got := multi("UIDL"); len(got) != 2 || got[0] != "1 "+UIDL("id-1") || len(UIDL("id-1")) > 70 {
		t.Fatalf("UIDL: %v", got)
	}
	if got := strings.Join(multi("RETR 1"), "|"); got != "Subject: one|X: y||..dot line|second|third" {
		t.Fatalf("RETR (CRLF, dot-stuffed): %q", got)
	}
	if got := strings.Join(multi("TOP 1 1"), "|"); got != "Subject: one|X: y||..dot line" {
		t.Fatalf("TOP 1 1: %q", got)
	}
	c.send("DELE 1\r\n")
	c.line()
	c.send("RETR 1\r\n")
	if l := c.line(); !strings.HasPrefix(l, "-ERR message 1 already deleted") {
		t.Fatalf("RETR of a deleted message: %q", l)
	}
	c.send("RSET\r\nDELE 2\r\nQUIT\r\n")
	c.line()
	c.line()
	if l := c.line(); !strings.HasPrefix(l, "+OK mailproxy signing off (1 messages deleted)") {
		t.Fatalf("QUIT: %q", l)
	}
	if strings.Join(d.removed, ",") != "id-2" {
		t.Fatalf("removed %v at QUIT, want id-2 (id-1 was RSET)", d.removed)
	}
}

func TestServedPOP3QuitTellsARemovalThatFailed(t *testing.T) {
	d := &fakeDrop{msgs: map[string]string{"a": "x\r\n\r\ny\r\n"}, order: []string{"a"},
		fail: &upstream.Error{Profile: "p", Stage: upstream.StageSession, Err: errors.New("graph move: 503")}}
	c := startServedPOP3(t, d)
	c.send("USER joe\r\nPASS pw\r\nDELE 1\r\nQUIT\r\n")
	c.line()
	c.line()
	c.line()
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if l := c.line(); !strings.HasPrefix(l, "-ERR [SYS/TEMP] some deleted messages are still in the maildrop") {
		t.Fatalf("QUIT after a failed removal: %q", l)
	}
}
