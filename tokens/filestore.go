package tokens

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// FileStore is a Store in one file sealed with AES-256-GCM under a key the
// operator supplies, written atomically (temporary file, fsync, rename)
// with mode 0600. A lock file beside it (flock) keeps the processes that
// share it (serve, token add, check) from redeeming or writing at once.
type FileStore struct {
	path string
	aead cipher.AEAD

	mu     sync.Mutex
	seen   fileStamp // of the file as last read or written
	loaded bool      // seen is valid
}

var _ Store = (*FileStore)(nil)

type fileStamp struct {
	exists bool
	mod    time.Time
	size   int64
	ino    uint64
}

// storeMagic starts every store file; it is also the GCM additional data.
var storeMagic = []byte("mailproxy-tokens-v1\n")

// KeySize is the store key's length in bytes (AES-256).
const KeySize = 32

// NewKey returns a random store key, base64 encoded.
func NewKey() string {
	k := make([]byte, KeySize)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

// ParseKey decodes a base64 store key.
func ParseKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != KeySize {
		return nil, errors.New("token store key must be 32 bytes, base64 encoded (mailproxy key generate)")
	}
	return k, nil
}

// NewFileStore returns the store at path sealed with key. It reads nothing
// yet: a missing file is an empty store.
func NewFileStore(path string, key []byte) (*FileStore, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	aead, _ := cipher.NewGCM(block)
	return &FileStore{path: path, aead: aead}, nil
}

func (f *FileStore) String() string { return f.path }

// lockPoll is how often a waiting Lock tries again.
const lockPoll = 20 * time.Millisecond

// Lock implements Store.
func (f *FileStore) Lock(ctx context.Context) (func(), error) {
	for {
		unlock, err := tryLockFile(f.path + ".lock")
		if err == nil {
			return unlock, nil
		}
		if !errors.Is(err, errLocked) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(lockPoll):
		}
	}
}

func (f *FileStore) stamp() (fileStamp, error) {
	fi, err := os.Stat(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileStamp{}, nil
	}
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{exists: true, mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}, nil
}

// Load implements Store: a stat, and a decryption only when the file changed.
func (f *FileStore) Load(context.Context) (*Data, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, err := f.stamp()
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	if f.loaded && stamp == f.seen {
		return nil, nil
	}
	if !stamp.exists {
		f.seen, f.loaded = stamp, true
		return &Data{Accounts: map[string]Entry{}}, nil
	}
	data, err := os.ReadFile(f.path)
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	d, err := f.open(data)
	if err != nil {
		return nil, err
	}
	f.seen, f.loaded = stamp, true
	return d, nil
}

func (f *FileStore) open(data []byte) (*Data, error) {
	d, err := openData(f.aead, data)
	switch {
	case errors.Is(err, errNotSealed):
		return nil, fmt.Errorf("token store %s: not a mailproxy token store, or truncated; move it away and sign in again (mailproxy token add)", f.path)
	case errors.Is(err, errCannotOpen):
		return nil, fmt.Errorf("token store %s: cannot decrypt: wrong key or damaged file (the file was left as it is; check token_store.key)", f.path)
	case err != nil:
		return nil, fmt.Errorf("token store %s: %w", f.path, err)
	}
	return d, nil
}

// Save implements Store.
func (f *FileStore) Save(_ context.Context, d *Data) error {
	out, err := sealData(f.aead, d)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(f.path, out); err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, err := f.stamp()
	f.seen, f.loaded = stamp, err == nil
	return nil
}

// writeFileAtomic replaces path with data, mode 0600: a reader sees the
// old file or the new one, and after a crash the new one is there whole or
// not at all.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tokens-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = privateFile(tmp) // mode 0600; on Windows a DACL (acl_windows.go)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return err
	}
	// The rename itself is durable once the directory is.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
