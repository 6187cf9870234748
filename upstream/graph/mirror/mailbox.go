package mirror

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"mailproxy/upstream/graph"
)

// Mailbox is the mirror of one Graph mailbox: its state file (opened at
// the first use, held until Close), the folders in use, the folder tree,
// and the cache of bodies.
type Mailbox struct {
	path      string
	bodiesDir string
	cacheMax  int64
	// Bodies is the cache of bodies, there once Open has been called.
	Bodies *Bodies

	mu      sync.Mutex
	db      *bbolt.DB
	folders map[string]*Folder

	treeMu sync.Mutex // one walk at a time
	tree   []TreeFolder
	treeAt time.Time
}

// New is the mirror kept in the state file at path, with a cache of at
// most cacheMax bytes of bodies in bodiesDir. Nothing is opened or made
// before the first use.
func New(path, bodiesDir string, cacheMax int64) *Mailbox {
	return &Mailbox{path: path, bodiesDir: bodiesDir, cacheMax: cacheMax, folders: map[string]*Folder{}}
}

// Open opens the state file and the cache if they are not open yet.
func (m *Mailbox) Open() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db != nil {
		return nil
	}
	if m.Bodies == nil {
		b, err := OpenBodies(m.bodiesDir, m.cacheMax)
		if err != nil {
			return err
		}
		m.Bodies = b
	}
	db, err := openDB(m.path)
	if err != nil {
		return err
	}
	m.db = db
	return nil
}

// Close closes the state file; the mirror opens it again when used.
func (m *Mailbox) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.db == nil {
		return nil
	}
	err := m.db.Close()
	m.db, m.folders = nil, map[string]*Folder{}
	return err
}

// ErrClosed: the mirror's file was closed (the process is stopping).
var ErrClosed = errors.New("the graph state file is closed")

// update and view run a transaction on the state file, if it is open.
func (m *Mailbox) update(fn func(*bbolt.Tx) error) error {
	m.mu.Lock()
	db := m.db
	m.mu.Unlock()
	if db == nil {
		return ErrClosed
	}
	return db.Update(fn)
}

func (m *Mailbox) view(fn func(*bbolt.Tx) error) error {
	m.mu.Lock()
	db := m.db
	m.mu.Unlock()
	if db == nil {
		return ErrClosed
	}
	return db.View(fn)
}

// Folder is the mirror of the folder with id, loaded at its first use.
func (m *Mailbox) Folder(id string) (*Folder, error) {
	if err := m.Open(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.folders[id]; f != nil {
		return f, nil
	}
	f, err := loadFolder(m.db, m, id)
	if err != nil {
		return nil, err
	}
	m.folders[id] = f
	return f, nil
}

// Forget drops a folder that is gone (deleted): its UIDs are never used
// again, as its id is not.
func (m *Mailbox) Forget(id string) error {
	if err := m.Open(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.folders, id)
	return m.db.Update(func(tx *bbolt.Tx) error {
		tx.Bucket(bucketFolders).Delete([]byte(id))
		tx.Bucket(bucketUnsub).Delete([]byte(id))
		if err := tx.DeleteBucket(folderBucket(id)); err != nil && !errors.Is(err, bbolt.ErrBucketNotFound) {
			return err
		}
		return nil
	})
}

// Subscribed reports whether a folder is subscribed: all are, until
// unsubscribed.
func (m *Mailbox) Subscribed(id string) bool {
	if m.Open() != nil {
		return true
	}
	sub := true
	m.db.View(func(tx *bbolt.Tx) error {
		sub = tx.Bucket(bucketUnsub).Get([]byte(id)) == nil
		return nil
	})
	return sub
}

// SetSubscribed records a SUBSCRIBE or UNSUBSCRIBE.
func (m *Mailbox) SetSubscribed(id string, sub bool) error {
	if err := m.Open(); err != nil {
		return err
	}
	return m.db.Update(func(tx *bbolt.Tx) error {
		if sub {
			return tx.Bucket(bucketUnsub).Delete([]byte(id))
		}
		return tx.Bucket(bucketUnsub).Put([]byte(id), nil)
	})
}

// Delimiter separates the levels of folder names.
const Delimiter = "/"

// TreeFolder is a folder of the mailbox's tree.
type TreeFolder struct {
	ID, ParentID string
	// Name is the IMAP name: display names from the top joined by
	// Delimiter (a Delimiter in a display name shows as "∕"), INBOX for
	// the inbox.
	Name string
	// Special is the RFC 6154 attribute of a well-known folder, or "".
	Special  string
	Children int
	Total    int
	Unread   int
}

// specialUse maps Graph's well-known folders to RFC 6154 attributes.
// v1.0 has no wellKnownName property (GRAPH.md 3.2): each id is read once
// by its well-known name and kept.
var specialUse = []struct{ name, attr string }{
	{"inbox", ""},
	{"sentitems", `\Sent`},
	{"drafts", `\Drafts`},
	{"deleteditems", `\Trash`},
	{"junkemail", `\Junk`},
	{"archive", `\Archive`},
}

// Special is the id of a well-known folder ("inbox", "sentitems", …), as
// last resolved.
func (m *Mailbox) Special(ctx context.Context, c *graph.Client, name string) (string, error) {
	ids, err := m.specials(ctx, c)
	return ids[name], err
}

// specials resolves the well-known folders, each once in the state
// file's life (folder ids never change, GRAPH.md 3.3). One the mailbox
// lacks (an Archive not made yet) is asked for again next time.
func (m *Mailbox) specials(ctx context.Context, c *graph.Client) (map[string]string, error) {
	if err := m.Open(); err != nil {
		return nil, err
	}
	ids := map[string]string{}
	m.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSpecial).ForEach(func(k, v []byte) error {
			ids[string(k)] = string(v)
			return nil
		})
	})
	for _, s := range specialUse {
		if ids[s.name] != "" {
			continue
		}
		f, err := c.Folder(ctx, s.name)
		if ge, ok := errors.AsType[*graph.Error](err); ok && ge.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			return ids, err
		}
		ids[s.name] = f.ID
		if err := m.db.Update(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketSpecial).Put([]byte(s.name), []byte(f.ID))
		}); err != nil {
			return ids, err
		}
	}
	return ids, nil
}

