package demo

import (
	"bytes"
	"errors"
	"sync"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"
	"github.com/emersion/go-imap/backend/memory"
	imapserver "github.com/emersion/go-imap/server"
	"github.com/emersion/go-sasl"
)

// mailbox is the demo's one mailbox: go-imap's in-memory backend, which the
// SMTP upstream delivers into and the IMAP and POP3 upstreams read. The
// memory backend is not safe for concurrent use, so every call into it
// holds mu.
type mailbox struct {
	mu   sync.Mutex
	be   *memory.Backend
	user backend.User
}

// The memory backend's only user; the demo's XOAUTH2 logins map to it.
const memUser, memPassword = "username", "password"

func newMailbox() (*mailbox, error) {
	m := &mailbox{be: memory.New()}
	u, err := m.be.Login(nil, memUser, memPassword)
	if err != nil {
		return nil, err
	}
	m.user = u
	inbox, err := u.GetMailbox("INBOX")
	if err != nil {
		return nil, err
	}
	inbox.(*memory.Mailbox).Messages = nil // drop the backend's sample message
	return m, nil
}

// deliver appends a message to INBOX.
func (m *mailbox) deliver(data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	inbox, err := m.user.GetMailbox("INBOX")
	if err != nil {
		return err
	}
	return inbox.CreateMessage(nil, time.Now(), bytes.NewReader(data))
}

// inbox returns the messages in INBOX, oldest first.
func (m *mailbox) inbox() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, _ := m.user.GetMailbox("INBOX")
	var out [][]byte
	for _, msg := range mb.(*memory.Mailbox).Messages {
		out = append(out, msg.Body)
	}
	return out
}

// remove deletes the messages at the given INBOX positions (0-based).
func (m *mailbox) remove(positions map[int]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mb, _ := m.user.GetMailbox("INBOX")
	mm := mb.(*memory.Mailbox)
	kept := mm.Messages[:0]
	for i, msg := range mm.Messages {
		if !positions[i] {
			kept = append(kept, msg)
		}
	}
	mm.Messages = kept
}

// imapServer serves the mailbox over IMAP, XOAUTH2 only.
func (m *mailbox) imapServer(validate func(user, token string) error) *imapserver.Server {
	s := imapserver.New(lockedBackend{m})
	s.AllowInsecureAuth = true // loopback only
	// Passwords are not taken: LOGIN reaches lockedBackend.Login, which
	// refuses, and PLAIN is replaced by a mechanism that always fails.
	s.EnableAuth(sasl.Plain, func(imapserver.Conn) sasl.Server {
		return sasl.NewPlainServer(func(string, string, string) error { return errors.New("this server takes only XOAUTH2") })
	})
	s.EnableAuth("XOAUTH2", func(conn imapserver.Conn) sasl.Server {
		return &xoauth2Server{
			check: func(user, token string) error {
				if err := validate(user, token); err != nil {
					return err
				}
				ctx := conn.Context()
				ctx.State, ctx.User = imap.AuthenticatedState, lockedUser{m}
				return nil
			},
			failure: errors.New("[AUTHENTICATIONFAILED] invalid token"),
		}
	})
	return s
}

// lockedBackend and the types below hold the mailbox lock around every
// call into the memory backend.
type lockedBackend struct{ m *mailbox }

func (b lockedBackend) Login(*imap.ConnInfo, string, string) (backend.User, error) {
	return nil, errors.New("this server takes only XOAUTH2")
}

type lockedUser struct{ m *mailbox }

func (u lockedUser) lock() func() { u.m.mu.Lock(); return u.m.mu.Unlock }

func (u lockedUser) Username() string { return Mailbox }
func (u lockedUser) ListMailboxes(subscribed bool) ([]backend.Mailbox, error) {
	defer u.lock()()
	mbs, err := u.m.user.ListMailboxes(subscribed)
	for i := range mbs {
		mbs[i] = lockedMailbox{u.m, mbs[i]}
	}
	return mbs, err
}
func (u lockedUser) GetMailbox(name string) (backend.Mailbox, error) {
	defer u.lock()()
	mb, err := u.m.user.GetMailbox(name)
	if err != nil {
		return nil, err
	}
	return lockedMailbox{u.m, mb}, nil
}
func (u lockedUser) CreateMailbox(name string) error {
	defer u.lock()()
	return u.m.user.CreateMailbox(name)
}
func (u lockedUser) DeleteMailbox(name string) error {
	defer u.lock()()
	return u.m.user.DeleteMailbox(name)
}
func (u lockedUser) RenameMailbox(from, to string) error {
	defer u.lock()()
	return u.m.user.RenameMailbox(from, to)
}
func (u lockedUser) Logout() error { return nil }

type lockedMailbox struct {
	m  *mailbox
	mb backend.Mailbox
}

func (l lockedMailbox) lock() func() { l.m.mu.Lock(); return l.m.mu.Unlock }

func (l lockedMailbox) Name() string { return l.mb.Name() }
func (l lockedMailbox) Info() (*imap.MailboxInfo, error) {
	defer l.lock()()
	return l.mb.Info()
}
func (l lockedMailbox) Status(items []imap.StatusItem) (*imap.MailboxStatus, error) {
	defer l.lock()()
	return l.mb.Status(items)
}
func (l lockedMailbox) SetSubscribed(s bool) error {
	defer l.lock()()
	return l.mb.SetSubscribed(s)
}
func (l lockedMailbox) Check() error { return nil }
func (l lockedMailbox) ListMessages(uid bool, seq *imap.SeqSet, items []imap.FetchItem, ch chan<- *imap.Message) error {
	// Collect under the lock, send without it: the server reads ch as it writes.
	inner := make(chan *imap.Message)
	var msgs []*imap.Message
	done := make(chan struct{})
	go func() {
		for msg := range inner {
			msgs = append(msgs, msg)
		}
		close(done)
	}()
	l.m.mu.Lock()
	err := l.mb.ListMessages(uid, seq, items, inner)
	l.m.mu.Unlock()
	<-done
	for _, msg := range msgs {
		ch <- msg
	}
	close(ch)
	return err
}
func (l lockedMailbox) SearchMessages(uid bool, c *imap.SearchCriteria) ([]uint32, error) {
	defer l.lock()()
	return l.mb.SearchMessages(uid, c)
}
func (l lockedMailbox) CreateMessage(flags []string, date time.Time, body imap.Literal) error {
	defer l.lock()()
	return l.mb.CreateMessage(flags, date, body)
}
func (l lockedMailbox) UpdateMessagesFlags(uid bool, seq *imap.SeqSet, op imap.FlagsOp, flags []string) error {
	defer l.lock()()
	return l.mb.UpdateMessagesFlags(uid, seq, op, flags)
}
func (l lockedMailbox) CopyMessages(uid bool, seq *imap.SeqSet, dest string) error {
	defer l.lock()()
	return l.mb.CopyMessages(uid, seq, dest)
}
func (l lockedMailbox) Expunge() error {
	defer l.lock()()
	return l.mb.Expunge()
}
