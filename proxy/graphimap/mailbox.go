package graphimap

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/server"

	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// mailbox is go-imap's backend.Mailbox: a folder, and, once selected,
// what this session's client has been told of it (its view).
type mailbox struct {
	u        *user
	info     mirror.TreeFolder
	f        *mirror.Folder
	readOnly bool
	v        view
}

// view is the folder as the client knows it: a snapshot (whose order
// gives the sequence numbers), and the entries this session changed
// since (their flags, told at once).
type view struct {
	snap mirror.Snapshot
	over map[uint32]mirror.Entry
}

func (v *view) entry(i int) mirror.Entry {
	e := v.snap.List[i]
	if o, ok := v.over[e.UID]; ok {
		return o
	}
	return e
}

func (v *view) set(e mirror.Entry) {
	if v.over == nil {
		v.over = map[uint32]mirror.Entry{}
	}
	v.over[e.UID] = e
}

// ref is a message of the view: its sequence number and entry.
type ref struct {
	seq uint32
	e   mirror.Entry
}

// resolve is the view's messages in set, by sequence number or UID, in
// order. "*" is the last message (RFC 3501 §6.4.8: a UID range n:*
// includes the highest UID even when it is below n).
func (v *view) resolve(uid bool, set *imap.SeqSet) []ref {
	list := v.snap.List
	n := len(list)
	if n == 0 || set == nil {
		return nil
	}
	in := map[int]bool{}
	for _, s := range set.Set {
		start, stop := s.Start, s.Stop
		if uid {
			last := list[n-1].UID
			if start == 0 {
				start = last
			}
			if stop == 0 {
				stop = last
			}
			if start > stop {
				start, stop = stop, start
			}
			i := sort.Search(n, func(i int) bool { return list[i].UID >= start })
			for ; i < n && list[i].UID <= stop; i++ {
				in[i] = true
			}
			continue
		}
		if start == 0 {
			start = uint32(n)
		}
		if stop == 0 {
			stop = uint32(n)
		}
		if start > stop {
			start, stop = stop, start
		}
		for i := start; i <= min(stop, uint32(n)); i++ {
			in[int(i-1)] = true
		}
	}
	idx := make([]int, 0, len(in))
	for i := range in {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	out := make([]ref, len(idx))
	for k, i := range idx {
		out[k] = ref{seq: uint32(i + 1), e: v.entry(i)}
	}
	return out
}

func (m *mailbox) Name() string { return m.info.Name }

func (m *mailbox) Info() (*imap.MailboxInfo, error) {
	return &imap.MailboxInfo{Attributes: attributes(m.info), Delimiter: mirror.Delimiter, Name: m.info.Name}, nil
}

func (m *mailbox) folder() (*mirror.Folder, error) {
	if m.f == nil {
		f, err := m.u.s.b.Mirror.Folder(m.info.ID)
		if err != nil {
			return nil, m.u.s.fail("open folder", err)
		}
		m.f = f
	}
	return m.f, nil
}

var (
	systemFlags    = []string{imap.SeenFlag, imap.AnsweredFlag, imap.FlaggedFlag, imap.DeletedFlag, imap.DraftFlag}
	permanentFlags = []string{imap.SeenFlag, imap.AnsweredFlag, imap.FlaggedFlag, imap.DeletedFlag, `\*`}
)

// Status is STATUS's answer (and APPEND's): MESSAGES and UNSEEN from the
// folder's counts on Graph, UIDNEXT and UIDVALIDITY from the mirror.
func (m *mailbox) Status(items []imap.StatusItem) (*imap.MailboxStatus, error) {
	st := imap.NewMailboxStatus(m.info.Name, items)
	st.Flags, st.PermanentFlags = systemFlags, permanentFlags
	var counts *graph.Folder
	for _, it := range items {
		switch it {
		case imap.StatusMessages, imap.StatusUnseen:
			if counts == nil {
				g, err := m.u.s.b.Client.Folder(m.u.s.ctx, m.info.ID)
				if err != nil {
					return nil, m.u.s.fail("status", err)
				}
				counts = &g
			}
			st.Messages, st.Unseen = uint32(counts.Total), uint32(counts.Unread)
		case imap.StatusUidNext, imap.StatusUidValidity:
			f, err := m.folder()
			if err != nil {
				return nil, err
			}
			snap := f.Snapshot()
			st.UidNext, st.UidValidity = snap.Next, snap.Validity
		}
	}
	return st, nil
}

func (m *mailbox) SetSubscribed(sub bool) error {
	return m.u.s.fail("subscribe", m.u.s.b.Mirror.SetSubscribed(m.info.ID, sub))
}

func (m *mailbox) Check() error { return nil }

// open selects the folder: its mirror brought up to date, the view made.
func (m *mailbox) open(readOnly bool) error {
	f, err := m.folder()
	if err != nil {
		return err
	}
	if err := f.Sync(m.u.s.ctx, m.u.s.b.Client, 0); err != nil {
		return m.u.s.fail("select", err)
	}
	m.readOnly, m.v = readOnly, view{snap: f.Snapshot()}
	return nil
}

// selectResponses are SELECT's untagged responses (RFC 3501 §6.3.1).
func (m *mailbox) selectResponses() []string {
	list := m.v.snap.List
	flags := slices.Clone(systemFlags)
	seen := map[string]bool{}
	unseen := 0
	for i, e := range list {
		for _, k := range e.Keywords {
			if !seen[k] {
				seen[k] = true
				flags = append(flags, k)
			}
		}
		if unseen == 0 && e.Flags&mirror.Seen == 0 {
			unseen = i + 1
		}
	}
	lines := []string{
		"* FLAGS (" + strings.Join(flags, " ") + ")",
		"* OK [PERMANENTFLAGS (" + strings.Join(permanentFlags, " ") + ")] Flags permitted",
		fmt.Sprintf("* %d EXISTS", len(list)),
		"* 0 RECENT",
	}
	if unseen > 0 {
		lines = append(lines, fmt.Sprintf("* OK [UNSEEN %d] First unseen", unseen))
	}
	return append(lines,
		fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid", m.v.snap.Validity),
		fmt.Sprintf("* OK [UIDNEXT %d] Predicted next UID", m.v.snap.Next))
}

// poll brings the folder up to date when its last round is older than
// age (no round when age < 0) and tells the client what changed.
func (m *mailbox) poll(conn server.Conn, age time.Duration) error {
	if age >= 0 {
		if err := m.f.Sync(m.u.s.ctx, m.u.s.b.Client, age); err != nil {
			// The client keeps what it knows; the next poll tries again.
			m.u.s.fail("poll", err)
		}
	}
	return m.update(conn, m.f.Snapshot())
}

// update tells the client how snap differs from its view, and makes snap
// the view: EXPUNGE for what is gone (highest first, so the numbers the
// client holds stay right), EXISTS for what is new, FETCH FLAGS for
// flags changed elsewhere.
func (m *mailbox) update(conn server.Conn, snap mirror.Snapshot) error {
	old := m.v
	var lines []string
	gone := 0
	for i := len(old.snap.List) - 1; i >= 0; i-- {
		if _, _, ok := snap.Find(old.snap.List[i].UID); !ok {
			lines = append(lines, fmt.Sprintf("* %d EXPUNGE", i+1))
			gone++
		}
	}
	if len(snap.List) != len(old.snap.List)-gone {
		lines = append(lines, fmt.Sprintf("* %d EXISTS", len(snap.List)))
	}
	for i := range old.snap.List {
		was := old.entry(i)
		now, j, ok := snap.Find(was.UID)
		if ok && (now.Flags != was.Flags || !slices.Equal(now.Keywords, was.Keywords)) {
			// j+1: the number after the EXPUNGEs above.
			lines = append(lines, fmt.Sprintf("* %d FETCH (UID %d FLAGS (%s))", j+1, now.UID, strings.Join(flagList(now), " ")))
		}
	}
	m.v = view{snap: snap}
	return writeLines(conn, lines)
}

// flagList is an entry's flags as IMAP spells them.
func flagList(e mirror.Entry) []string {
	var out []string
	for _, f := range []struct {
		bit  mirror.Flags
		name string
	}{{mirror.Seen, imap.SeenFlag}, {mirror.Answered, imap.AnsweredFlag}, {mirror.Flagged, imap.FlaggedFlag},
		{mirror.Deleted, imap.DeletedFlag}, {mirror.Draft, imap.DraftFlag}} {
		if e.Flags&f.bit != 0 {
			out = append(out, f.name)
		}
	}
	return append(out, e.Keywords...)
}

// raw is untagged responses written as they are.
type raw []string

func (r raw) WriteTo(w *imap.Writer) error {
	for _, l := range r {
		if _, err := w.Write([]byte(l + "\r\n")); err != nil {
			return err
		}
	}
	return nil
}

func writeLines(conn server.Conn, lines []string) error {
	if len(lines) == 0 {
		return nil
	}
	return conn.WriteResp(raw(lines))
}
