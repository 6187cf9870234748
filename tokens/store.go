package tokens

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Entry is what the store keeps for one account: its refresh token (for
// Microsoft public apps, MSAL's cache holds it instead) and what an operator
// may see about it.
type Entry struct {
	RefreshToken string `json:"refresh_token,omitempty"`
	// Provider names where the account signs in (a token URL or an authority).
	Provider string   `json:"provider,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// Added is when a person last signed in.
	Added time.Time `json:"added"`
	// Updated is the last successful refresh; Expiry that token's expiry.
	Updated   time.Time `json:"updated"`
	Expiry    time.Time `json:"expiry"`
	LastError string    `json:"last_error,omitempty"`
}

// storeFile is the decrypted content of the file.
type storeFile struct {
	Accounts map[string]Entry `json:"accounts"`
	// Caches are MSAL token caches (their own JSON), by client.
	Caches map[string][]byte `json:"caches,omitempty"`
}

// Store keeps refresh tokens in one file sealed with AES-256-GCM under a key
// the operator supplies. The file is decrypted when opened and again only
// when another process (mailproxy token add) has changed it. Every change
// is a read-modify-write under a lock file, written atomically with mode 0600.
type Store struct {
	path string
	aead cipher.AEAD

	mu   sync.Mutex
	data storeFile
	seen fileStamp // of the file as last read or written
	gen  uint64    // counts changes of data

	accounts sync.Map // account key -> *sync.Mutex, see lockAccount
}

// lockAccount serialises the redemptions of one account's refresh token
// in this process, and returns the unlock.
func (s *Store) lockAccount(key string) func() {
	m, _ := s.accounts.LoadOrStore(key, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

type fileStamp struct {
	mod  time.Time
	size int64
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

// OpenStore opens (or, if the file does not exist, starts) the store at path.
// A wrong key or a damaged file is an error; the file is never overwritten then.
func OpenStore(path string, key []byte) (*Store, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	aead, _ := cipher.NewGCM(block)
	s := &Store{path: path, aead: aead, data: storeFile{Accounts: map[string]Entry{}}}
	if err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// reload reads the file again if it changed since it was last read or
// written. The caller holds s.mu (or owns s).
func (s *Store) reload() error {
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	stamp := fileStamp{fi.ModTime(), fi.Size()}
	if stamp == s.seen {
		return nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	ns := s.aead.NonceSize()
	if !bytes.HasPrefix(data, storeMagic) || len(data) < len(storeMagic)+ns+s.aead.Overhead() {
		return fmt.Errorf("token store %s: not a mailproxy token store, or truncated; move it away and sign in again (mailproxy token add)", s.path)
	}
	body := data[len(storeMagic):]
	plain, err := s.aead.Open(nil, body[:ns], body[ns:], storeMagic)
	if err != nil {
		return fmt.Errorf("token store %s: cannot decrypt: wrong key or damaged file (the file was left as it is; check token_store.key)", s.path)
	}
	var f storeFile
	if err := json.Unmarshal(plain, &f); err != nil {
		return fmt.Errorf("token store %s: %w", s.path, err)
	}
	if f.Accounts == nil {
		f.Accounts = map[string]Entry{}
	}
	s.data, s.seen = f, stamp
	s.gen++
	return nil
}

// Generation changes whenever the store's content does, in this process
// or, as seen on disk, another (a stat, no decryption unless changed).
func (s *Store) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.reload()
	return s.gen
}

// Get returns the entry for account, as on disk now.
func (s *Store) Get(account string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.reload() // keep the copy in memory if the file became unreadable
	e, ok := s.data.Accounts[account]
	return e, ok
}

// Accounts lists the account keys with their entries, sorted.
func (s *Store) Accounts() ([]string, map[string]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.reload(); err != nil {
		return nil, nil, err
	}
	out := make(map[string]Entry, len(s.data.Accounts))
	keys := make([]string, 0, len(s.data.Accounts))
	for k, e := range s.data.Accounts {
		out[k] = e
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, out, nil
}

// Put saves e for account and writes the file before returning.
func (s *Store) Put(account string, e Entry) error {
	return s.Update(account, func(old *Entry) { *old = e })
}

// Update changes the entry for account (a zero Entry if there is none) and
// writes the file before returning. Changes made meanwhile by another
// process to other entries are kept.
func (s *Store) Update(account string, change func(*Entry)) error {
	return s.modify(func(f *storeFile) {
		e := f.Accounts[account]
		change(&e)
		f.Accounts[account] = e
	})
}

// Remove deletes account; it reports whether it was there.
func (s *Store) Remove(account string) (bool, error) {
	had := false
	err := s.modify(func(f *storeFile) {
		_, had = f.Accounts[account]
		delete(f.Accounts, account)
	})
	return had && err == nil, err
}

// Cache returns the MSAL cache saved under name.
func (s *Store) Cache(name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.reload()
	return s.data.Caches[name]
}

// PutCache saves an MSAL cache under name.
func (s *Store) PutCache(name string, data []byte) error {
	_, err := s.UpdateCache(name, func([]byte) ([]byte, error) { return data, nil })
	return err
}

// UpdateCache replaces the MSAL cache under name with what change makes of
// the one in the file now, under the lock; it returns what was written.
func (s *Store) UpdateCache(name string, change func(current []byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	var cerr error
	err := s.modify(func(f *storeFile) {
		if out, cerr = change(f.Caches[name]); cerr != nil {
			return
		}
		if f.Caches == nil {
			f.Caches = map[string][]byte{}
		}
		f.Caches[name] = bytes.Clone(out)
	})
	if cerr != nil {
		return nil, cerr
	}
	return out, err
}

// modify applies change to the file's current content under the lock file
// and writes it. On failure the memory copy is left as the file is.
func (s *Store) modify(change func(*storeFile)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockFile(s.path + ".lock")
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	defer unlock()
	if err := s.reload(); err != nil {
		return err
	}
	next := clone(s.data)
	change(&next)
	if err := s.write(next); err != nil {
		return err
	}
	s.data = next
	s.gen++
	return nil
}

func clone(f storeFile) storeFile {
	out := storeFile{Accounts: make(map[string]Entry, len(f.Accounts))}
	for k, e := range f.Accounts {
		out.Accounts[k] = e
	}
	if f.Caches != nil {
		out.Caches = make(map[string][]byte, len(f.Caches))
		for k, v := range f.Caches {
			out.Caches[k] = v
		}
	}
	return out
}

func (s *Store) write(data storeFile) error {
	plain, err := json.Marshal(data)
	if err != nil {
		return err
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out := append(append(bytes.Clone(storeMagic), nonce...), s.aead.Seal(nil, nonce, plain, storeMagic)...)
	f, err := os.CreateTemp(filepath.Dir(s.path), ".tokens-*")
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	defer os.Remove(f.Name())
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(out)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	if fi, err := os.Stat(s.path); err == nil {
		s.seen = fileStamp{fi.ModTime(), fi.Size()}
	}
	return nil
}
