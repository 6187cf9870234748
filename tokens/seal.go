package tokens

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
)

// The sealed form of a Data, the same in every store: storeMagic, a random
// GCM nonce, then the JSON of the Data sealed with storeMagic as the
// additional data. A store keeps only these bytes, never clear text.

var (
	// errNotSealed: the bytes are not a sealed Data (or are truncated).
	errNotSealed = errors.New("not a mailproxy token store, or truncated")
	// errCannotOpen: the bytes do not open under the key (a wrong key, or damage).
	errCannotOpen = errors.New("cannot decrypt: wrong key or damaged")
)

// sealData returns d sealed under aead.
func sealData(aead cipher.AEAD, d *Data) ([]byte, error) {
	plain, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return append(append(bytes.Clone(storeMagic), nonce...), aead.Seal(nil, nonce, plain, storeMagic)...), nil
}

// openData opens what sealData sealed. Its errors are errNotSealed,
// errCannotOpen or the JSON decoder's; each store words them for its
// medium.
func openData(aead cipher.AEAD, sealed []byte) (*Data, error) {
	ns := aead.NonceSize()
	if !bytes.HasPrefix(sealed, storeMagic) || len(sealed) < len(storeMagic)+ns+aead.Overhead() {
		return nil, errNotSealed
	}
	body := sealed[len(storeMagic):]
	plain, err := aead.Open(nil, body[:ns], body[ns:], storeMagic)
	if err != nil {
		return nil, errCannotOpen
	}
	var d Data
	if err := json.Unmarshal(plain, &d); err != nil {
		return nil, err
	}
	if d.Accounts == nil {
		d.Accounts = map[string]Entry{}
	}
	return &d, nil
}
