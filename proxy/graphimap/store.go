package graphimap

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// requestsAtOnce is how many Graph requests one command makes at once:
// half of what Graph allows a mailbox, so that other sessions go on.
const requestsAtOnce = 2

// each runs fn for 0 … n-1, requestsAtOnce at a time, and returns the
// errors by index.
func each(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, requestsAtOnce)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
		})
	}
	wg.Wait()
	return errs
}

// flagBits splits IMAP flags into system flags and keywords.
func flagBits(flags []string) (mirror.Flags, []string) {
	var bits mirror.Flags
	var kw []string
	for _, f := range flags {
		switch imap.CanonicalFlag(f) {
		case imap.SeenFlag:
			bits |= mirror.Seen
		case imap.AnsweredFlag:
			bits |= mirror.Answered
		case imap.FlaggedFlag:
			bits |= mirror.Flagged
		case imap.DeletedFlag:
			bits |= mirror.Deleted
		case imap.DraftFlag:
			bits |= mirror.Draft
		case imap.RecentFlag:
		default:
			if mirror.IsKeyword(f) && !slices.Contains(kw, f) {
				kw = append(kw, f)
			}
		}
	}
	return bits, kw
}

// apply is e after a STORE. \Draft does not change: Graph sets isDraft
// only when a message is made (GRAPH.md 4.4). Keywords are matched
// without regard to case (RFC 3501 §2.3.2); one the message has keeps
// its category's spelling, a new one is spelled as go-imap hands it over
// (in lower case).
func apply(e mirror.Entry, op imap.FlagsOp, flags []string) mirror.Entry {
	bits, kw := flagBits(flags)
	bits = bits&^mirror.Draft | e.Flags&mirror.Draft
	if op == imap.RemoveFlags {
		bits &^= mirror.Draft
	}
	has := func(list []string, k string) bool {
		return slices.ContainsFunc(list, func(x string) bool { return strings.EqualFold(x, k) })
	}
	switch op {
	case imap.AddFlags:
		e.Flags |= bits
		for _, k := range kw {
			if !has(e.Keywords, k) {
				e.Keywords = append(slices.Clip(e.Keywords), k)
			}
		}
	case imap.RemoveFlags:
		e.Flags &^= bits
		e.Keywords = slices.DeleteFunc(slices.Clone(e.Keywords), func(k string) bool { return has(kw, k) })
	default:
		e.Flags = bits
		kept := slices.DeleteFunc(slices.Clone(e.Keywords), func(k string) bool { return !has(kw, k) })
		for _, k := range kw {
			if !has(kept, k) {
				kept = append(kept, k)
			}
		}
		e.Keywords = kept
	}
	return e
}

// patch is what changes on Graph from old to new, or nil when only
// mailproxy's own \Deleted does: isRead for \Seen, flag for \Flagged,
// PidTagLastVerbExecuted for \Answered (as DAV does), categories for
// keywords.
func patch(old, new mirror.Entry) map[string]any {
	p := map[string]any{}
	changed := old.Flags ^ new.Flags
	if changed&mirror.Seen != 0 {
		p["isRead"] = new.Flags&mirror.Seen != 0
	}
	if changed&mirror.Flagged != 0 {
		status := "notFlagged"
		if new.Flags&mirror.Flagged != 0 {
			status = "flagged"
		}
		p["flag"] = map[string]string{"flagStatus": status}
	}
	if changed&mirror.Answered != 0 {
		verb := "0"
		if new.Flags&mirror.Answered != 0 {
			verb = "102"
		}
		p["singleValueExtendedProperties"] = []map[string]string{{"id": "Integer 0x1081", "value": verb}}
	}
	if !slices.Equal(old.Keywords, new.Keywords) {
		p["categories"] = append(slices.Clone(new.Other), new.Keywords...)
	}
	if len(p) == 0 {
		return nil
	}
	return p
}

func (m *mailbox) UpdateMessagesFlags(uid bool, set *imap.SeqSet, op imap.FlagsOp, flags []string) error {
	return m.store(m.v.resolve(uid, set), op, flags)
}

// store changes flags on Graph, then in the mirror and the view. The
// change applies to the folder as the mirror has it now (another
// session's changes included). A message whose change Graph refused
// keeps its flags; the first failure is the command's answer.
func (m *mailbox) store(refs []ref, op imap.FlagsOp, flags []string) error {
	now := m.f.Snapshot()
	olds := make([]mirror.Entry, len(refs))
	news := make([]mirror.Entry, len(refs))
	for i, r := range refs {
		olds[i] = r.e
		if e, _, ok := now.Find(r.e.UID); ok {
			olds[i] = e
		}
		news[i] = apply(olds[i], op, flags)
	}
	errs := each(len(refs), func(i int) error {
		p := patch(olds[i], news[i])
		if p == nil {
			return nil
		}
		return m.u.s.b.Client.Update(m.u.s.ctx, refs[i].e.ID, p)
	})
	byUID := map[uint32]mirror.Entry{}
	var uids []uint32
	var first error
	for i, err := range errs {
		if err != nil && !isNotFound(err) {
			first = cmp(first, err)
			continue
		}
		byUID[refs[i].e.UID] = news[i]
		uids = append(uids, refs[i].e.UID)
		m.v.set(news[i])
	}
	if err := m.f.Update(uids, func(e *mirror.Entry) {
		n := byUID[e.UID]
		e.Flags, e.Keywords = n.Flags, n.Keywords
	}); err != nil {
		first = cmp(first, err)
	}
	return m.u.s.fail("store", first)
}

