package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"mailproxy/upstream/graph"
)

// Folder is the mirror of one Graph folder, shared by every session of
// the process that uses it.
type Folder struct {
	ID string
	mb *Mailbox

	mu       sync.Mutex
	validity uint32
	next     uint32
	link     string  // the deltaLink the last round ended with
	list     []Entry // by UID; replaced on change, never changed in place
	byID     map[string]uint32
	synced   time.Time
	syncing  chan struct{} // closed when the round under way ends
	syncErr  error
	// touched are the ids this process changed while a round was being
	// read: what the round says of them is older than what is here.
	touched map[string]bool
}

// Snapshot is a folder at one moment. It never changes: sessions keep
// one as what their client has been told.
type Snapshot struct {
	Validity, Next uint32
	List           []Entry // by UID
}

// Find is the entry with uid, if the snapshot has it.
func (s Snapshot) Find(uid uint32) (Entry, int, bool) {
	i, ok := slices.BinarySearchFunc(s.List, uid, func(e Entry, uid uint32) int { return int(int64(e.UID) - int64(uid)) })
	if !ok {
		return Entry{}, i, false
	}
	return s.List[i], i, true
}

// Snapshot is the folder now.
func (f *Folder) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Snapshot{Validity: f.validity, Next: f.next, List: f.list}
}

// Synced is when the last round ended (zero: never in this process).
func (f *Folder) Synced() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.synced
}

// loadFolder reads a folder's mirror, making it (with a new UIDVALIDITY)
// the first time.
func loadFolder(db *bbolt.DB, mb *Mailbox, id string) (*Folder, error) {
	f := &Folder{ID: id, mb: mb, byID: map[string]uint32{}}
	err := db.Update(func(tx *bbolt.Tx) error {
		fb := tx.Bucket(bucketFolders)
		var meta folderMeta
		if v := fb.Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &meta); err != nil {
				return err
			}
		}
		if meta.Validity == 0 {
			v, err := newValidity(tx)
			if err != nil {
				return err
			}
			meta = folderMeta{Validity: v, Next: 1}
			if err := putJSON(fb, []byte(id), meta); err != nil {
				return err
			}
			if err := tx.DeleteBucket(folderBucket(id)); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
				return err
			}
		}
		b, err := tx.CreateBucketIfNotExists(folderBucket(id))
		if err != nil {
			return err
		}
		f.validity, f.next, f.link = meta.Validity, meta.Next, meta.Link
		c := b.Cursor()
		for k, v := c.Seek([]byte("u")); k != nil && k[0] == 'u'; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			f.list = append(f.list, e)
			f.byID[e.ID] = e.UID
		}
		return nil
	})
	return f, err
}

// change is one item of a delta round.
type change struct {
	e       Entry
	removed bool
}

// Sync brings the folder up to date with one delta round, unless a round
// ended less than fresh ago. Rounds are not run twice at once: a caller
// that finds one under way waits for it and takes its result.
func (f *Folder) Sync(ctx context.Context, c *graph.Client, fresh time.Duration) error {
	f.mu.Lock()
	if ch := f.syncing; ch != nil {
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.syncErr
	}
	if fresh > 0 && time.Since(f.synced) < fresh {
		f.mu.Unlock()
		return nil
	}
	done := make(chan struct{})
	f.syncing, f.touched = done, map[string]bool{}
	link := f.link
	f.mu.Unlock()

	round, next, full, err := f.read(ctx, c, link)

	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		err = f.apply(round, full, next)
	}
	if err == nil {
		f.synced = time.Now()
	}
	f.syncErr, f.syncing, f.touched = err, nil, nil
	close(done)
	return err
}

