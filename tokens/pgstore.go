package tokens

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGStore is a Store in a PostgreSQL database that replicas share: the
// whole Data is one row, sealed as FileStore seals its file, so the
// database never sees clear text. A session-level advisory lock is the
// store's lock: a process that dies holding it loses its session, and
// PostgreSQL releases the lock. Each Save bumps the row's generation (a
// cheap check for Load) and notifies other replicas (Watch).
type PGStore struct {
	pool     *pgxpool.Pool
	aead     cipher.AEAD
	name     string // postgres://USER@HOST:PORT/DATABASE: no password, no parameters
	password string // only to mask it, should a cause ever quote it
	logger   *slog.Logger

	mu     sync.Mutex
	gen    int64  // of the row as last loaded or saved
	known  bool   // gen is valid
	holder string // the lock's session while it is held: "backend pid@server start"
}

var _ HolderStore = (*PGStore)(nil)

const (
	// pgLockKey is the advisory lock that is the store's lock, and
	// pgMigrateKey the one that serializes schema migrations ("mailprxy",
	// "mailmigr" in ASCII). They differ so that starting a replica never
	// waits for another's refresh.
	pgLockKey    int64 = 0x6d61696c70727879
	pgMigrateKey int64 = 0x6d61696c6d696772

	// pgChannel is where Save notifies and Watch listens.
	pgChannel = "mailproxy_tokens"

	// pgConnectTimeout bounds a connection attempt when the DSN sets none.
	pgConnectTimeout = 10 * time.Second
	// pgQuiet is how long Watch waits for a notification before it checks
	// that its connection is still alive.
	pgQuiet = 30 * time.Second
	// pgCleanup bounds what runs without the caller's context (unlock,
	// closing a connection, Watch's connection setup and checks).
	pgCleanup = 5 * time.Second
)

// pgMigrations build the schema; migration i brings it to version i+1.
// Append only: a released migration never changes.
var pgMigrations = []string{
	// 1: the sealed Data, one row.
	`create table mailproxy_tokens (
		id smallint primary key default 1 check (id = 1),
		generation bigint not null,
		sealed bytea not null,
		updated timestamptz not null default now()
	)`,
}

// NewPGStore connects to the database dsn names (a URL or key=value
// form), creates or migrates its schema, and returns the store sealed
// with key. Close releases its connections.
func NewPGStore(ctx context.Context, dsn string, key []byte, logger *slog.Logger) (*PGStore, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx masks a password in its parse errors only on a best-effort
		// basis, so its details are left out.
		return nil, errors.New("token store: token_store.postgres is not a PostgreSQL connection string " +
			"(postgres://USER:PASSWORD@HOST:PORT/DATABASE or host=... user=... dbname=...); " +
			"the details are not shown since they may quote the password")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("token store: %w", err)
	}
	aead, _ := cipher.NewGCM(block)
	cc := cfg.ConnConfig
	if cc.ConnectTimeout == 0 {
		cc.ConnectTimeout = pgConnectTimeout
	}
	// A cancelled context cancels the query on the server, rather than
	// only cutting the connection: a Lock given up stops waiting there.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: pgCleanup}
	}
	s := &PGStore{
		aead:     aead,
		name:     fmt.Sprintf("postgres://%s@%s/%s", cc.User, net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))), cc.Database),
		password: cc.Password,
		logger:   logger,
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, s.errorf("%w", err)
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.pool.Close()
		return nil, s.errorf("cannot connect: %w: check token_store.postgres and that the database is up", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the store's connections. Watch's ends with its context.
func (s *PGStore) Close() { s.pool.Close() }

// String names the store: its user, server and database, never its
// password or other parameters.
func (s *PGStore) String() string { return s.name }

// migrate brings the schema to the version this code knows, in one
// transaction that replicas starting at once take in turn.
func (s *PGStore) migrate(ctx context.Context) error {
	var from, newer int
	errNewer := errors.New("newer schema")
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1)", pgMigrateKey); err != nil {
			return err
		}
		// Created only when missing: "create table if not exists" would
		// need the right to create even when nothing is to be created.
		var exists bool
		if err := tx.QueryRow(ctx, "select to_regclass('mailproxy_schema') is not null").Scan(&exists); err != nil {
			return err
		}
		if !exists {
			if _, err := tx.Exec(ctx, "create table mailproxy_schema (version integer not null)"); err != nil {
				return err
			}
		}
		err := tx.QueryRow(ctx, "select version from mailproxy_schema").Scan(&from)
		if errors.Is(err, pgx.ErrNoRows) {
			from = 0
			_, err = tx.Exec(ctx, "insert into mailproxy_schema (version) values (0)")
		}
		if err != nil {
			return err
		}
		if from > len(pgMigrations) {
			newer = from
			return errNewer
		}
		for v := from; v < len(pgMigrations); v++ {
			if _, err := tx.Exec(ctx, pgMigrations[v]); err != nil {
				return fmt.Errorf("migration to version %d: %w", v+1, err)
			}
		}
		if from == len(pgMigrations) {
			return nil
		}
		_, err = tx.Exec(ctx, "update mailproxy_schema set version = $1", len(pgMigrations))
		return err
	})
	if errors.Is(err, errNewer) {
		return s.errorf("schema version %d is newer than this mailproxy knows (%d): upgrade mailproxy", newer, len(pgMigrations))
	}
	if err != nil {
		return s.errorf("cannot create or migrate its schema: %w", err)
	}
	if from < len(pgMigrations) {
		s.logger.Info("token store schema migrated", "store", s.name, "from", from, "to", len(pgMigrations))
	}
	return nil
}

