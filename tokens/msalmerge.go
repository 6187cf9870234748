package tokens

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// mergeMSAL merges two changes of one MSAL cache: base is what this process
// read, ours what it has now, theirs what another process wrote meanwhile.
// MSAL's cache is the cross-SDK JSON "contract": sections (AccessToken,
// RefreshToken, IdToken, Account, AppMetadata) of entries by key. What ours
// changed from base (an entry added, replaced or removed) is applied to
// theirs; everything else of theirs is kept. So a `token add` and a `serve`
// writing the same app's cache at once keep both the new account and the
// rotated refresh token.
func mergeMSAL(base, ours, theirs []byte) ([]byte, error) {
	var b, o, t map[string]json.RawMessage
	for _, x := range []struct {
		data []byte
		into *map[string]json.RawMessage
	}{{base, &b}, {ours, &o}, {theirs, &t}} {
		*x.into = map[string]json.RawMessage{}
		if len(bytes.TrimSpace(x.data)) == 0 {
			continue
		}
		if err := json.Unmarshal(x.data, x.into); err != nil {
			return nil, fmt.Errorf("MSAL cache: %w", err)
		}
	}
	for name := range union(b, o) {
		bs, bok := sectionOf(b[name])
		os, ook := sectionOf(o[name])
		ts, tok := sectionOf(t[name])
		if !bok || !ook || !tok { // not a section of entries: ours wins if it changed it
			if !same(b[name], o[name]) {
				setOrDelete(t, name, o[name])
			}
			continue
		}
		for key := range union(bs, os) {
			if !same(bs[key], os[key]) {
				setOrDelete(ts, key, os[key])
			}
		}
		merged, err := json.Marshal(ts)
		if err != nil {
			return nil, err
		}
		t[name] = merged
	}
	return json.Marshal(t)
}

// sectionOf reads a section: an object whose values are objects. A missing
// section is an empty one.
func sectionOf(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	s := map[string]json.RawMessage{}
	if raw == nil {
		return s, true
	}
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	for _, v := range s {
		if t := bytes.TrimSpace(v); len(t) == 0 || t[0] != '{' {
			return nil, false
		}
	}
	return s, true
}

func union(a, b map[string]json.RawMessage) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

func setOrDelete(m map[string]json.RawMessage, k string, v json.RawMessage) {
	if v == nil {
		delete(m, k)
	} else {
		m[k] = v
	}
}

// same compares two JSON values, ignoring key order and spacing.
func same(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return bytes.Equal(canonical(a), canonical(b))
}

func canonical(raw json.RawMessage) []byte {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return raw
	}
	out, _ := json.Marshal(v) // maps marshal with sorted keys
	return out
}

// withoutAccessTokens removes the AccessToken entries whose secret is in
// rejected from an MSAL cache, so MSAL redeems its refresh token instead of
// handing one of them out. A cache it cannot read is returned as is.
func withoutAccessTokens(data []byte, rejected map[string]bool) []byte {
	if len(rejected) == 0 || len(data) == 0 {
		return data
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(data, &c) != nil {
		return data
	}
	var ats map[string]struct {
		Secret string `json:"secret"`
	}
	if json.Unmarshal(c["AccessToken"], &ats) != nil {
		return data
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(c["AccessToken"], &raw)
	dropped := false
	for k, at := range ats {
		if rejected[at.Secret] {
			delete(raw, k)
			dropped = true
		}
	}
	if !dropped {
		return data
	}
	c["AccessToken"], _ = json.Marshal(raw)
	out, err := json.Marshal(c)
	if err != nil {
		return data
	}
	return out
}
