package tokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
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
	Updated time.Time `json:"updated"`
	Expiry  time.Time `json:"expiry"`
	// AccessToken is the one that refresh got (sealed like the rest), so
	// that processes sharing the store use it instead of each redeeming
	// the refresh token again.
	AccessToken string `json:"access_token,omitempty"`
	LastError   string `json:"last_error,omitempty"`
}

// Data is everything a Store keeps.
type Data struct {
	Accounts map[string]Entry `json:"accounts"`
	// Caches are MSAL token caches (their own JSON), by client.
	Caches map[string][]byte `json:"caches,omitempty"`
	// Lease is a redemption under way (see Vault.Claim).
	Lease *Lease `json:"lease,omitempty"`
}

// Lease says that a process is redeeming a refresh token: recorded in the
// store before the provider is asked, cleared when the rotated token is
// saved. Another process does not redeem while it is in force, since the
// holder may have the only copy of the new refresh token in memory (its
// database went away before it could save it).
type Lease struct {
	// Holder names the holder's session in the store (HolderStore).
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// HolderStore is a Store shared by processes that may lose it while they
// hold its lock (a database: a restart ends the lock's session). Vault
// then leases each redemption, so that a process never redeems a refresh
// token another may have spent without having saved the new one.
type HolderStore interface {
	Store
	// Holder names the session holding the lock now; the caller holds it.
	Holder(ctx context.Context) (string, error)
	// HolderGone reports whether holder's session is known to have ended
	// without the store going away meanwhile (its process died, so it has
	// no unsaved token); false when that cannot be told.
	HolderGone(ctx context.Context, holder string) bool
}

// leaseTime bounds a redemption's lease: a token request, and time for a
// holder that lost the store to save what it got once it is back.
const leaseTime = 2 * time.Minute

func (d *Data) clone() *Data {
	out := &Data{Accounts: make(map[string]Entry, len(d.Accounts))}
	for k, e := range d.Accounts {
		out.Accounts[k] = e
	}
	if d.Caches != nil {
		out.Caches = make(map[string][]byte, len(d.Caches))
		for k, v := range d.Caches {
			out.Caches[k] = v
		}
	}
	if d.Lease != nil {
		l := *d.Lease
		out.Lease = &l
	}
	return out
}

// Store keeps the token state durably and sealed: today one encrypted file
// (FileStore); a database that replicas share plugs in here too. The rest
// of mailproxy uses it through a Vault.
type Store interface {
	// Lock takes the store's lock, which excludes every other process
	// using the store; it is held while a refresh token is redeemed and
	// around every write.
	Lock(ctx context.Context) (unlock func(), err error)
	// Load returns the stored data, or nil when it has not changed since
	// the last Load or Save (a cheap check).
	Load(ctx context.Context) (*Data, error)
	// Save writes d durably. The caller holds the lock.
	Save(ctx context.Context, d *Data) error
	// String names the store for people (a path).
	String() string
}

// VaultOptions tune a Vault.
type VaultOptions struct {
	Logger *slog.Logger
	// KeepInMemory is for a long-running process (serve): a change the
	// store cannot take (a full disk) is kept in memory, used, and saved
	// as soon as the store can be written (Run retries). Without it (a
	// one-off command), a refresh token is not redeemed while the store
	// cannot be written, since the rotated one would be lost at exit.
	KeepInMemory bool
}

// Vault is the token state as mailproxy uses it: a copy of a Store in
// memory, read again only when the store changed, with every change
// written through under the store's lock. A change the store cannot take
// is never dropped: it stays in memory, is replayed onto what the store
// holds when it is written next, and Durable says so meanwhile.
type Vault struct {
	store Store
	o     VaultOptions

	// lockMu is the store's lock within this process.
	lockMu sync.Mutex

	mu      sync.Mutex
	saved   *Data              // as last loaded or saved
	data    *Data              // saved with pending applied: what readers see
	pending []func(*Data) bool // changes not yet saved, in order
	unsaved error              // why pending are not saved
	unreach error              // why the store could not be read or locked last time
	lease   string             // the holder of the lease this process took (Claim), until Redeem ends
	gen     atomic.Uint64      // counts changes of data

	wake chan struct{}
}

// NewVault reads s and returns its Vault.
func NewVault(ctx context.Context, s Store, o VaultOptions) (*Vault, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	d, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	if d == nil {
		d = &Data{}
	}
	if d.Accounts == nil {
		d.Accounts = map[string]Entry{}
	}
	return &Vault{store: s, o: o, saved: d, data: d.clone(), wake: make(chan struct{}, 1)}, nil
}

// String names the store.
func (v *Vault) String() string { return v.store.String() }

// Generation changes whenever the data does, as seen by this process: its
// own changes, and other processes' once read (Run looks every second;
// Get looks each time). It does no I/O.
func (v *Vault) Generation() uint64 { return v.gen.Load() }

// reload reads the store again if it changed. The caller holds v.mu.
func (v *Vault) reload(ctx context.Context) error {
	d, err := v.store.Load(ctx)
	v.noteReach(err)
	if err != nil || d == nil {
		return err
	}
	if d.Accounts == nil {
		d.Accounts = map[string]Entry{}
	}
	v.saved = d
	v.data = d.clone()
	for _, change := range v.pending {
		change(v.data)
	}
	v.gen.Add(1)
	return nil
}

// Sync reads the store again if another process changed it.
func (v *Vault) Sync(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reload(ctx)
}

// Get returns the entry for account as stored now (the store is checked
// for changes first; if it cannot be read, the copy in memory answers).
func (v *Vault) Get(ctx context.Context, account string) (Entry, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.reload(ctx); err != nil {
		v.o.Logger.Debug("token store unreadable: using the copy in memory", "store", v.store.String(), "err", err)
	}
	e, ok := v.data.Accounts[account]
	return e, ok
}

// Peek returns the entry for account from memory, with no I/O.
func (v *Vault) Peek(account string) (Entry, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.data.Accounts[account]
	return e, ok
}

// Accounts lists the account keys with their entries, sorted.
func (v *Vault) Accounts(ctx context.Context) ([]string, map[string]Entry, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.reload(ctx); err != nil {
		return nil, nil, err
	}
	out := make(map[string]Entry, len(v.data.Accounts))
	keys := make([]string, 0, len(v.data.Accounts))
	for k, e := range v.data.Accounts {
		out[k] = e
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, out, nil
}

// Cache returns the MSAL cache saved under name.
func (v *Vault) Cache(ctx context.Context, name string) []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	_ = v.reload(ctx)
	return v.data.Caches[name]
}

// Put saves e for account.
func (v *Vault) Put(ctx context.Context, account string, e Entry) error {
	return v.Update(ctx, account, func(old *Entry) { *old = e })
}

// Update changes the entry for account (a zero Entry if there is none) and
// saves it before returning, keeping what other processes changed
// meanwhile. Inside Redeem it is saved when Redeem ends. If the store
// cannot be written, the change is kept (see Vault) and the error says so.
func (v *Vault) Update(ctx context.Context, account string, change func(*Entry)) error {
	v.stage(func(d *Data) bool {
		e := d.Accounts[account]
		change(&e)
		d.Accounts[account] = e
		return true
	})
	return v.flushUnlessHeld(ctx)
}

// Remove deletes account; it reports whether it was there.
func (v *Vault) Remove(ctx context.Context, account string) (bool, error) {
	v.mu.Lock()
	_ = v.reload(ctx)
	_, had := v.data.Accounts[account]
	v.mu.Unlock()
	v.stage(func(d *Data) bool {
		delete(d.Accounts, account)
		return true
	})
	return had, v.flushUnlessHeld(ctx)
}

// StageCache replaces the MSAL cache under name with what change makes of
// the one the store holds. It is saved by the next write (Update, Remove,
// Flush, the end of Redeem); it never waits for the store's lock, since
// MSAL calls it under its own. A change that fails (damaged JSON) is
// reported and not applied.
func (v *Vault) StageCache(name string, change func(current []byte) ([]byte, error)) ([]byte, error) {
	var out []byte
	var cerr error
	ok := v.stage(func(d *Data) bool {
		next, err := change(d.Caches[name])
		if err != nil {
			cerr = err
			return false
		}
		if d.Caches == nil {
			d.Caches = map[string][]byte{}
		}
		d.Caches[name] = bytes.Clone(next)
		out = next
		return true
	})
	if !ok {
		return nil, cerr
	}
	select {
	case v.wake <- struct{}{}:
	default:
	}
	return out, nil
}

// stage applies change to the copy in memory and queues it for the store.
// It reports whether change applied.
func (v *Vault) stage(change func(*Data) bool) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !change(v.data) {
		return false
	}
	v.pending = append(v.pending, change)
	v.gen.Add(1)
	return true
}

