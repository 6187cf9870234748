package graphimap

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend/backendutil"
	"github.com/emersion/go-message/textproto"

	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// bodyWindow is how many bodies a FETCH reads ahead of what it writes;
// bodyReaders how many of those it reads at once: two of the four
// requests Graph allows a mailbox in flight, so another session always
// has room.
const (
	bodyWindow  = 4
	bodyReaders = 2
)

// needsBody reports whether items ask for the MIME: body sections,
// BODY/BODYSTRUCTURE. FLAGS, UID, INTERNALDATE, RFC822.SIZE and ENVELOPE
// come from the mirror.
func needsBody(items []imap.FetchItem) bool {
	for _, it := range items {
		switch it {
		case imap.FetchFlags, imap.FetchUid, imap.FetchInternalDate, imap.FetchRFC822Size, imap.FetchEnvelope:
		default:
			return true
		}
	}
	return false
}

// body is a message's MIME, opened from the cache.
type body struct {
	f    *os.File
	size int64
	err  error
}

// ListMessages answers FETCH. Bodies are read ahead of the writing, a few
// at a time; a body that cannot be read ends the FETCH with NO (what was
// sent stays sent). A message gone from Graph since the client last heard
// is left out (RFC 2180 §4.1.2).
func (m *mailbox) ListMessages(uid bool, set *imap.SeqSet, items []imap.FetchItem, ch chan<- *imap.Message) error {
	defer close(ch)
	refs := m.v.resolve(uid, set)
	var bodies []chan body
	var taken func()
	next := 0 // bodies taken
	if needsBody(items) {
		ctx, cancel := context.WithCancel(m.u.s.ctx)
		bodies, taken = m.readAhead(ctx, refs)
		defer func() {
			cancel()
			go func() { // close what was read ahead and not written
				for _, c := range bodies[next:] {
					if b := <-c; b.f != nil {
						b.f.Close()
					}
				}
			}()
		}()
	}
	for i, r := range refs {
		var b body
		if bodies != nil {
			b = <-bodies[i]
			next = i + 1
			taken()
			if b.err != nil {
				if isNotFound(b.err) {
					continue
				}
				return m.u.s.fail("fetch", b.err)
			}
		}
		msg, err := m.fetchOne(r, items, b)
		if err != nil {
			if b.f != nil {
				b.f.Close()
			}
			return err
		}
		ch <- msg
	}
	return nil
}

// readAhead opens the bodies of refs in order, at most bodyWindow ahead
// of the consumer, which calls taken as it takes each, and bodyReaders at
// once.
func (m *mailbox) readAhead(ctx context.Context, refs []ref) (out []chan body, taken func()) {
	out = make([]chan body, len(refs))
	for i := range out {
		out[i] = make(chan body, 1)
	}
	window := make(chan struct{}, bodyWindow)
	readers := make(chan struct{}, bodyReaders)
	go func() {
		for i, r := range refs {
			select {
			case window <- struct{}{}:
				readers <- struct{}{}
			case <-ctx.Done():
				for _, c := range out[i:] {
					c <- body{err: ctx.Err()}
				}
				return
			}
			go func() {
				f, size, err := m.openBody(ctx, r.e)
				<-readers
				out[i] <- body{f: f, size: size, err: err}
			}()
		}
	}()
	return out, func() { <-window }
}

// openBody reads a message's MIME through the cache; a read cut short is
// tried twice more. Once read, the mirror records its exact size.
func (m *mailbox) openBody(ctx context.Context, e mirror.Entry) (*os.File, int64, error) {
	c := m.u.s.b.Client
	fetch := func(ctx context.Context) (io.ReadCloser, error) { return c.MIME(ctx, e.ID) }
	var f *os.File
	var size int64
	var err error
	for try := 0; try < 3; try++ {
		f, size, err = m.u.s.b.Mirror.Bodies.Open(ctx, e.ID, fetch)
		if err == nil || isNotFound(err) || ctx.Err() != nil {
			break
		}
	}
	if _, ok := errors.AsType[*graph.Error](err); err != nil && !ok && ctx.Err() == nil {
		// The answer broke off (a connection lost mid-body): Graph may
		// give it whole next time.
		err = &graph.Error{Profile: m.u.s.b.Profile, Op: "get MIME", Err: err}
	}
	if err != nil {
		return nil, 0, err
	}
	if !e.Exact || e.Size != size {
		m.f.Update([]uint32{e.UID}, func(x *mirror.Entry) { x.Size, x.Exact = size, true })
	}
	return f, size, nil
}

