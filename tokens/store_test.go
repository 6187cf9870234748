package tokens

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"mailproxy/idp"
)

func newStore(t *testing.T, path string, key []byte) *Vault {
	t.Helper()
	st, err := OpenStore(path, key)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	st := newStore(t, path, key)
	when := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	want := Entry{RefreshToken: "rt-secret-1", Provider: "https://idp/token", Scopes: []string{"a", "b"}, Added: when, Updated: when, Expiry: when.Add(time.Hour), LastError: "x"}
	if err := st.Put(bg, "client/a@x", want); err != nil {
		t.Fatal(err)
	}
	if err := putCache(t, st, "msal:app", []byte(`{"RefreshToken":{"k":{"secret":"rt-msal-secret"}}}`)); err != nil {
		t.Fatal(err)
	}
	again := newStore(t, path, key)
	got, ok := again.Get(bg, "client/a@x")
	if !ok || got.RefreshToken != want.RefreshToken || !got.Expiry.Equal(want.Expiry) || strings.Join(got.Scopes, " ") != "a b" || got.LastError != "x" {
		t.Fatalf("after reopening: %+v, %v", got, ok)
	}
	if !bytes.Contains(again.Cache(bg, "msal:app"), []byte("rt-msal-secret")) {
		t.Fatal("MSAL cache lost")
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("rt-secret-1")) || bytes.Contains(raw, []byte("rt-msal-secret")) || bytes.Contains(raw, []byte("a@x")) {
		t.Fatal("the store file holds tokens or account names in clear text")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if gone, err := again.Remove(bg, "client/a@x"); !gone || err != nil {
		t.Fatalf("remove: %v %v", gone, err)
	}
	if _, ok := newStore(t, path, key).Get(bg, "client/a@x"); ok {
		t.Fatal("removed account is back after reopening")
	}
}

func TestStoreWrongKeyAndTruncationLeaveTheFileAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	if err := newStore(t, path, key).Put(bg, "a", Entry{RefreshToken: "secret-rt"}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	other, _ := ParseKey(NewKey())
	if _, err := OpenStore(path, other); err == nil || !strings.Contains(err.Error(), "wrong key") || !strings.Contains(err.Error(), "token_store.key") {
		t.Fatalf("wrong key: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("opening with a wrong key changed the file")
	}
	os.WriteFile(path, before[:len(before)-5], 0o600)
	if _, err := OpenStore(path, key); err == nil || !strings.Contains(err.Error(), "wrong key or damaged") {
		t.Fatalf("truncated store: %v", err)
	}
	os.WriteFile(path, before[:10], 0o600)
	if _, err := OpenStore(path, key); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("cut store: %v", err)
	}
	if _, err := ParseKey("c2hvcnQ="); err == nil {
		t.Fatal("short key accepted")
	}
}

// Two stores on one file stand for mailproxy serve and mailproxy token add:
// every write of each survives.
func TestStoreConcurrentWritersLoseNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	a, b := newStore(t, path, key), newStore(t, path, key)
	var wg sync.WaitGroup
	for i := range 40 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			if err := st.Put(bg, fmt.Sprintf("acct-%d", i), Entry{RefreshToken: fmt.Sprintf("rt-%d", i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	keys, entries, err := newStore(t, path, key).Accounts(bg)
	if err != nil || len(keys) != 40 {
		t.Fatalf("%d accounts after 40 concurrent writes from two stores (%v)", len(keys), err)
	}
	for i := range 40 {
		if entries[fmt.Sprintf("acct-%d", i)].RefreshToken != fmt.Sprintf("rt-%d", i) {
			t.Fatalf("acct-%d lost", i)
		}
	}
	// A store sees what the other wrote without being reopened.
	if e, ok := a.Get(bg, "acct-1"); !ok || e.RefreshToken != "rt-1" {
		t.Fatal("a store does not see the other's write")
	}
}

func TestRefreshRotationIsPersistedAcrossRestart(t *testing.T) {
	s, url, hc := fakeIdP(t)
	s.RotateRefresh = true
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	path := filepath.Join(t.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	prev, prevAT := "rt-0", ""
	for i := range 3 { // three "process starts"
		d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: url + "/token", ClientID: "pub", Account: "a@x", Initial: "rt-0", Store: newStore(t, path, key), HTTPClient: hc})
		if prevAT != "" {
			// The access token the last start stored is fresh: it is used,
			// with no token request, until the upstream refuses it.
			requests := s.TokenRequests()
			if tok, err := d.Fetch(bg); err != nil || tok.AccessToken != prevAT || s.TokenRequests() != requests {
				t.Fatalf("start %d: the stored access token was not used (%v, %d requests)", i, err, s.TokenRequests()-requests)
			}
			d.Reject(&oauth2.Token{AccessToken: prevAT})
		}
		tok, err := d.Fetch(context.Background())
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		if mb, ok := s.Validate(tok.AccessToken); !ok || mb != "a@x" {
			t.Fatalf("start %d: token not valid for a@x", i)
		}
		e, _ := newStore(t, path, key).Get(bg, d.Key("a@x"))
		if e.RefreshToken == "" || e.RefreshToken == prev || e.Updated.IsZero() || e.Expiry.IsZero() {
			t.Fatalf("start %d: rotated refresh token not stored: %+v", i, e.Updated)
		}
		prev, prevAT = e.RefreshToken, tok.AccessToken
	}
	// The spent token is refused by the fake, as by Microsoft with rotation.
	s.RevokeUser("a@x")
	d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: url + "/token", ClientID: "pub", Account: "a@x", Store: newStore(t, path, key), HTTPClient: hc})
	d.Reject(&oauth2.Token{AccessToken: prevAT}) // revoked too: the upstream refuses it
	_, err := NewCache("p", d, CacheOptions{Fix: "run mailproxy token add p"}).Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), "run mailproxy token add p") {
		t.Fatalf("revoked grant: %v", err)
	}
	if e, _ := newStore(t, path, key).Get(bg, d.Key("a@x")); !strings.Contains(e.LastError, "invalid_grant") {
		t.Fatalf("last error not recorded for token list: %q", e.LastError)
	}
}