// heldKey marks a context whose holder has the vault's lock.
type heldKey struct{}

// lock takes the store's lock unless ctx already holds it.
func (v *Vault) lock(ctx context.Context) (context.Context, func(), error) {
	if ctx.Value(heldKey{}) == v {
		return ctx, func() {}, nil
	}
	v.lockMu.Lock()
	unlock, err := v.store.Lock(ctx)
	if err != nil {
		v.lockMu.Unlock()
		v.mu.Lock()
		v.noteReach(err)
		v.mu.Unlock()
		return nil, nil, fmt.Errorf("token store %s: cannot take its lock: %w", v.store, err)
	}
	return context.WithValue(ctx, heldKey{}, v), func() { unlock(); v.lockMu.Unlock() }, nil
}

func (v *Vault) flushUnlessHeld(ctx context.Context) error {
	if ctx.Value(heldKey{}) == v {
		return nil
	}
	return v.Flush(ctx)
}

// Flush saves the changes not yet saved, replayed onto what the store
// holds now, under its lock.
func (v *Vault) Flush(ctx context.Context) error {
	v.mu.Lock()
	n := len(v.pending)
	v.mu.Unlock()
	if n == 0 {
		return nil
	}
	ctx, unlock, err := v.lock(ctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		v.noteUnsavedLocked(err)
		return v.unsavedError(err)
	}
	defer unlock()
	return v.flushLocked(ctx)
}