// fetchOne builds one message's FETCH response from its entry and, when
// asked for, its body (which it closes, or hands to a literal that closes
// it when read).
func (m *mailbox) fetchOne(r ref, items []imap.FetchItem, b body) (*imap.Message, error) {
	e := r.e
	msg := imap.NewMessage(r.seq, items)
	setSeen := false
	keep := false // b.f is read by a literal
	for _, it := range items {
		switch it {
		case imap.FetchUid:
			msg.Uid = e.UID
		case imap.FetchFlags:
			msg.Flags = flagList(e)
		case imap.FetchInternalDate:
			msg.InternalDate = e.Received
		case imap.FetchRFC822Size:
			msg.Size = uint32(e.Size)
		case imap.FetchEnvelope:
			env, _ := m.f.Envelope(e.ID)
			msg.Envelope = envelope(env)
		case imap.FetchBody, imap.FetchBodyStructure:
			hdr, rest, err := header(b.f)
			if err != nil {
				return nil, m.u.s.fail("fetch", err)
			}
			if msg.BodyStructure, err = backendutil.FetchBodyStructure(hdr, rest, it == imap.FetchBodyStructure); err != nil {
				return nil, no("PARSE", "fetch: the message's MIME cannot be parsed: %v", err)
			}
		default:
			sec, err := imap.ParseBodySectionName(it)
			if err != nil {
				continue // go-imap's parser has refused it already
			}
			l, streams, err := section(b, sec)
			if err != nil {
				return nil, m.u.s.fail("fetch", err)
			}
			keep = keep || streams
			msg.Body[sec] = l
			if !sec.Peek && e.Flags&mirror.Seen == 0 && !m.readOnly {
				setSeen = true
			}
		}
	}
	if b.f != nil && !keep {
		b.f.Close()
	}
	if setSeen {
		// RFC 3501 §6.4.5: BODY[] sets \Seen; the new flags go with the
		// response.
		if err := m.store([]ref{r}, imap.AddFlags, []string{imap.SeenFlag}); err != nil {
			return nil, err
		}
		msg.Items[imap.FetchFlags] = nil
		e, _ = m.v.over[e.UID]
		msg.Flags = flagList(e)
	}
	return msg, nil
}

// header reads the MIME header from the start of f.
func header(f *os.File) (textproto.Header, *bufio.Reader, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return textproto.Header{}, nil, err
	}
	br := bufio.NewReader(f)
	h, err := textproto.ReadHeader(br)
	return h, br, err
}

// section is a body section's literal: BODY[] (whole or partial) is read
// from the file as it is written (streams); other sections are cut out
// with go-imap's backendutil.
func section(b body, sec *imap.BodySectionName) (imap.Literal, bool, error) {
	if sec.Specifier == imap.EntireSpecifier && len(sec.Path) == 0 {
		from, n := int64(0), b.size
		if len(sec.Partial) > 0 {
			from = min(int64(sec.Partial[0]), b.size)
			n = b.size - from
			if len(sec.Partial) > 1 {
				n = min(n, int64(sec.Partial[1]))
			}
		}
		return &fileLiteral{r: io.NewSectionReader(b.f, from, n), f: b.f, n: int(n)}, true, nil
	}
	hdr, rest, err := header(b.f)
	if err != nil {
		return nil, false, err
	}
	l, err := backendutil.FetchBodySection(hdr, rest, sec)
	if err != nil {
		// A part that is not there is empty (RFC 3501 §6.4.5 lets the
		// server answer NIL or empty).
		return strings.NewReader(""), false, nil
	}
	return l, false, nil
}

// fileLiteral is part of a body file, closed once read.
type fileLiteral struct {
	r *io.SectionReader
	f *os.File
	n int
}

func (l *fileLiteral) Len() int { return l.n }

func (l *fileLiteral) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if err != nil {
		l.f.Close()
	}
	return n, err
}

// envelope is IMAP's ENVELOPE from the mirror's (RFC 3501 §7.4.2).
// In-Reply-To is not among Graph v1.0's properties: it is NIL.
func envelope(e mirror.Envelope) *imap.Envelope {
	return &imap.Envelope{Date: e.Date, Subject: e.Subject, From: addrs(e.From), Sender: addrs(orFrom(e.Sender, e.From)),
		ReplyTo: addrs(orFrom(e.ReplyTo, e.From)), To: addrs(e.To), Cc: addrs(e.Cc), Bcc: addrs(e.Bcc), MessageId: e.MessageID}
}

// orFrom: Sender and Reply-To default to From (RFC 3501 §7.4.2).
func orFrom(a, from []mirror.Address) []mirror.Address {
	if len(a) == 0 {
		return from
	}
	return a
}

func addrs(as []mirror.Address) []*imap.Address {
	var out []*imap.Address
	for _, a := range as {
		local, host, _ := strings.Cut(a.Addr, "@")
		name := a.Name
		if strings.EqualFold(name, a.Addr) {
			name = ""
		}
		out = append(out, &imap.Address{PersonalName: name, MailboxName: local, HostName: host})
	}
	return out
}

// isNotFound reports a message Graph no longer has.
func isNotFound(err error) bool {
	ge, ok := errors.AsType[*graph.Error](err)
	return ok && ge.Status == http.StatusNotFound
}
