package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"mailproxy/idp"
	"mailproxy/pgtest"
)

// TestPGStore runs the PostgreSQL store's tests that leave the server up
// on one cluster, each on a database of its own.
func TestPGStore(t *testing.T) {
	c := pgtest.Start(t, 0)
	t.Run("RoundTripKeepsNoClearTextInTheDatabase", func(t *testing.T) { testPGRoundTrip(t, c.NewDatabase(t)) })
	t.Run("LoadIsNilUntilAnotherStoreSaves", func(t *testing.T) { testPGLoadNilUntilChanged(t, c.NewDatabase(t)) })
	t.Run("WrongKeyIsRefused", func(t *testing.T) { testPGWrongKey(t, c.NewDatabase(t)) })
	t.Run("ConcurrentVaultsLoseNoUpdate", func(t *testing.T) { testPGConcurrentVaults(t, c.NewDatabase(t)) })
	t.Run("LockExcludesUntilUnlocked", func(t *testing.T) { testPGLockExcludes(t, c.NewDatabase(t)) })
	t.Run("CancelledLockStopsWaiting", func(t *testing.T) { testPGLockCancelled(t, c.NewDatabase(t)) })
	t.Run("LockOfAKilledSessionIsReleased", func(t *testing.T) { testPGLockKilledSession(t, c.NewDatabase(t)) })
	t.Run("SchemaIsCreatedKeptAndNewerRefused", func(t *testing.T) { testPGSchema(t, c.NewDatabase(t)) })
	t.Run("ReplicasStartingAtOnceMigrateOnce", func(t *testing.T) { testPGConcurrentMigrate(t, c.NewDatabase(t)) })
	t.Run("PasswordIsNeverShown", func(t *testing.T) { testPGPasswordNeverShown(t, c, c.NewDatabase(t)) })
}

