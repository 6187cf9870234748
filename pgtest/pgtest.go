// Package pgtest starts throwaway PostgreSQL clusters for tests: initdb in
// a temporary directory, a server on a loopback port, a role and a database
// for mailproxy. It drives the installed binaries with os/exec and never
// touches a system cluster or its data.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Role and Database are what Start creates for mailproxy.
const (
	Role     = "mailproxy"
	Database = "mailproxy"
)

// notInstalled is why a test cannot run here.
const notInstalled = "PostgreSQL is not installed (apt install postgresql)"

// commandTimeout bounds every command Start and the helpers run.
const commandTimeout = 2 * time.Minute

// Cluster is a running test cluster.
type Cluster struct {
	// DSN reaches Database as Role over TCP:
	// postgres://mailproxy:PASSWORD@127.0.0.1:PORT/mailproxy?sslmode=disable.
	DSN string
	// Password is Role's password, random per cluster, so that tests can
	// assert it never leaks.
	Password string
	// Port is the TCP port on 127.0.0.1.
	Port int

	bin    string   // the directory of initdb, pg_ctl and psql
	dir    string   // temporary, owned by the postgres user: data/, sock/, log
	asUser []string // runs a command as the postgres user; empty when not root
	dbs    atomic.Int32
}

// Start starts a cluster on 127.0.0.1:port (a free port when port is 0)
// and stops and removes it when t ends. Without PostgreSQL it skips t, or
// fails it when MAILPROXY_E2E_REQUIRED=1 (CI, where a skip hides a gap).
func Start(t testing.TB, port int) *Cluster {
	t.Helper()
	bin := findBin()
	if bin == "" {
		missing(t, notInstalled)
	}
	c := &Cluster{bin: bin, Port: port, Password: randomHex(16)}
	if c.Port == 0 {
		c.Port = freePort(t)
	}
	var uid, gid int
	if os.Geteuid() == 0 {
		// postgres refuses to run as root: run it as Debian's postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			missing(t, notInstalled+": no postgres user")
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		c.asUser = []string{"setpriv", "--reuid=" + u.Uid, "--regid=" + u.Gid, "--clear-groups", "--"}
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	c.dir = dir
	t.Cleanup(func() {
		c.Stop()
		os.RemoveAll(dir)
	})
	for _, d := range []string{dir, c.sockDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		if c.asUser != nil {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
		}
	}

	c.run(t, "initdb", "-D", c.dataDir(), "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
		"--auth-host=scram-sha-256", "--auth-local=trust")
	c.Up(t)
	c.psql(t, fmt.Sprintf("create role %s login password '%s'", Role, c.Password))
	c.psql(t, fmt.Sprintf("create database %s owner %s", Database, Role))
	c.DSN = c.dsnFor(Database)
	return c
}

// NewDatabase creates an empty database owned by Role and returns its DSN:
// a clean slate for one test on a shared cluster.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d", Database, c.dbs.Add(1))
	c.psql(t, fmt.Sprintf("create database %s owner %s", name, Role))
	return c.dsnFor(name)
}

// Down stops the server (fast: sessions end); the data stays for Up.
func (c *Cluster) Down(t testing.TB) {
	t.Helper()
	c.run(t, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w")
}

// Up starts the server again on the same port and data, and returns once
// it accepts connections.
func (c *Cluster) Up(t testing.TB) {
	t.Helper()
	c.run(t, "pg_ctl", "start", "-D", c.dataDir(), "-l", c.logFile(), "-w", "-o", c.serverOptions())
}

// Restart restarts the server the way a database restart looks to
// clients: their sessions end, and it accepts connections again.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.run(t, "pg_ctl", "restart", "-D", c.dataDir(), "-l", c.logFile(), "-m", "fast", "-w", "-o", c.serverOptions())
}

// Stop stops the server if it runs. Cleanup calls it; so may a test.
func (c *Cluster) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	_ = c.command(ctx, "pg_ctl", "stop", "-D", c.dataDir(), "-m", "fast", "-w").Run() // fails when it is not running: nothing to do then
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) sockDir() string { return filepath.Join(c.dir, "sock") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "log") }

func (c *Cluster) serverOptions() string {
	return fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off", c.Port, c.sockDir())
}

func (c *Cluster) dsnFor(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", Role, c.Password, c.Port, db)
}

// psql runs sql as the superuser over the unix socket (trusted).
func (c *Cluster) psql(t testing.TB, sql string) {
	t.Helper()
	c.run(t, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", c.sockDir(), "-p", strconv.Itoa(c.Port),
		"-U", "postgres", "-d", "postgres", "-c", sql)
}

// run runs one of the cluster's programs as the postgres user and fails t
// with its output (and the server's log) when it fails.
func (c *Cluster) run(t testing.TB, prog string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	start := time.Now()
	out, err := c.command(ctx, prog, args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(c.logFile())
		t.Fatalf("pgtest: %s %s: %v after %v\n%s\nserver log:\n%s", prog, strings.Join(args, " "), err,
			time.Since(start).Round(time.Millisecond), out, tail(log, 2000))
	}
}

// command is prog from the cluster's binaries, run as the postgres user
// in the cluster's directory.
func (c *Cluster) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	argv := append(slices.Clone(c.asUser), filepath.Join(c.bin, prog))
	argv = append(argv, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = c.dir
	cmd.Env = cleanEnv()
	return cmd
}

// findBin returns the newest /usr/lib/postgresql/VERSION/bin (Debian's
// layout), or "".
func findBin() string {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	best, bestVersion := "", -1.0
	for _, p := range found {
		bin := filepath.Dir(p)
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(bin)), 64) // "15", "9.6"
		if err == nil && v > bestVersion {
			best, bestVersion = bin, v
		}
	}
	return best
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("MAILPROXY_E2E_REQUIRED") == "1" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// cleanEnv is the environment without PG* variables, which would point
// the clients elsewhere.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return append(env, "LC_ALL=C")
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pgtest: no free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