func cmp(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// target is the folder a COPY or MOVE goes to: NO [TRYCREATE] when there
// is none (RFC 3501 §6.4.7).
func (m *mailbox) target(name string) (mirror.TreeFolder, *mirror.Folder, error) {
	d, err := m.u.find(name)
	if errors.Is(err, backend.ErrNoSuchMailbox) {
		return d, nil, no(imap.CodeTryCreate, "there is no folder %s", truncate(canonical(name)))
	}
	if err != nil {
		return d, nil, err
	}
	f, err := m.u.s.b.Mirror.Folder(d.ID)
	if err != nil {
		return d, nil, m.u.s.fail("open folder", err)
	}
	return d, f, nil
}

// CopyMessages copies on Graph, which keeps read state, flag and
// categories (message-copy.md); each copy gets its UID in the target at
// once, for COPYUID (RFC 4315), with \Answered and \Deleted as they were.
func (m *mailbox) CopyMessages(uid bool, set *imap.SeqSet, dest string) error {
	refs := m.v.resolve(uid, set)
	d, df, err := m.target(dest)
	if err != nil {
		return err
	}
	src, dst, err := m.transfer(refs, df, func(id string) (graph.Message, error) {
		return m.u.s.b.Client.Copy(m.u.s.ctx, id, d.ID)
	})
	if err != nil {
		return m.u.s.fail("copy", err)
	}
	if len(src) == 0 {
		return nil
	}
	return status(imap.StatusRespOk, "COPYUID", []any{df.Snapshot().Validity, imap.RawString(uidList(src)), imap.RawString(uidList(dst))}, "COPY completed")
}

// transfer copies or moves refs with op, giving each message its UID in
// df; it returns the source and target UIDs of what was done, and the
// first failure.
func (m *mailbox) transfer(refs []ref, df *mirror.Folder, op func(id string) (graph.Message, error)) (src, dst []uint32, err error) {
	msgs := make([]graph.Message, len(refs))
	errs := each(len(refs), func(i int) error {
		var err error
		msgs[i], err = op(refs[i].e.ID)
		return err
	})
	for i, r := range refs {
		if errs[i] != nil {
			err = cmp(err, errs[i])
			continue
		}
		e, env := mirror.FromGraph(msgs[i])
		e.Flags |= r.e.Flags & (mirror.Answered | mirror.Deleted)
		if e.Size == 0 {
			e.Size = r.e.Size
		}
		if old, ok := m.f.Envelope(r.e.ID); ok {
			env = old
		}
		u, aerr := df.Add(e, env)
		if aerr != nil {
			err = cmp(err, aerr)
			continue
		}
		src, dst = append(src, r.e.UID), append(dst, u)
	}
	return src, dst, err
}

// move moves refs on Graph (the immutable id stays, message-move.md):
// gone from this folder, each gets a new UID in the target. It returns
// the COPYUID response code's arguments.
func (m *mailbox) move(refs []ref, dest string) ([]any, error) {
	d, df, err := m.target(dest)
	if err != nil {
		return nil, err
	}
	if d.ID == m.info.ID {
		return nil, no("CANNOT", "the message is in %s already", d.Name)
	}
	src, dst, err := m.transfer(refs, df, func(id string) (graph.Message, error) {
		return m.u.s.b.Client.Move(m.u.s.ctx, id, d.ID)
	})
	var moved []string
	for _, r := range refs {
		if slices.Contains(src, r.e.UID) {
			moved = append(moved, r.e.ID)
		}
	}
	if rerr := m.f.Remove(moved); rerr != nil {
		err = cmp(err, rerr)
	}
	var code []any
	if len(src) > 0 {
		code = []any{df.Snapshot().Validity, imap.RawString(uidList(src)), imap.RawString(uidList(dst))}
	}
	return code, m.u.s.fail("move", err)
}

// MoveMessages is for go-imap's own MOVE, which the extension replaces.
func (m *mailbox) MoveMessages(uid bool, set *imap.SeqSet, dest string) error {
	_, err := m.move(m.v.resolve(uid, set), dest)
	return err
}

// expunge deletes the folder's \Deleted messages (those in uids, when
// given: UID EXPUNGE, RFC 4315) on Graph; they go to Recoverable Items
// (message-delete.md).
func (m *mailbox) expunge(uids *imap.SeqSet) error {
	var targets []mirror.Entry
	for _, e := range m.f.Snapshot().List {
		if e.Flags&mirror.Deleted != 0 && (uids == nil || uids.Contains(e.UID)) {
			targets = append(targets, e)
		}
	}
	errs := each(len(targets), func(i int) error { return m.u.s.b.Client.Delete(m.u.s.ctx, targets[i].ID) })
	var gone []string
	var first error
	for i, err := range errs {
		if err != nil && !isNotFound(err) {
			first = cmp(first, err)
			continue
		}
		gone = append(gone, targets[i].ID)
		if b := m.u.s.b.Mirror.Bodies; b != nil {
			b.Forget(targets[i].ID)
		}
	}
	if err := m.f.Remove(gone); err != nil {
		first = cmp(first, err)
	}
	return m.u.s.fail("expunge", first)
}

// Expunge is CLOSE's: no responses, and nothing done in a folder opened
// with EXAMINE (RFC 3501 §6.4.2).
func (m *mailbox) Expunge() error {
	if m.readOnly || m.f == nil {
		return nil
	}
	return m.expunge(nil)
}

// uidList writes UIDs as an IMAP set, ranges joined.
func uidList(uids []uint32) string {
	var b strings.Builder
	for i := 0; i < len(uids); {
		j := i
		for j+1 < len(uids) && uids[j+1] == uids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(uint64(uids[i]), 10))
		if j > i {
			fmt.Fprintf(&b, ":%d", uids[j])
		}
		i = j + 1
	}
	return b.String()
}