func pgKey(t testing.TB) []byte {
	k, err := ParseKey(NewKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// pgLog collects a store's log lines.
type pgLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *pgLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *pgLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *pgLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newPGStore opens a store on dsn, closed when t ends.
func newPGStore(t testing.TB, dsn string, key []byte, logger *slog.Logger) *PGStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	s, err := NewPGStore(ctx, dsn, key, logger)
	if err != nil {
		t.Fatalf("NewPGStore: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// pgQuery runs sql on dsn directly and scans the one row it returns.
func pgQuery(t testing.TB, dsn, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if len(dest) == 0 {
		_, err = conn.Exec(ctx, sql)
	} else {
		err = conn.QueryRow(ctx, sql).Scan(dest...)
	}
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgSampleData(rt string) *Data {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return &Data{
		Accounts: map[string]Entry{"alice@example.com": {
			RefreshToken: rt, Provider: "https://login.example.com/token", Scopes: []string{"mail", "offline_access"},
			Added: at, Updated: at, Expiry: at.Add(time.Hour),
		}},
		Caches: map[string][]byte{"client-1": []byte(`{"AccessToken":{}}`)},
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testPGRoundTrip(t *testing.T, dsn string) {
	key := pgKey(t)
	a, b := newPGStore(t, dsn, key, nil), newPGStore(t, dsn, key, nil)
	const rt = "refresh-token-that-must-stay-sealed"
	want := pgSampleData(rt)
	if err := a.Save(bg, want); err != nil {
		t.Fatal(err)
	}
	got, err := b.Load(bg)
	if err != nil || got == nil {
		t.Fatalf("Load: %v, %v", got, err)
	}
	if mustJSON(t, got) != mustJSON(t, want) {
		t.Fatalf("Load:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, want))
	}
	var sealed []byte
	pgQuery(t, dsn, "select sealed from mailproxy_tokens", &sealed)
	if bytes.Contains(sealed, []byte(rt)) || bytes.Contains(sealed, []byte("alice@example.com")) {
		t.Fatal("the database holds clear text")
	}
	if !bytes.HasPrefix(sealed, storeMagic) {
		t.Fatalf("sealed row does not start as the file store's format: %q", sealed[:min(len(sealed), 24)])
	}
}

func testPGLoadNilUntilChanged(t *testing.T, dsn string) {
	key := pgKey(t)
	a, b := newPGStore(t, dsn, key, nil), newPGStore(t, dsn, key, nil)
	load := func(s *PGStore) *Data {
		t.Helper()
		d, err := s.Load(bg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := load(a); d == nil || len(d.Accounts) != 0 || d.Accounts == nil {
		t.Fatalf("first Load of an empty store: %+v", d)
	}
	if d := load(a); d != nil {
		t.Fatalf("unchanged empty store: %+v", d)
	}
	if err := a.Save(bg, pgSampleData("one")); err != nil {
		t.Fatal(err)
	}
	if d := load(a); d != nil {
		t.Fatalf("Load after its own Save: %+v", d)
	}
	if d := load(b); d == nil || d.Accounts["alice@example.com"].RefreshToken != "one" {
		t.Fatalf("other store's Load: %+v", d)
	}
	if d := load(b); d != nil {
		t.Fatalf("second Load: %+v", d)
	}
	if err := a.Save(bg, pgSampleData("two")); err != nil {
		t.Fatal(err)
	}
	if d := load(b); d == nil || d.Accounts["alice@example.com"].RefreshToken != "two" {
		t.Fatalf("Load after the other's Save: %+v", d)
	}
}

func testPGWrongKey(t *testing.T, dsn string) {
	a := newPGStore(t, dsn, pgKey(t), nil)
	if err := a.Save(bg, pgSampleData("rt")); err != nil {
		t.Fatal(err)
	}
	b := newPGStore(t, dsn, pgKey(t), nil)
	_, err := b.Load(bg)
	if err == nil || !strings.Contains(err.Error(), "wrong key") || !strings.Contains(err.Error(), "token_store.key") ||
		!strings.Contains(err.Error(), b.String()) {
		t.Fatalf("Load with another key: %v", err)
	}
}

func testPGConcurrentVaults(t *testing.T, dsn string) {
	key := pgKey(t)
	const writers, updates = 5, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*updates)
	for i := range writers {
		v, err := NewVault(bg, newPGStore(t, dsn, key, nil), VaultOptions{KeepInMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for range updates {
				errs <- v.Update(bg, fmt.Sprintf("account-%d", i), func(e *Entry) {
					n, _ := strconv.Atoi(e.RefreshToken)
					e.RefreshToken = strconv.Itoa(n + 1)
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := newPGStore(t, dsn, key, nil).Load(bg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range writers {
		if got := d.Accounts[fmt.Sprintf("account-%d", i)].RefreshToken; got != strconv.Itoa(updates) {
			t.Errorf("account-%d: %s updates kept, want %d", i, got, updates)
		}
	}
}

func testPGLockExcludes(t *testing.T, dsn string) {
	key := pgKey(t)
	a, b := newPGStore(t, dsn, key, nil), newPGStore(t, dsn, key, nil)
	unlockA, err := a.Lock(bg)
	if err != nil {
		t.Fatal(err)
	}
	var released atomic.Bool
	got := make(chan error, 1)
	go func() {
		unlock, err := b.Lock(bg)
		if err == nil {
			if !released.Load() {
				err = errors.New("granted while the other store held it")
			}
			unlock()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("second Lock returned while the first was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	released.Store(true)
	unlockA()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second Lock still waits after the first was released")
	}
}

func testPGLockCancelled(t *testing.T, dsn string) {
	key := pgKey(t)
	a, b := newPGStore(t, dsn, key, nil), newPGStore(t, dsn, key, nil)
	unlockA, err := a.Lock(bg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Lock(ctx); err == nil {
		t.Fatal("Lock with an expiring context succeeded while the lock was held")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cancelled Lock returned after %v", d)
	}
	// Nobody waits for the lock on the server any more.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var waiting int
		pgQuery(t, dsn, "select count(*) from pg_locks where locktype = 'advisory' and not granted", &waiting)
		if waiting == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions still wait for the lock", waiting)
		}
		time.Sleep(50 * time.Millisecond)
	}
	unlockA()
	ctx, cancel = context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	unlockB, err := b.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
}

func testPGLockKilledSession(t *testing.T, dsn string) {
	key := pgKey(t)
	logs := &pgLog{}
	a, b := newPGStore(t, dsn, key, logs.logger()), newPGStore(t, dsn, key, nil)
	unlockA, err := a.Lock(bg)
	if err != nil {
		t.Fatal(err)
	}
	// What PostgreSQL sees when the process holding the lock is killed.
	var terminated bool
	pgQuery(t, dsn, "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and granted", &terminated)
	if !terminated {
		t.Fatal("pg_terminate_backend failed")
	}
	ctx, cancel := context.WithTimeout(bg, time.Second)
	defer cancel()
	unlockB, err := b.Lock(ctx)
	if err != nil {
		t.Fatalf("lock of a terminated session not released within a second: %v", err)
	}
	unlockB()
	unlockA() // its session is gone: it must return, not hang or panic
	if !strings.Contains(logs.String(), "cannot release its lock") {
		t.Errorf("no warning for the lost lock:\n%s", logs)
	}
	// a's pool is fine: its dead connection was not given back.
	ctx, cancel = context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	unlockA, err = a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unlockA()
}

func testPGSchema(t *testing.T, dsn string) {
	key := pgKey(t)
	a := newPGStore(t, dsn, key, nil)
	var version, rows int
	pgQuery(t, dsn, "select max(version), count(*) from mailproxy_schema", &version, &rows)
	if version != 1 || rows != 1 {
		t.Fatalf("schema version %d in %d rows, want 1 in 1", version, rows)
	}
	if err := a.Save(bg, pgSampleData("kept")); err != nil {
		t.Fatal(err)
	}
	a.Close()

	again := newPGStore(t, dsn, key, nil)
	d, err := again.Load(bg)
	if err != nil || d == nil || d.Accounts["alice@example.com"].RefreshToken != "kept" {
		t.Fatalf("after starting again: %+v, %v", d, err)
	}
	pgQuery(t, dsn, "select max(version), count(*) from mailproxy_schema", &version, &rows)
	if version != 1 || rows != 1 {
		t.Fatalf("after starting again: schema version %d in %d rows", version, rows)
	}

	pgQuery(t, dsn, "update mailproxy_schema set version = 99")
	_, err = NewPGStore(bg, dsn, key, nil)
	if err == nil || !strings.Contains(err.Error(), "schema version 99 is newer than this mailproxy knows (1): upgrade mailproxy") ||
		!strings.Contains(err.Error(), "token store postgres://mailproxy@") {
		t.Fatalf("newer schema: %v", err)
	}
}

func testPGConcurrentMigrate(t *testing.T, dsn string) {
	key := pgKey(t)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Go(func() {
			s, err := NewPGStore(bg, dsn, key, nil)
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	var version, rows int
	pgQuery(t, dsn, "select max(version), count(*) from mailproxy_schema", &version, &rows)
	if version != 1 || rows != 1 {
		t.Fatalf("schema version %d in %d rows, want 1 in 1", version, rows)
	}
}

func testPGPasswordNeverShown(t *testing.T, c *pgtest.Cluster, dsn string) {
	key := pgKey(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	db := strings.TrimPrefix(u.Path, "/")
	name := fmt.Sprintf("postgres://mailproxy@127.0.0.1:%d/%s", c.Port, db)
	noPassword := func(what, text string) {
		t.Helper()
		if strings.Contains(text, c.Password) {
			t.Errorf("%s shows the password: %s", what, text)
		}
	}

	s := newPGStore(t, dsn, key, nil)
	if s.String() != name {
		t.Errorf("String() = %q, want %q", s.String(), name)
	}
	kv := fmt.Sprintf("host=127.0.0.1 port=%d user=mailproxy password=%s dbname=%s sslmode=disable", c.Port, c.Password, db)
	if s := newPGStore(t, kv, key, nil); s.String() != name {
		t.Errorf("key=value DSN: String() = %q, want %q", s.String(), name)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	ctx, cancel := context.WithTimeout(bg, 20*time.Second)
	defer cancel()
	for _, tc := range []struct{ what, dsn, want string }{
		{"wrong port", strings.Replace(dsn, ":"+strconv.Itoa(c.Port)+"/", ":"+strconv.Itoa(closed)+"/", 1),
			fmt.Sprintf("token store postgres://mailproxy@127.0.0.1:%d/%s: cannot connect: ", closed, db)},
		{"wrong password", strings.Replace(dsn, c.Password, c.Password[:8]+"-wrong", 1), "password authentication failed"},
		{"bad port number", strings.Replace(dsn, ":"+strconv.Itoa(c.Port)+"/", ":notaport/", 1), "not a PostgreSQL connection string"},
		{"bad key=value", kv + " port", "not a PostgreSQL connection string"},
	} {
		_, err := NewPGStore(ctx, tc.dsn, key, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.what, err, tc.want)
			continue
		}
		if strings.Contains(tc.want, "cannot connect") && !strings.Contains(err.Error(), "check token_store.postgres and that the database is up") {
			t.Errorf("%s: %v: does not say what to do", tc.what, err)
		}
		noPassword(tc.what, err.Error())
		if tc.what == "wrong password" {
			noPassword(tc.what, c.Password[:8]+"-wrong")
		}
	}

	// Should a cause ever quote the password, the error masks it.
	masked := s.errorf("cannot connect: %w", fmt.Errorf("dial %s: refused", c.Password))
	noPassword("a quoting cause", masked.Error())
	if !strings.Contains(masked.Error(), "dial xxxxx: refused") || errors.Unwrap(masked) == nil {
		t.Errorf("masked error: %v", masked)
	}
}

// waitSignal waits for a signal on ch.
func waitSignal(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("no signal within %v %s", within, what)
	}
}

// waitLog waits for a line containing text in logs.
func waitLog(t *testing.T, logs *pgLog, text string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(logs.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged within %v:\n%s", text, within, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPGStoreWatchSeesOtherSavesAndSurvivesARestart(t *testing.T) {
	c := pgtest.Start(t, 0)
	key := pgKey(t)
	logs := &pgLog{}
	a, b := newPGStore(t, c.DSN, key, logs.logger()), newPGStore(t, c.DSN, key, nil)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch := a.Watch(ctx)
	waitSignal(t, ch, 10*time.Second, "when it starts listening")
	if err := b.Save(bg, pgSampleData("one")); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch, 2*time.Second, "after another store's Save")

	c.Restart(t)
	waitSignal(t, ch, 15*time.Second, "when it listens again after a restart")
	if err := b.Save(bg, pgSampleData("two")); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, ch, 2*time.Second, "after a Save after the restart")
	if d, err := a.Load(bg); err != nil || d == nil || d.Accounts["alice@example.com"].RefreshToken != "two" {
		t.Fatalf("Load after the restart: %+v, %v", d, err)
	}

	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || strings.Count(out, "listening for other replicas' changes again") != 1 {
		t.Errorf("want one warning and one recovery line:\n%s", out)
	}
	if strings.Contains(out, c.Password) {
		t.Errorf("the log shows the password:\n%s", out)
	}
}

func TestPGStoreFailsFastWhileTheDatabaseIsDownAndRecovers(t *testing.T) {
	c := pgtest.Start(t, 0)
	key := pgKey(t)
	logs := &pgLog{}
	s := newPGStore(t, c.DSN, key, logs.logger())
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch := s.Watch(ctx)
	waitSignal(t, ch, 10*time.Second, "when it starts listening")
	if err := s.Save(bg, pgSampleData("before")); err != nil {
		t.Fatal(err)
	}

	c.Down(t)
	const limit = 3 * time.Second
	for _, op := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"Load", func(ctx context.Context) error { _, err := s.Load(ctx); return err }},
		{"Lock", func(ctx context.Context) error {
			unlock, err := s.Lock(ctx)
			if err == nil {
				unlock()
			}
			return err
		}},
		{"Save", func(ctx context.Context) error { return s.Save(ctx, pgSampleData("during")) }},
	} {
		ctx, cancel := context.WithTimeout(bg, limit)
		start := time.Now()
		err := op.do(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%s succeeded while the database was down", op.name)
		}
		if d := time.Since(start); d > limit+time.Second {
			t.Fatalf("%s took %v", op.name, d)
		}
		if !strings.Contains(err.Error(), s.String()) || strings.Contains(err.Error(), c.Password) {
			t.Errorf("%s: %v", op.name, err)
		}
	}
	time.Sleep(3 * time.Second) // let Watch retry a few times: it warns once
	c.Up(t)

	if d, err := s.Load(bg); err != nil || d == nil || d.Accounts["alice@example.com"].RefreshToken != "before" {
		t.Fatalf("Load after the database came back: %+v, %v", d, err)
	}
	unlock, err := s.Lock(bg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(bg, pgSampleData("after")); err != nil {
		t.Fatal(err)
	}
	unlock()
	waitLog(t, logs, "listening for other replicas' changes again", 15*time.Second)
	out := logs.String()
	if strings.Count(out, "level=WARN") != 1 || strings.Count(out, "listening for other replicas' changes again") != 1 {
		t.Errorf("want one warning and one recovery line:\n%s", out)
	}
	if strings.Contains(out, c.Password) {
		t.Errorf("the log shows the password:\n%s", out)
	}
}

// A replica that redeemed a refresh token but lost the database before it
// could save the rotated one holds a lease: after a restart of the server
// another replica does not redeem the old (spent) token, until the holder
// saved the new one. A holder whose session ended while the server ran on
// (its process was killed) holds nothing back.
func TestPGLeaseKeepsASpentRefreshTokenFromBeingRedeemedAgain(t *testing.T) {
	c := pgtest.Start(t, 0)
	key := pgKey(t)
	open := func() *Vault {
		v, err := NewVault(bg, newPGStore(t, c.DSN, key, nil), VaultOptions{KeepInMemory: true})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := open(), open()
	if err := a.Put(bg, "acct", Entry{RefreshToken: "rt-1"}); err != nil {
		t.Fatal(err)
	}
	// a redeems rt-1; the server goes down before it saves rt-2, and
	// comes back after.
	a.Redeem(bg, func(ctx context.Context) error {
		if err := a.Claim(ctx); err != nil {
			t.Fatal(err)
		}
		c.Down(t)
		a.Update(ctx, "acct", func(e *Entry) { e.RefreshToken = "rt-2" })
		return nil
	})
	if a.Unsaved() == 0 {
		t.Fatal("rt-2 saved with the server down")
	}
	c.Up(t)
	var claimed error
	if err := b.Redeem(bg, func(ctx context.Context) error { claimed = b.Claim(ctx); return nil }); err != nil || claimed == nil ||
		!strings.Contains(claimed.Error(), "rather than spending the refresh token twice") {
		t.Fatalf("b claimed a redemption while a holds the only copy of rt-2: %v, %v", err, claimed)
	}
	if err := a.Flush(bg); err != nil {
		t.Fatalf("a cannot save rt-2 once the server is back: %v", err)
	}
	if err := b.Redeem(bg, func(ctx context.Context) error { return b.Claim(ctx) }); err != nil {
		t.Fatalf("b cannot redeem after a saved: %v", err)
	}
	if e, _ := b.Get(bg, "acct"); e.RefreshToken != "rt-2" {
		t.Fatalf("b sees %q, want rt-2", e.RefreshToken)
	}

	// a's process dies in the middle of a redemption: its session ends
	// with the server up, and b goes on at once.
	held, dying := make(chan struct{}), make(chan struct{})
	killed, kill := context.WithCancel(bg)
	defer func() { kill(); <-dying }() // its pool closes once it lets go
	go func() {
		defer close(dying)
		a.Redeem(killed, func(ctx context.Context) error {
			if err := a.Claim(ctx); err != nil {
				t.Error(err)
			}
			close(held)
			<-ctx.Done() // never returns on its own, as a killed process
			return nil
		})
	}()
	<-held
	var terminated bool
	pgQuery(t, c.DSN, "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and granted", &terminated)
	ctx, cancel := context.WithTimeout(bg, 5*time.Second)
	defer cancel()
	if err := b.Redeem(ctx, func(ctx context.Context) error { return b.Claim(ctx) }); err != nil {
		t.Fatalf("b waits for a holder whose session ended: %v", err)
	}
}

// What a login pays for a cached token, by token store: the store is not on
// that path, so PostgreSQL adds nothing to the file store's figure.
//
//	go test -run '^$' -bench CachedTokenByStore ./tokens/
func BenchmarkCachedTokenByStore(b *testing.B) {
	s, url, hc := fakeIdP(b)
	s.AddPublicApp(idp.PublicApp{ClientID: "pub"})
	key := pgKey(b)
	c := pgtest.Start(b, 0)
	stores := map[string]func() Store{
		"file":     func() Store { fs, _ := NewFileStore(filepath.Join(b.TempDir(), "tokens.enc"), key); return fs },
		"postgres": func() Store { return newPGStore(b, c.NewDatabase(b), key, nil) },
	}
	for _, name := range []string{"file", "postgres"} {
		b.Run(name, func(b *testing.B) {
			v, err := NewVault(bg, stores[name](), VaultOptions{KeepInMemory: true})
			if err != nil {
				b.Fatal(err)
			}
			rt := "rt-bench-" + name
			s.AddRefreshToken(rt, "a@x")
			d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: url + "/token", ClientID: "pub", Account: "a@x", Initial: rt, Store: v, HTTPClient: hc})
			cache := NewCache("p", d, CacheOptions{Generation: v.Generation})
			if _, err := cache.Token(bg); err != nil {
				b.Fatal(err)
			}
			requests := s.TokenRequests()
			b.ResetTimer()
			for b.Loop() {
				if _, err := cache.Token(bg); err != nil {
					b.Fatal(err)
				}
			}
			if s.TokenRequests() != requests {
				b.Fatal("a cached token made a token request")
			}
		})
	}
}

// Token requests of ten replicas that keep one grant's token fresh (Run),
// sharing a PostgreSQL store, against ten with a store (and a grant) each.
// Tokens live 2 s here; the figure per token lifetime is what an hour-long
// token costs per hour.
//
//	go test -run '^$' -bench TokenRequestsOfTenReplicas -benchtime 1x ./tokens/
func BenchmarkTokenRequestsOfTenReplicas(b *testing.B) {
	const ttl, run = 2 * time.Second, 20 * time.Second
	c := pgtest.Start(b, 0)
	key := pgKey(b)
	for _, shared := range []bool{true, false} {
		name := map[bool]string{true: "shared-postgres", false: "a-store-each"}[shared]
		b.Run(name, func(b *testing.B) {
			s, url, hc := fakeIdP(b)
			s.RotateRefresh = true
			s.AddPublicApp(idp.PublicApp{ClientID: "pub", TTL: ttl, ReuseDetection: true})
			dsn := c.NewDatabase(b)
			ctx, cancel := context.WithTimeout(bg, run)
			defer cancel()
			var wg sync.WaitGroup
			for i := range 10 {
				var st Store = newPGStore(b, dsn, key, nil)
				rt := "rt-shared"
				if !shared {
					st, _ = NewFileStore(filepath.Join(b.TempDir(), "tokens.enc"), key)
					rt = fmt.Sprintf("rt-own-%d", i)
				}
				if i == 0 || !shared {
					s.AddRefreshToken(rt, "a@x")
				}
				v, err := NewVault(bg, st, VaultOptions{KeepInMemory: true})
				if err != nil {
					b.Fatal(err)
				}
				d, _ := NewOAuth2Delegated(&OAuth2Delegated{TokenURL: url + "/token", ClientID: "pub", Account: "a@x", Initial: rt, Store: v, HTTPClient: hc})
				cache := NewCache("p", d, CacheOptions{Generation: v.Generation})
				wg.Go(func() { v.Run(ctx) })
				wg.Go(func() { cache.Run(ctx) })
			}
			wg.Wait()
			if s.RefreshReuses() != 0 {
				b.Fatalf("%d refresh tokens redeemed twice", s.RefreshReuses())
			}
			b.ReportMetric(float64(s.TokenRequests())/float64(run/ttl), "requests/lifetime")
		})
	}
}