// Tree is the folder tree, walked again when older than fresh (0: always).
func (m *Mailbox) Tree(ctx context.Context, c *graph.Client, fresh time.Duration) ([]TreeFolder, error) {
	m.treeMu.Lock()
	defer m.treeMu.Unlock()
	if m.tree != nil && fresh > 0 && time.Since(m.treeAt) < fresh {
		return m.tree, nil
	}
	ids, err := m.specials(ctx, c)
	if err != nil {
		return nil, err
	}
	tree, err := walk(ctx, c, ids)
	if err != nil {
		return nil, err
	}
	m.tree, m.treeAt = tree, time.Now()
	return tree, nil
}

// WalkTree is the folder tree read from Graph alone, without a state
// file (mailproxy check, while serve holds the file).
func WalkTree(ctx context.Context, c *graph.Client) ([]TreeFolder, error) {
	ids := map[string]string{}
	for _, s := range specialUse {
		f, err := c.Folder(ctx, s.name)
		if ge, ok := errors.AsType[*graph.Error](err); ok && ge.Status == http.StatusNotFound {
			continue
		}
		if err != nil {
			return nil, err
		}
		ids[s.name] = f.ID
	}
	return walk(ctx, c, ids)
}

// walk reads the tree level by level from the root's children; ids are
// the well-known folders' ids.
func walk(ctx context.Context, c *graph.Client, ids map[string]string) ([]TreeFolder, error) {
	attr := map[string]string{}
	for _, s := range specialUse {
		if id := ids[s.name]; id != "" {
			attr[id] = s.attr
		}
	}
	var tree []TreeFolder
	level, err := c.ChildFolders(ctx, "")
	if err != nil {
		return nil, err
	}
	names := map[string]string{} // id → IMAP name
	for len(level) > 0 {
		var parents []graph.Folder
		for _, f := range level {
			name := strings.ReplaceAll(f.DisplayName, Delimiter, "∕")
			switch {
			case f.ID == ids["inbox"]:
				name = "INBOX"
			case names[f.ParentID] != "":
				name = names[f.ParentID] + Delimiter + name
			}
			names[f.ID] = name
			tree = append(tree, TreeFolder{ID: f.ID, ParentID: f.ParentID, Name: name, Special: attr[f.ID],
				Children: f.Children, Total: f.Total, Unread: f.Unread})
			if f.Children > 0 {
				parents = append(parents, f)
			}
		}
		kids := make([][]graph.Folder, len(parents))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(2) // a walk leaves room for the sessions' requests
		for i, p := range parents {
			g.Go(func() error {
				fs, err := c.ChildFolders(gctx, p.ID)
				kids[i] = fs
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
		level = nil
		for _, fs := range kids {
			level = append(level, fs...)
		}
	}
	return tree, nil
}

// Changed says the tree changed (a folder was made, renamed, moved or
// deleted): the next Tree walks it again.
func (m *Mailbox) Changed() {
	m.treeMu.Lock()
	defer m.treeMu.Unlock()
	m.tree = nil
}