// flushLocked saves pending changes. The caller holds the store's lock and v.mu.
func (v *Vault) flushLocked(ctx context.Context) error {
	if len(v.pending) == 0 {
		return nil
	}
	err := v.reload(ctx)
	if err == nil {
		err = v.store.Save(ctx, v.data)
	}
	if err != nil {
		v.noteUnsavedLocked(err)
		return v.unsavedError(err)
	}
	v.saved, v.data, v.pending = v.data, v.data.clone(), nil
	if v.unsaved != nil {
		v.o.Logger.Info("token store written: every change is saved again", "event", "store_durable", "store", v.store.String())
		v.unsaved = nil
	}
	return nil
}

func (v *Vault) noteUnsavedLocked(err error) {
	if v.unsaved == nil {
		v.o.Logger.Error("token store cannot be written: changes are kept in memory until it can be",
			"event", "store_not_durable", "store", v.store.String(), "changes", len(v.pending), "err", err,
			"fix", "free space or fix permissions where the store is; a restart before it is written loses a rotated refresh token")
	}
	v.unsaved = err
}

// UnsavedError is a change the store could not take: it is in memory,
// in use, and saved as soon as the store can be written.
type UnsavedError struct {
	Store   string
	Changes int
	Err     error
}

func (e *UnsavedError) Error() string {
	return fmt.Sprintf("token store %s cannot be written (%v): %d change(s) are kept in memory until it can be", e.Store, e.Err, e.Changes)
}

func (e *UnsavedError) Unwrap() error { return e.Err }

// unsavedError says err kept the pending changes from the store. The
// caller holds v.mu.
func (v *Vault) unsavedError(err error) error {
	return &UnsavedError{Store: v.store.String(), Changes: len(v.pending), Err: err}
}

// noteReach records whether the store answered, logging the change. The
// caller holds v.mu.
func (v *Vault) noteReach(err error) {
	switch {
	case err != nil && v.unreach == nil:
		v.o.Logger.Warn("token store cannot be reached: serving with the tokens in memory", "event", "store_unreachable", "store", v.store.String(), "err", err,
			"fix", "tokens are not refreshed until it answers; check that it is up and reachable")
	case err == nil && v.unreach != nil:
		v.o.Logger.Info("token store answers again", "event", "store_reachable", "store", v.store.String())
	}
	v.unreach = err
}

// Reachable reports why the store could not be read or locked the last
// time it was tried; nil when it answered.
func (v *Vault) Reachable() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.unreach == nil {
		return nil
	}
	return fmt.Errorf("token store %s cannot be reached: %w", v.store, v.unreach)
}

// Unsaved is the number of changes not yet saved.
func (v *Vault) Unsaved() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.pending)
}

// Durable reports what keeps changes from being saved: nil when every
// change is in the store.
func (v *Vault) Durable() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.pending) == 0 {
		return nil
	}
	err := v.unsaved
	if err == nil {
		err = errors.New("not written yet")
	}
	return &UnsavedError{Store: v.store.String(), Changes: len(v.pending), Err: err}
}

