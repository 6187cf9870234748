package graphimap

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/commands"
	"github.com/emersion/go-imap/responses"
	"github.com/emersion/go-imap/server"
)

// extension replaces the go-imap v1 commands whose answers need more than
// its backend interface gives: untagged responses for what changed
// (NOOP, CHECK, IDLE polling, EXPUNGE and MOVE answered with EXPUNGE),
// UIDPLUS's APPENDUID, COPYUID and UID EXPUNGE, SELECT with the mirror
// brought up to date, and the capabilities and ID.
//
// go-imap's Server.Enable skips an extension that answers for MOVE or
// IDLE (it takes those for its own built-ins), so the extension answers
// for commands only once enabled.
type extension struct {
	b       *Backend
	enabled *atomic.Bool
}

func newExtension(b *Backend) extension { return extension{b: b, enabled: new(atomic.Bool)} }

func (x extension) Capabilities(server.Conn) []string { return nil }

func (x extension) Command(name string) server.HandlerFactory {
	if !x.enabled.Load() {
		return nil
	}
	switch name {
	case "CAPABILITY":
		return func() server.Handler { return &capability{b: x.b} }
	case "ID":
		return func() server.Handler { return &id{} }
	case "SELECT":
		return func() server.Handler { return &selectCmd{} }
	case "EXAMINE":
		return func() server.Handler { return &selectCmd{readOnly: true} }
	case "NOOP":
		return func() server.Handler { return &pollCmd{} }
	case "CHECK":
		return func() server.Handler { return &pollCmd{check: true} }
	case "IDLE":
		return func() server.Handler { return &idle{poll: x.b.poll()} }
	case "EXPUNGE":
		return func() server.Handler { return &expunge{} }
	case "MOVE":
		return func() server.Handler { return &move{} }
	case "APPEND":
		return func() server.Handler { return &appendCmd{} }
	}
	return nil
}

func selected(conn server.Conn) *mailbox {
	m, _ := conn.Context().Mailbox.(*mailbox)
	return m
}

// writable is the selected folder, which SELECT opened for changes.
func writable(conn server.Conn) (*mailbox, error) {
	switch m := selected(conn); {
	case m == nil:
		return nil, server.ErrNoMailboxSelected
	case m.readOnly:
		return nil, server.ErrMailboxReadOnly
	default:
		return m, nil
	}
}

func userOf(conn server.Conn) (*user, error) {
	u, ok := conn.Context().User.(*user)
	if !ok {
		return nil, server.ErrNotAuthenticated
	}
	return u, nil
}

type capability struct {
	commands.Capability
	b *Backend
}

func (c *capability) Handle(conn server.Conn) error {
	return conn.WriteResp(&responses.Capability{Caps: c.b.capabilities()})
}

// id answers RFC 2971's ID after login as before it.
type id struct{}

func (*id) Parse([]any) error { return nil }
func (*id) Handle(conn server.Conn) error {
	return writeLines(conn, []string{`* ID ("name" "mailproxy")`})
}

type selectCmd struct {
	commands.Select
	readOnly bool
}

func (c *selectCmd) Handle(conn server.Conn) error {
	ctx := conn.Context()
	// RFC 3501 §6.3.1: a failed SELECT leaves no folder selected.
	ctx.Mailbox, ctx.MailboxReadOnly = nil, false
	u, err := userOf(conn)
	if err != nil {
		return err
	}
	mb, err := u.GetMailbox(c.Mailbox)
	if errors.Is(err, backend.ErrNoSuchMailbox) {
		return no("NONEXISTENT", "there is no folder %s", truncate(canonical(c.Mailbox)))
	}
	if err != nil {
		return err
	}
	m := mb.(*mailbox)
	if err := m.open(c.readOnly); err != nil {
		return err
	}
	if err := writeLines(conn, m.selectResponses()); err != nil {
		return err
	}
	ctx.Mailbox, ctx.MailboxReadOnly = m, c.readOnly
	code, name := imap.CodeReadWrite, "SELECT"
	if c.readOnly {
		code, name = imap.CodeReadOnly, "EXAMINE"
	}
	return status(imap.StatusRespOk, code, nil, "%s completed", name)
}

// pollCmd is NOOP and CHECK: what changed since the client last heard.
type pollCmd struct {
	commands.Noop
	check bool
}