// read reads a round: from link, or from the start when there is none or
// Graph no longer knows it (full: the round lists every message). The
// envelopes are saved as the pages come, so the round in memory holds
// only the entries.
func (f *Folder) read(ctx context.Context, c *graph.Client, link string) (round []change, next string, full bool, err error) {
	page := func(msgs []graph.Message) error {
		envs := map[string]Envelope{}
		for _, m := range msgs {
			if m.Removed != nil {
				round = append(round, change{e: Entry{ID: m.ID}, removed: true})
				continue
			}
			e, env := FromGraph(m)
			round = append(round, change{e: e})
			envs[m.ID] = env
		}
		return f.mb.update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(folderBucket(f.ID))
			if b == nil {
				return nil // forgotten meanwhile
			}
			// In key order: bbolt inserts into a node without splitting it
			// before the commit, so keys out of order cost a memmove each.
			for _, id := range slices.Sorted(maps.Keys(envs)) {
				if err := putJSON(b, envKey(id), envs[id]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	next, err = c.Delta(ctx, f.ID, link, page)
	if errors.Is(err, graph.ErrDeltaExpired) && link != "" {
		round, link = nil, ""
		next, err = c.Delta(ctx, f.ID, "", page)
	}
	return round, next, link == "", err
}

// apply takes a round in: removals, changes, and new messages, which get
// UIDs in the order they arrived. After a full round, what it did not
// list is gone.
func (f *Folder) apply(round []change, full bool, link string) error {
	seen := map[string]bool{}
	added := map[string]Entry{}
	changed := map[uint32]Entry{}
	removed := map[uint32]bool{}
	for _, ch := range round {
		id := ch.e.ID
		seen[id] = !ch.removed
		if f.touched[id] {
			continue
		}
		uid, known := f.byID[id]
		switch {
		case ch.removed && known:
			removed[uid] = true
			delete(changed, uid)
		case ch.removed:
			delete(added, id)
		case known:
			delete(removed, uid)
			changed[uid] = ch.e
		default:
			added[id] = ch.e
		}
	}
	if full {
		for _, e := range f.list {
			if !seen[e.ID] && !f.touched[e.ID] {
				removed[e.UID] = true
			}
		}
	}
	news := make([]Entry, 0, len(added))
	for _, e := range added {
		news = append(news, e)
	}
	slices.SortFunc(news, func(a, b Entry) int {
		if c := a.Received.Compare(b.Received); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	list := make([]Entry, 0, len(f.list)+len(news))
	var dropped []Entry
	for _, e := range f.list {
		if removed[e.UID] {
			dropped = append(dropped, e)
			continue
		}
		if n, ok := changed[e.UID]; ok {
			e = merge(e, n)
		}
		list = append(list, e)
	}
	next := f.next
	for i := range news {
		news[i].UID = next
		next++
	}
	list = append(list, news...)
	err := f.mb.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(folderBucket(f.ID))
		if b == nil {
			return nil
		}
		for _, e := range dropped {
			if err := delEntry(b, e); err != nil {
				return err
			}
		}
		for _, uid := range slices.Sorted(maps.Keys(changed)) {
			e, _, _ := Snapshot{List: list}.Find(uid)
			if err := putJSON(b, uidKey(uid), e); err != nil {
				return err
			}
		}
		// In key order ("i" keys before "u" keys, each sorted; see read):
		// a round's new messages are all of a folder the first time.
		byID := slices.Clone(news)
		slices.SortFunc(byID, func(a, b Entry) int { return strings.Compare(a.ID, b.ID) })
		for _, e := range byID {
			if err := b.Put(idKey(e.ID), be32(e.UID)); err != nil {
				return err
			}
		}
		for _, e := range news {
			if err := putJSON(b, uidKey(e.UID), e); err != nil {
				return err
			}
		}
		return saveMeta(tx, f.ID, folderMeta{Validity: f.validity, Next: next, Link: link})
	})
	if err != nil {
		return err
	}
	for _, e := range dropped {
		delete(f.byID, e.ID)
	}
	for _, e := range news {
		f.byID[e.ID] = e.UID
	}
	f.list, f.next, f.link = list, next, link
	return nil
}

// merge takes Graph's view of a known message, keeping what only the
// mirror knows: its UID, \Deleted, and the exact size once measured.
func merge(old, n Entry) Entry {
	n.UID = old.UID
	n.Flags = n.Flags&^Deleted | old.Flags&Deleted
	if old.Exact {
		n.Size, n.Exact = old.Size, true
	}
	return n
}

func putEntry(b *bbolt.Bucket, e Entry) error {
	if err := putJSON(b, uidKey(e.UID), e); err != nil {
		return err
	}
	return b.Put(idKey(e.ID), be32(e.UID))
}

func delEntry(b *bbolt.Bucket, e Entry) error {
	for _, k := range [][]byte{uidKey(e.UID), idKey(e.ID), envKey(e.ID)} {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func saveMeta(tx *bbolt.Tx, id string, m folderMeta) error {
	return putJSON(tx.Bucket(bucketFolders), []byte(id), m)
}

// Envelope is a message's envelope, as last read from Graph.
func (f *Folder) Envelope(id string) (env Envelope, ok bool) {
	f.mb.view(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(folderBucket(f.ID)); b != nil {
			if v := b.Get(envKey(id)); v != nil {
				ok = json.Unmarshal(v, &env) == nil
			}
		}
		return nil
	})
	return env, ok
}

// Update changes the entries with uids through fn (flags this process
// set on Graph, \Deleted, an exact size) and saves them.
func (f *Folder) Update(uids []uint32, fn func(*Entry)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	list := slices.Clone(f.list)
	var changed []Entry
	for _, uid := range uids {
		_, i, ok := Snapshot{List: list}.Find(uid)
		if !ok {
			continue
		}
		e := list[i]
		fn(&e)
		list[i] = e
		changed = append(changed, e)
		f.touch(e.ID)
	}
	if len(changed) == 0 {
		return nil
	}
	err := f.mb.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(folderBucket(f.ID))
		if b == nil {
			return nil
		}
		for _, e := range changed {
			if err := putJSON(b, uidKey(e.UID), e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	f.list = list
	return nil
}

// Remove drops the messages with ids, which this process moved away or
// deleted.
func (f *Folder) Remove(ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	gone := map[uint32]bool{}
	for _, id := range ids {
		if uid, ok := f.byID[id]; ok {
			gone[uid] = true
		}
		f.touch(id)
	}
	if len(gone) == 0 {
		return nil
	}
	list := make([]Entry, 0, len(f.list))
	var dropped []Entry
	for _, e := range f.list {
		if gone[e.UID] {
			dropped = append(dropped, e)
		} else {
			list = append(list, e)
		}
	}
	err := f.mb.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(folderBucket(f.ID))
		if b == nil {
			return nil
		}
		for _, e := range dropped {
			if err := delEntry(b, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, e := range dropped {
		delete(f.byID, e.ID)
	}
	f.list = list
	return nil
}

// Add gives a message this process put in the folder (a copy, a move, an
// APPEND) its UID at once, so that COPYUID and APPENDUID can name it; the
// next round then knows it. A message the folder already has keeps its
// UID.
func (f *Folder) Add(e Entry, env Envelope) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.touch(e.ID)
	if uid, ok := f.byID[e.ID]; ok {
		return uid, nil
	}
	e.UID = f.next
	err := f.mb.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(folderBucket(f.ID))
		if b == nil {
			return errors.New("the folder is no longer mirrored")
		}
		if err := putEntry(b, e); err != nil {
			return err
		}
		if err := putJSON(b, envKey(e.ID), env); err != nil {
			return err
		}
		return saveMeta(tx, f.ID, folderMeta{Validity: f.validity, Next: f.next + 1, Link: f.link})
	})
	if err != nil {
		return 0, err
	}
	f.next++
	f.list = append(slices.Clip(f.list), e)
	f.byID[e.ID] = e.UID
	return e.UID, nil
}

func (f *Folder) touch(id string) {
	if f.touched != nil {
		f.touched[id] = true
	}
}
