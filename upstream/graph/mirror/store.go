// Package mirror keeps what an IMAP server over a Graph mailbox must
// remember between sessions, restarts and upgrades: each folder's
// UIDVALIDITY and an immutable id → UID map with UIDs that only grow, the
// properties IMAP answers without the MIME (flags, dates, sizes,
// envelopes), the delta link that continues the folder's change tracking,
// and a bounded cache of MIME bodies.
//
// The state of a mailbox is one bbolt file. Losing it costs a new
// UIDVALIDITY for every folder (clients resynchronise) and never a UID
// reused under an old one: UIDVALIDITY comes from the clock and only
// grows.
package mirror

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// schema is the layout version of the state file. A layout change comes
// with a migration from every earlier schema, never a silent reset.
const schema = "1"

// Buckets of the state file:
//
//	meta     schema; validity, the last UIDVALIDITY handed out
//	folders  folder id → folderMeta (JSON)
//	special  well-known name → folder id
//	unsub    folder id → "" for folders unsubscribed
//	f:ID     per folder: "u"+uid → entry, "i"+message id → uid,
//	         "e"+message id → envelope
var (
	bucketMeta    = []byte("meta")
	bucketFolders = []byte("folders")
	bucketSpecial = []byte("special")
	bucketUnsub   = []byte("unsub")
)

func folderBucket(id string) []byte { return []byte("f:" + id) }

type folderMeta struct {
	Validity uint32 `json:"validity"`
	Next     uint32 `json:"next"`
	Link     string `json:"link,omitempty"`
}

// openTimeout is how long opening waits for another process that holds
// the file (a mailproxy draining while its successor starts).
const openTimeout = 5 * time.Second

// ErrInUse: another process holds the state file.
var ErrInUse = errors.New("the state file is held by another mailproxy process")

func openDB(path string) (*bbolt.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: openTimeout})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("%s: %w", path, ErrInUse)
	}
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketFolders, bucketSpecial, bucketUnsub} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := string(meta.Get([]byte("schema"))); v {
		case "":
			return meta.Put([]byte("schema"), []byte(schema))
		case schema:
			return nil
		default:
			return fmt.Errorf("%s has state schema %s, newer than this mailproxy's %s: run the newer mailproxy, or move the file away (clients will resynchronise)", path, v, schema)
		}
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// newValidity hands out a UIDVALIDITY: the clock's seconds, or one more
// than the last handed out, whichever is larger. A state file made again
// after a loss starts later than the lost one did, so its values are new.
func newValidity(tx *bbolt.Tx) (uint32, error) {
	meta := tx.Bucket(bucketMeta)
	last := uint32(0)
	if b := meta.Get([]byte("validity")); len(b) == 4 {
		last = binary.BigEndian.Uint32(b)
	}
	v := max(uint32(time.Now().Unix()), last+1)
	return v, meta.Put([]byte("validity"), be32(v))
}

func be32(n uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

func uidKey(uid uint32) []byte { return append([]byte("u"), be32(uid)...) }
func idKey(id string) []byte   { return []byte("i" + id) }
func envKey(id string) []byte  { return []byte("e" + id) }

func putJSON(b *bbolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}