// Redeem runs redeem holding the store's lock, after reading what the
// store holds now, and saves what it changed before releasing the lock:
// a refresh token is redeemed by one process at a time, always the newest
// one, and the rotated one is saved before anyone else redeems. If the
// store cannot be locked or read, redeem is not run (a refresh token spent
// without being recorded would be lost). Changes the store cannot take are
// kept (KeepInMemory) and reported by Durable; redeem's own error is
// returned.
func (v *Vault) Redeem(ctx context.Context, redeem func(ctx context.Context) error) error {
	ctx, unlock, err := v.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	v.mu.Lock()
	err = v.reload(ctx)
	if err == nil && !v.o.KeepInMemory {
		// A one-off command exits soon: if the store cannot be written
		// now, a rotated refresh token would die with it.
		if err = v.store.Save(ctx, v.data); err == nil {
			v.saved, v.data, v.pending = v.data, v.data.clone(), nil
		}
	}
	v.mu.Unlock()
	if err != nil {
		return fmt.Errorf("token store %s cannot be used (%w): not redeeming the refresh token, since the new one could not be kept", v.store, err)
	}
	rerr := redeem(ctx)
	v.mu.Lock()
	if held := v.lease; held != "" {
		v.lease = ""
		v.pending = append(v.pending, func(d *Data) bool {
			if d.Lease != nil && d.Lease.Holder == held {
				d.Lease = nil // saved with the rotated token
			}
			return true
		})
		v.pending[len(v.pending)-1](v.data)
	}
	ferr := v.flushLocked(ctx)
	v.mu.Unlock()
	if ferr != nil && !v.o.KeepInMemory && rerr == nil {
		return ferr
	}
	return rerr
}

// watcher is a Store that says when another process wrote it (PGStore:
// LISTEN/NOTIFY), so that a change is seen at once rather than at the
// next look.
type watcher interface {
	Watch(ctx context.Context) <-chan struct{}
}

// Claim is called inside Redeem just before a refresh token is redeemed.
// With a HolderStore it records a lease in the store, saved before it
// returns, and refuses while another process's lease is in force: that
// process may hold the rotated refresh token in memory, waiting for the
// store to come back, and redeeming the old one would spend it twice (a
// provider with reuse detection revokes the grant). Other stores need no
// lease: Claim does nothing.
func (v *Vault) Claim(ctx context.Context) error {
	hs, ok := v.store.(HolderStore)
	if !ok || ctx.Value(heldKey{}) != v {
		return nil
	}
	holder, err := hs.Holder(ctx)
	if err != nil {
		return fmt.Errorf("token store %s cannot be used (%w): not redeeming the refresh token", v.store, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.reload(ctx); err != nil {
		return fmt.Errorf("token store %s cannot be used (%w): not redeeming the refresh token", v.store, err)
	}
	if l := v.data.Lease; l != nil && l.Holder != holder && time.Now().Before(l.Until) && !hs.HolderGone(ctx, l.Holder) {
		return fmt.Errorf("another process sharing the token store %s is redeeming the refresh token, or has not saved the one it got (until %s): waiting for it rather than spending the refresh token twice",
			v.store, l.Until.Format(time.RFC3339))
	}
	until := time.Now().Add(leaseTime)
	take := func(d *Data) bool {
		d.Lease = &Lease{Holder: holder, Until: until}
		return true
	}
	take(v.data)
	v.pending = append(v.pending, take)
	if err := v.flushLocked(ctx); err != nil {
		// Not redeeming: the lease is not kept for later either.
		v.pending = v.pending[:len(v.pending)-1]
		v.data = v.saved.clone()
		for _, change := range v.pending {
			change(v.data)
		}
		return fmt.Errorf("not redeeming the refresh token, since the new one could not be kept: %w", err)
	}
	v.gen.Add(1)
	v.lease = holder
	return nil
}

// Run notices other processes' changes (every second, and at once when the
// store says so) and saves changes kept in memory, retrying with backoff,
// until ctx ends.
func (v *Vault) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var changed <-chan struct{}
	if w, ok := v.store.(watcher); ok {
		changed = w.Watch(ctx)
	}
	backoff, next := time.Second, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-v.wake:
		case <-changed:
		}
		_ = v.Sync(ctx)
		if v.Unsaved() == 0 || time.Now().Before(next) {
			continue
		}
		if err := v.Flush(ctx); err != nil {
			next = time.Now().Add(backoff/2 + rand.N(backoff/2+1))
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff, next = time.Second, time.Time{}
	}
}

// Close saves what is not saved yet, then closes the store (a database's
// connections); its error says what is lost if the process ends now.
func (v *Vault) Close(ctx context.Context) error {
	err := v.Flush(ctx)
	if c, ok := v.store.(interface{ Close() }); ok {
		c.Close()
	}
	return err
}