func (c *pollCmd) Handle(conn server.Conn) error {
	m := selected(conn)
	if m == nil {
		if c.check {
			return server.ErrNoMailboxSelected
		}
		return nil
	}
	return m.poll(conn, fresh)
}

// idle is RFC 2177's IDLE: while the client waits, the selected folder is
// polled every poll (DefaultPoll) and what changed is told at once.
type idle struct {
	commands.Idle
	poll time.Duration
}

func (c *idle) Handle(conn server.Conn) error {
	if err := conn.WriteResp(&imap.ContinuationReq{Info: "idling"}); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- readDone(conn) }()
	t := time.NewTicker(c.poll)
	defer t.Stop()
	m := selected(conn)
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if m != nil {
				if err := m.poll(conn, c.poll/2); err != nil {
					return err
				}
			}
		}
	}
}

// readDone reads IDLE's DONE, a byte at a time so that nothing after it
// is taken from the next command.
func readDone(r io.Reader) error {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := r.Read(b); err != nil {
			return err
		}
		if b[0] == '\n' {
			break
		}
		if len(line) < 64 {
			line = append(line, b[0])
		}
	}
	if !strings.EqualFold(strings.TrimSpace(string(line)), "DONE") {
		return errors.New("IDLE ends with DONE")
	}
	return nil
}

// expunge is EXPUNGE and UID EXPUNGE (RFC 4315 §2.1).
type expunge struct {
	set *imap.SeqSet
}

func (c *expunge) Parse(fields []any) error {
	if len(fields) == 0 {
		return nil
	}
	s, ok := fields[0].(string)
	if !ok {
		return errors.New("UID EXPUNGE takes a UID set")
	}
	set, err := imap.ParseSeqSet(s)
	c.set = set
	return err
}

func (c *expunge) Handle(conn server.Conn) error {
	if c.set != nil {
		return errors.New("EXPUNGE takes no arguments (UID EXPUNGE takes a UID set)")
	}
	return c.run(conn)
}

func (c *expunge) UidHandle(conn server.Conn) error {
	if c.set == nil {
		return errors.New("UID EXPUNGE takes a UID set")
	}
	return c.run(conn)
}

func (c *expunge) run(conn server.Conn) error {
	m, err := writable(conn)
	if err != nil {
		return err
	}
	err = m.expunge(c.set)
	if uerr := m.update(conn, m.f.Snapshot()); err == nil {
		err = uerr
	}
	return err
}

// move is RFC 6851's MOVE: COPYUID in an untagged OK, then the EXPUNGEs.
type move struct{ commands.Move }

func (c *move) Handle(conn server.Conn) error    { return c.run(conn, false) }
func (c *move) UidHandle(conn server.Conn) error { return c.run(conn, true) }

func (c *move) run(conn server.Conn, uid bool) error {
	m, err := writable(conn)
	if err != nil {
		return err
	}
	code, err := m.move(m.v.resolve(uid, c.SeqSet), c.Mailbox)
	if code != nil {
		if werr := writeLines(conn, []string{fmt.Sprintf("* OK [COPYUID %v %v %v] Moved", code...)}); werr != nil {
			return werr
		}
	}
	if uerr := m.update(conn, m.f.Snapshot()); err == nil {
		err = uerr
	}
	return err
}

// appendCmd answers APPENDUID (RFC 4315 §3), and EXISTS when the folder
// is the one selected.
type appendCmd struct{ commands.Append }

func (c *appendCmd) Handle(conn server.Conn) error {
	u, err := userOf(conn)
	if err != nil {
		return err
	}
	mb, err := u.GetMailbox(c.Mailbox)
	if errors.Is(err, backend.ErrNoSuchMailbox) {
		return no(imap.CodeTryCreate, "there is no folder %s", truncate(canonical(c.Mailbox)))
	}
	if err != nil {
		return err
	}
	m := mb.(*mailbox)
	validity, uid, err := m.append(c.Flags, c.Date, c.Message)
	if err != nil {
		return err
	}
	if sel := selected(conn); sel != nil && sel.info.ID == m.info.ID {
		if err := sel.update(conn, sel.f.Snapshot()); err != nil {
			return err
		}
	}
	return status(imap.StatusRespOk, "APPENDUID", []any{validity, uid}, "APPEND completed")
}