// Lock implements Store with a session-level advisory lock on a
// connection of its own, held until unlock. Should that session end (a
// database restart), the lock is gone with it.
func (s *PGStore) Lock(ctx context.Context) (unlock func(), err error) {
	// Up to three times: after a restart of the server the pool's idle
	// connections are dead (it pings only those idle for over a second).
	for range 3 {
		if unlock, err = s.lock(ctx); err == nil || ctx.Err() != nil {
			break
		}
	}
	return unlock, err
}

func (s *PGStore) lock(ctx context.Context) (func(), error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.errorf("cannot connect: %w", err)
	}
	if _, err := conn.Exec(ctx, "select pg_advisory_lock($1)", pgLockKey); err != nil {
		// The wait may have ended at any point, even just after the lock
		// was granted: ending the session releases whatever it holds.
		discardConn(conn)
		return nil, s.errorf("%w", err)
	}
	var session string
	if err := conn.QueryRow(ctx, "select pg_backend_pid() || '@' || "+pgServerStart).Scan(&session); err != nil {
		discardConn(conn)
		return nil, s.errorf("%w", err)
	}
	s.mu.Lock()
	s.holder = session
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			s.holder = ""
			s.mu.Unlock()
			s.unlock(conn)
		})
	}, nil
}

// pgServerStart names the server's run: it changes when it restarts.
const pgServerStart = "extract(epoch from pg_postmaster_start_time())::text"

// Holder implements HolderStore: the session holding the lock.
func (s *PGStore) Holder(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holder == "" {
		return "", s.errorf("its lock is not held")
	}
	return s.holder, nil
}

// HolderGone implements HolderStore: holder's session has ended while the
// server ran on (its process died or closed it). After a restart of the
// server it cannot be told, since every session ended then.
func (s *PGStore) HolderGone(ctx context.Context, holder string) bool {
	pid, start, ok := strings.Cut(holder, "@")
	if !ok {
		return false
	}
	var now string
	var alive bool
	err := s.pool.QueryRow(ctx, "select "+pgServerStart+", exists (select 1 from pg_stat_activity where pid = $1::int)", pid).Scan(&now, &alive)
	return err == nil && now == start && !alive
}

// unlock releases the lock conn holds and gives conn back to the pool; if
// it cannot, it closes conn, and the session's end releases the lock.
func (s *PGStore) unlock(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), pgCleanup)
	defer cancel()
	var held bool
	err := conn.QueryRow(ctx, "select pg_advisory_unlock($1)", pgLockKey).Scan(&held)
	if err != nil || !held {
		if err == nil {
			err = errors.New("the session no longer held it")
		}
		s.logger.Warn("token store: cannot release its lock: closing that connection, which releases it",
			"store", s.name, "err", s.redact(err))
		discardConn(conn)
		return
	}
	conn.Release()
}

// discardConn closes conn instead of giving it back to the pool.
func discardConn(conn *pgxpool.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), pgCleanup)
	defer cancel()
	conn.Hijack().Close(ctx)
}

// Load implements Store: one small query, and the sealed row only when its
// generation changed.
func (s *PGStore) Load(ctx context.Context) (*Data, error) {
	var gen int64
	var err error
	for range 3 { // as Lock
		err = s.pool.QueryRow(ctx, "select generation from mailproxy_tokens where id = 1").Scan(&gen)
		if err == nil || errors.Is(err, pgx.ErrNoRows) || ctx.Err() != nil {
			break
		}
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, s.errorf("cannot read: %w", err)
	}
	s.mu.Lock()
	same := s.known && gen == s.gen
	s.mu.Unlock()
	if same {
		return nil, nil
	}
	var sealed []byte
	if gen != 0 {
		err = s.pool.QueryRow(ctx, "select generation, sealed from mailproxy_tokens where id = 1").Scan(&gen, &sealed)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, s.errorf("cannot read: %w", err)
		}
	}
	d := &Data{Accounts: map[string]Entry{}}
	if sealed != nil {
		if d, err = s.open(sealed); err != nil {
			return nil, err
		}
	} else {
		gen = 0 // no row: an empty store
	}
	s.remember(gen, true)
	return d, nil
}