// What a token refresh pays to read the store (a stat: the file is not
// decrypted again unless another process changed it), against opening it.
func BenchmarkStore(b *testing.B) {
	path := filepath.Join(b.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	st, _ := OpenStore(path, key)
	for i := range 50 {
		st.Put(bg, fmt.Sprintf("client/user%d@example.com", i), Entry{RefreshToken: strings.Repeat("r", 1500), Scopes: []string{"a", "b"}})
	}
	putCache(b, st, "msal", bytes.Repeat([]byte("x"), 20000))
	b.Run("Get", func(b *testing.B) {
		for b.Loop() {
			st.Get(bg, "client/user7@example.com")
		}
	})
	b.Run("Open", func(b *testing.B) {
		for b.Loop() {
			OpenStore(path, key)
		}
	})
}

// Two profiles of one account with other scopes have two token caches;
// their refreshes of the one rotating refresh token must not race.
func TestProfilesOfOneAccountShareItsRefreshToken(t *testing.T) {
	s, url, hc := fakeIdP(t)
	s.RotateRefresh = true
	s.AddClient(idp.Client{ID: "pub"})
	s.AddRefreshToken("rt-0", "a@x")
	key, _ := ParseKey(NewKey())
	st := newStore(t, filepath.Join(t.TempDir(), "tokens.enc"), key)
	var wg sync.WaitGroup
	for _, scope := range []string{"imap", "smtp"} {
		d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: url + "/token", ClientID: "pub", Account: "a@x", Initial: "rt-0",
			Scopes: []string{scope}, Store: st, HTTPClient: hc})
		wg.Go(func() {
			for range 20 {
				if _, err := d.Fetch(context.Background()); err != nil {
					t.Errorf("%s: %v", scope, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A grant that needs a person is not asked for again on every login: the
// failure is held for a while, unless someone signs in meanwhile.
func TestSignInFailureIsHeldUntilTheStoreChanges(t *testing.T) {
	key, _ := ParseKey(NewKey())
	st := newStore(t, filepath.Join(t.TempDir(), "tokens.enc"), key)
	var fetches atomic.Int64
	f := FetcherFunc(func(context.Context) (*oauth2.Token, error) {
		fetches.Add(1)
		if e, ok := st.Get(bg, "a"); ok && e.RefreshToken != "" {
			return &oauth2.Token{AccessToken: "t", Expiry: time.Now().Add(time.Hour)}, nil
		}
		return nil, &OAuthError{Code: "invalid_grant", Description: "revoked"}
	})
	now := time.Now()
	c := NewCache("p", f, CacheOptions{Generation: st.Generation, Now: func() time.Time { return now }})
	ctx := context.Background()
	for range 5 {
		if _, err := c.Token(ctx); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("want the held invalid_grant, got %v", err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("%d token requests for 5 logins while a person is needed, want 1", n)
	}
	now = now.Add(11 * time.Second)
	c.Token(ctx)
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d token requests after the hold, want 2", n)
	}
	// Someone signs in (token add, another process or this one): at once,
	// once serve's Vault.Run has looked (every second).
	other := newStore(t, st.String(), key)
	if err := other.Put(bg, "a", Entry{RefreshToken: "rt-new"}); err != nil {
		t.Fatal(err)
	}
	st.Sync(bg)
	if _, err := c.Token(ctx); err != nil {
		t.Fatalf("after signing in: %v", err)
	}
}

var bg = context.Background()

// putCache saves an MSAL cache as MSAL's Export and a write after it do.
func putCache(t testing.TB, v *Vault, name string, data []byte) error {
	t.Helper()
	if _, err := v.StageCache(name, func([]byte) ([]byte, error) { return data, nil }); err != nil {
		return err
	}
	return v.Flush(bg)
}

// OpenStore opens the file store at path as a one-off command's Vault.
func OpenStore(path string, key []byte) (*Vault, error) {
	fs, err := NewFileStore(path, key)
	if err != nil {
		return nil, err
	}
	return NewVault(context.Background(), fs, VaultOptions{})
}
