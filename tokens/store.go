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
	"strings"
	"sync"
	"time"
)

// Entry is what the store keeps for one account.
type Entry struct {
	RefreshToken string    `json:"refresh_token"`
	Updated      time.Time `json:"updated"`
}

// Store keeps refresh tokens in one file sealed with AES-256-GCM under a
// key the operator supplies. The file is decrypted once, when opened; every
// change rewrites it atomically with mode 0600.
type Store struct {
	path string
	aead cipher.AEAD

	mu      sync.Mutex
	entries map[string]Entry
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
	s := &Store{path: path, aead: aead, entries: map[string]Entry{}}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	ns := aead.NonceSize()
	if !bytes.HasPrefix(data, storeMagic) || len(data) < len(storeMagic)+ns+aead.Overhead() {
		return nil, fmt.Errorf("token store %s: not a mailproxy token store or truncated; move it away to start a new one", path)
	}
	body := data[len(storeMagic):]
	plain, err := aead.Open(nil, body[:ns], body[ns:], storeMagic)
	if err != nil {
		return nil, fmt.Errorf("token store %s: cannot decrypt: wrong key or damaged file (the file was left as it is)", path)
	}
	if err := json.Unmarshal(plain, &s.entries); err != nil {
		return nil, fmt.Errorf("token store %s: %w", path, err)
	}
	return s, nil
}

// Get returns the entry for account.
func (s *Store) Get(account string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[account]
	return e, ok
}

// Put saves e for account and writes the file before returning.
func (s *Store) Put(account string, e Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.entries[account]
	s.entries[account] = e
	if err := s.write(); err != nil {
		if had {
			s.entries[account] = old
		} else {
			delete(s.entries, account)
		}
		return err
	}
	return nil
}

func (s *Store) write() error {
	plain, err := json.Marshal(s.entries)
	if err != nil {
		return err
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	out := append(append(bytes.Clone(storeMagic), nonce...), s.aead.Seal(nil, nonce, plain, storeMagic)...)
	dir := filepath.Dir(s.path)
	f, err := os.CreateTemp(dir, ".tokens-*")
	if err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("token store: %w", err)
	}
	if _, err := f.Write(out); err != nil {
		f.Close()
		return fmt.Errorf("token store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("token store: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	if err := os.Rename(f.Name(), s.path); err != nil {
		return fmt.Errorf("token store: %w", err)
	}
	return nil
}