func (s *PGStore) open(sealed []byte) (*Data, error) {
	d, err := openData(s.aead, sealed)
	switch {
	case errors.Is(err, errNotSealed):
		return nil, s.errorf("its row is not a sealed mailproxy token store, or truncated; delete the row and sign in again (mailproxy token add)")
	case errors.Is(err, errCannotOpen):
		return nil, s.errorf("cannot decrypt: wrong key or damaged row (the row was left as it is; check token_store.key)")
	case err != nil:
		return nil, s.errorf("%w", err)
	}
	return d, nil
}

// Save implements Store: the sealed row, its generation bumped, and a
// notification for the other replicas, in one transaction.
func (s *PGStore) Save(ctx context.Context, d *Data) error {
	sealed, err := sealData(s.aead, d)
	if err != nil {
		return s.errorf("cannot seal: %w", err)
	}
	var gen int64
	save := func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `insert into mailproxy_tokens (id, generation, sealed) values (1, 1, $1)
			on conflict (id) do update set generation = mailproxy_tokens.generation + 1, sealed = excluded.sealed, updated = now()
			returning generation`, sealed).Scan(&gen)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "select pg_notify('"+pgChannel+"', $1)", strconv.FormatInt(gen, 10))
		return err
	}
	// Up to three times, as Lock: a rotated refresh token may be waiting
	// to be saved.
	for range 3 {
		if err = pgx.BeginFunc(ctx, s.pool, save); err == nil || ctx.Err() != nil {
			break
		}
	}
	// After a failed commit the row may hold d or not: the next Load reads it.
	s.remember(gen, err == nil)
	if err != nil {
		return s.errorf("cannot write: %w", err)
	}
	return nil
}

func (s *PGStore) remember(gen int64, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen, s.known = gen, known
}

// Watch signals on the returned channel when another process may have
// written the store: on each notification from a Save, and each time it
// starts listening, since notifications may have been missed meanwhile.
// The channel holds one signal; it is never closed. Watch listens on a
// connection of its own, reconnecting with backoff, until ctx ends.
func (s *PGStore) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	go s.watch(ctx, ch)
	return ch
}

func (s *PGStore) watch(ctx context.Context, ch chan<- struct{}) {
	signal := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	backoff := time.Second
	failing := false // since the last WARN
	listening := func() {
		if failing {
			s.logger.Info("token store: listening for other replicas' changes again", "store", s.name)
			failing = false
		}
		backoff = time.Second
		signal()
	}
	for {
		err := s.listen(ctx, listening, signal)
		if ctx.Err() != nil {
			return
		}
		if !failing {
			s.logger.Warn("token store: not listening for other replicas' changes; reconnecting",
				"store", s.name, "err", s.redact(err))
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// listen connects, listens on pgChannel, calls listening, then notified
// for each notification, until the connection fails or ctx ends.
func (s *PGStore) listen(ctx context.Context, listening, notified func()) error {
	cc := s.pool.Config().ConnConfig.Copy()
	// Cut the connection on a cancelled context, with no cancel request:
	// a quiet wait ends that way every pgQuiet.
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	setup, cancel := context.WithTimeout(ctx, cc.ConnectTimeout+pgCleanup)
	defer cancel()
	conn, err := pgx.ConnectConfig(setup, cc)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), pgCleanup)
		defer cancel()
		conn.Close(ctx)
	}()
	if _, err := conn.Exec(setup, "listen "+pgChannel); err != nil {
		return err
	}
	listening()
	for {
		wait, cancel := context.WithTimeout(ctx, pgQuiet)
		_, err := conn.WaitForNotification(wait)
		cancel()
		switch {
		case err == nil:
			notified()
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection still works.
			check, cancel := context.WithTimeout(ctx, pgCleanup)
			err = conn.Ping(check)
			cancel()
			if err != nil {
				return err
			}
		default:
			return err
		}
	}
}

// errorf returns an error about the store: "token store NAME: " and the
// formatted text.
func (s *PGStore) errorf(format string, args ...any) error {
	return s.redact(fmt.Errorf("token store %s: "+format, append([]any{s.name}, args...)...))
}

// redact masks the DSN's password in err's text, should a cause ever quote
// it; errors.Is and errors.As still see the cause.
func (s *PGStore) redact(err error) error {
	if err == nil || s.password == "" || !strings.Contains(err.Error(), s.password) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), s.password, "xxxxx"), err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
