package mirror

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Bodies is a cache of MIME bodies on disk, bounded in bytes: what IMAP
// clients read in pieces (headers, then text, then parts, or <n.m>
// partial fetches) is read from Graph once. The least recently used
// bodies go first; a body larger than the whole cache is read into an
// unlinked file and not kept. Nothing is held in memory but the index.
type Bodies struct {
	dir string
	max int64

	mu      sync.Mutex
	index   map[string]*list.Element // key → *cached, in lru
	lru     *list.List               // front: most recently used
	total   int64
	flights map[string]*flight
}

type cached struct {
	key  string
	size int64
}

type flight struct {
	done chan struct{}
	err  error
}

// OpenBodies is the cache in dir holding at most max bytes. Bodies left
// from an earlier run are kept, newest first, up to max.
func OpenBodies(dir string, max int64) (*Bodies, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b := &Bodies{dir: dir, max: max, index: map[string]*list.Element{}, lru: list.New(), flights: map[string]*flight{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type file struct {
		name string
		size int64
		mod  int64
	}
	var files []file
	for _, de := range ents {
		info, err := de.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(de.Name(), ".tmp-") {
			os.Remove(filepath.Join(dir, de.Name()))
			continue
		}
		files = append(files, file{de.Name(), info.Size(), info.ModTime().UnixNano()})
	}
	slices.SortFunc(files, func(a, c file) int { return int(c.mod - a.mod) })
	for _, f := range files {
		if b.total+f.size > max {
			os.Remove(filepath.Join(dir, f.name))
			continue
		}
		b.index[f.name] = b.lru.PushBack(&cached{key: f.name, size: f.size})
		b.total += f.size
	}
	return b, nil
}

func bodyKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}

// Open is the body of message id, read with fetch when the cache lacks
// it. The caller closes the file; its size is the body's octets.
func (b *Bodies) Open(ctx context.Context, id string, fetch func(context.Context) (io.ReadCloser, error)) (*os.File, int64, error) {
	key := bodyKey(id)
	for {
		b.mu.Lock()
		if el := b.index[key]; el != nil {
			b.lru.MoveToFront(el)
			b.mu.Unlock()
			f, err := os.Open(filepath.Join(b.dir, key))
			if err == nil {
				info, err := f.Stat()
				if err == nil {
					return f, info.Size(), nil
				}
				f.Close()
			}
			b.drop(key) // removed under us: read it again
			continue
		}
		if fl := b.flights[key]; fl != nil {
			b.mu.Unlock()
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
			if fl.err != nil {
				return nil, 0, fl.err
			}
			continue
		}
		fl := &flight{done: make(chan struct{})}
		b.flights[key] = fl
		b.mu.Unlock()
		f, size, err := b.read(ctx, key, fetch)
		b.mu.Lock()
		delete(b.flights, key)
		fl.err = err
		close(fl.done)
		b.mu.Unlock()
		return f, size, err
	}
}

// read fetches a body into the cache (or, when it is larger than the
// cache, into an unlinked file).
func (b *Bodies) read(ctx context.Context, key string, fetch func(context.Context) (io.ReadCloser, error)) (*os.File, int64, error) {
	rc, err := fetch(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(b.dir, ".tmp-*")
	if err != nil {
		return nil, 0, err
	}
	size, err := io.Copy(tmp, rc)
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, 0, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, 0, err
	}
	if size > b.max {
		os.Remove(tmp.Name()) // the open file stays readable
		return tmp, size, nil
	}
	if err := os.Rename(tmp.Name(), filepath.Join(b.dir, key)); err != nil {
		os.Remove(tmp.Name())
		return tmp, size, nil
	}
	b.mu.Lock()
	b.index[key] = b.lru.PushFront(&cached{key: key, size: size})
	b.total += size
	for b.total > b.max {
		el := b.lru.Back()
		c := el.Value.(*cached)
		b.lru.Remove(el)
		delete(b.index, c.key)
		b.total -= c.size
		os.Remove(filepath.Join(b.dir, c.key)) // open files stay readable
	}
	b.mu.Unlock()
	return tmp, size, nil
}

func (b *Bodies) drop(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := b.index[key]; el != nil {
		b.total -= el.Value.(*cached).size
		b.lru.Remove(el)
		delete(b.index, key)
	}
}

// Forget drops a body (a message that is gone).
func (b *Bodies) Forget(id string) {
	key := bodyKey(id)
	b.drop(key)
	os.Remove(filepath.Join(b.dir, key))
}

// Size is the bytes the cache holds.
func (b *Bodies) Size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
