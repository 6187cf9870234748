// Package config reads mailproxy's YAML file into plain structs and checks it.
//
// A file holds named profiles. A profile is one upstream mailbox: the local
// listeners legacy apps connect to, the upstream servers mailproxy connects
// to, and the credential it gets tokens with. Secrets are given by reference
// (${env:NAME} or file:/path) and never printed.
//
// Decode reads and checks the structure without touching anything outside
// the file; Resolve then reads the secrets and checks the files the
// configuration names; Parse and Load do both. The package never opens a
// socket or calls a token endpoint.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the whole file.
type Config struct {
	// TokenStore is where refresh tokens that rotate are kept, encrypted.
	TokenStore *TokenStore `yaml:"token_store"`
	// Profiles by name.
	Profiles map[string]*Profile `yaml:"profiles"`
	// Log sets the log level: debug, info (default), warn, error.
	Log Log `yaml:"log"`
	// Admin is the operators' HTTP server (off unless configured).
	Admin *Admin `yaml:"admin"`
	// Alerts say when a person must sign in again.
	Alerts Alerts `yaml:"alerts"`
	// Limits bound what clients of the local listeners may take.
	Limits Limits `yaml:"limits"`
	// ShutdownGrace is how long messages in flight may take to finish
	// after SIGTERM (default 30s, at most 10m).
	ShutdownGrace Duration `yaml:"shutdown_grace"`

	// lines maps key paths to the lines they are written on, for Problems.
	lines map[string]int
	// profileAt is the line each profile's name is written on (its block
	// runs to the next profile's).
	profileAt map[string]int
}

// Limits bound the connections and logins of local clients.
type Limits struct {
	// Connections is how many connections each local listener takes at
	// once; 0 (default) means a share of the process's open-file limit,
	// which the runtime computes.
	Connections int `yaml:"connections"`
	// ConnectionsPerAddress is how many connections one client address
	// not on loopback may have open (default 100).
	ConnectionsPerAddress int `yaml:"connections_per_address"`
	// LoginTimeout is the time from a connection's start to a completed
	// local login: IMAP, POP3, SMTP AUTH (default 2m, at most 1h).
	LoginTimeout Duration `yaml:"login_timeout"`
	// FailedLogins is how many failed local logins one client address may
	// make per minute, across connections and protocols (default 30).
	FailedLogins int `yaml:"failed_logins"`
}

// Admin is the HTTP server with the credentials page, /healthz, /readyz
// and /metrics.
type Admin struct {
	// Listen is host:port; the host defaults to 127.0.0.1.
	Listen string `yaml:"listen"`
	// Username and Password (HTTP basic) and/or Token (bearer) protect it.
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	Token    Secret `yaml:"token"`
	// RedirectURL is the sign-in callback as registered with the provider
	// (default http://LISTEN/oauth/callback as the browser reached it).
	RedirectURL string `yaml:"redirect_url"`
	// TLS is required when Listen is not on loopback.
	TLS *LocalTLS `yaml:"tls"`
}

// Alerts configure notices to people.
type Alerts struct {
	// WebhookURL receives a JSON POST when a credential needs a person.
	WebhookURL Secret `yaml:"webhook_url"`
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"` // text (default) or json
}

// TokenStore is where refresh tokens are kept, sealed with Key: a file
// (Path), or a PostgreSQL database that replicas share (Postgres).
type TokenStore struct {
	Path string `yaml:"path"`
	// Postgres is a connection string (postgres://user:password@host/db or
	// key=value); it may hold a password, so it is a secret.
	Postgres Secret `yaml:"postgres"`
	// Key is 32 random bytes, base64 (mailproxy key generate).
	Key Secret `yaml:"key"`
}

// Where names the store for people, never with a password.
func (ts *TokenStore) Where() string {
	if ts.Path != "" {
		return ts.Path
	}
	return "the PostgreSQL token store (token_store.postgres)"
}

// Profile is one upstream mailbox and how local apps reach it.
type Profile struct {
	// Name is the key in profiles; set by Load.
	Name string `yaml:"-"`
	// Inherit names a profile whose settings this one starts from.
	Inherit string `yaml:"inherit"`
	// Mailbox is the upstream address: the XOAUTH2 user= (OAUTHBEARER a=)
	// and the default login for basic auth. For a shared mailbox it differs
	// from the account that owns the token (credentials.account).
	Mailbox string `yaml:"mailbox"`

	// Graph makes the profile talk to Microsoft Graph instead of mail
	// servers: its smtp and pop3 listeners have no upstream.
	Graph *Graph `yaml:"graph"`

	SMTP *SMTP      `yaml:"smtp"`
	IMAP *Receiving `yaml:"imap"`
	POP3 *POP3      `yaml:"pop3"`

	// LocalUsers are the logins local apps use. Each has its own password
	// so one app can be revoked alone.
	LocalUsers []LocalUser `yaml:"local_users"`
	// Credentials is how mailproxy authenticates upstream.
	Credentials Credentials `yaml:"credentials"`
}

// LocalUser is one local login.
type LocalUser struct {
	// Name labels the credential in logs (defaults to Username).
	Name     string `yaml:"name"`
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
}

// Local auth modes.
const (
	LocalAuthPassword = "password"
	LocalAuthNone     = "none"
)

// Upstream TLS modes.
const (
	TLSImplicit = "implicit"
	TLSStartTLS = "starttls"
	TLSNone     = "none"
)

// Listener is a local address legacy apps connect to.
type Listener struct {
	// Listen is host:port; the host defaults to 127.0.0.1.
	Listen string    `yaml:"listen"`
	TLS    *LocalTLS `yaml:"tls"`
}

// LocalTLS is a certificate for a local listener.
type LocalTLS struct {
	// Mode is starttls (offer STARTTLS/STLS) or implicit (TLS from the
	// first byte).
	Mode     string `yaml:"mode"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Required refuses logins before STARTTLS (IMAP LOGINDISABLED). It is
	// always on for a listener that is not on loopback.
	Required bool `yaml:"required"`
}

// Upstream is a server mailproxy logs in to.
type Upstream struct {
	// Host is host[:port]; without a port, the protocol's port for the TLS
	// mode (SMTP 465/587/25, IMAP 993/143, POP3 995/110).
	Host string `yaml:"host"`
	// TLS is implicit, starttls or none (default: starttls for SMTP,
	// implicit for IMAP and POP3).
	TLS string `yaml:"tls"`
	// CAFile is a PEM bundle to trust instead of the system roots.
	CAFile string `yaml:"ca_file"`
	// Mechanism is xoauth2 (default for token credentials), oauthbearer,
	// plain (SASL PLAIN) or login (the protocol's password login: SMTP AUTH
	// LOGIN, IMAP LOGIN, POP3 USER/PASS).
	Mechanism string `yaml:"mechanism"`
}

// SMTP is the sending side of a profile.
type SMTP struct {
	Listener `yaml:",inline"`
	// LocalAuth is "password" (default) or "none" (apps that send no AUTH;
	// loopback only).
	LocalAuth string `yaml:"local_auth"`
	// MaxMessageBytes is advertised in SIZE; 0 means 50 MiB.
	MaxMessageBytes int64        `yaml:"max_message_bytes"`
	Upstream        SMTPUpstream `yaml:"upstream"`
}

// SMTPUpstream is the server mailproxy delivers to.
type SMTPUpstream struct {
	Upstream `yaml:",inline"`
	// MessagesPerSession is how many messages one upstream session carries
	// before it is closed and a new one opened (default 3).
	MessagesPerSession int `yaml:"messages_per_session"`
	// Timeout is how long one read or write to the upstream server may
	// wait (default 2m, at most 30m).
	Timeout Duration `yaml:"timeout"`
}

// Receiving is a receiving side of a profile (IMAP or POP3): after the
// local login, mailproxy logs in upstream and relays every byte both ways.
type Receiving struct {
	Listener `yaml:",inline"`
	Upstream Upstream `yaml:"upstream"`
}

// POP3 is the POP3 side of a profile. On a Graph profile, the maildrop is
// a Graph mail folder.
type POP3 struct {
	Receiving `yaml:",inline"`
	// Folder is the Graph folder served as the maildrop: a well-known name
	// (inbox, the default; junkemail, archive, ...) or a folder id.
	Folder string `yaml:"folder"`
	// Dele is what a DELE does at QUIT on a Graph profile: move (the
	// default: to Deleted Items, as Outlook's delete) or delete (to
	// Recoverable Items, out of the person's view).
	Dele string `yaml:"dele"`
}

// receiving is the POP3 section as a Receiving (nil if there is none).
func (p *POP3) receiving() *Receiving {
	if p == nil {
		return nil
	}
	return &p.Receiving
}

// Graph is a Microsoft 365 mailbox reached through Microsoft Graph.
type Graph struct {
	// User is the Graph user: its object id (CMO's UserObjectId) or user
	// principal name (default: the profile's mailbox). App-only tokens use
	// /users/{user}; delegated ones /me.
	User string `yaml:"user"`
	// Endpoint is Graph's base URL (default https://graph.microsoft.com/v1.0;
	// national clouds and tests change it).
	Endpoint string `yaml:"endpoint"`
	// CAFile is a PEM bundle to trust instead of the system roots.
	CAFile string `yaml:"ca_file"`
	// StateDir is where an imap listener over Graph keeps each mailbox's
	// UIDs, flags and delta links, and its cache of bodies (default
	// DefaultGraphStateDir). Losing it makes clients resynchronise.
	StateDir string `yaml:"state_dir"`
	// PollInterval is how often IDLE asks Graph for changes (default 15s).
	PollInterval Duration `yaml:"poll_interval"`
	// CacheMB bounds the cache of bodies on disk, per mailbox (default 512).
	CacheMB int `yaml:"cache_mb"`
}

// Graph defaults.
const (
	DefaultGraphEndpoint = "https://graph.microsoft.com/v1.0"
	// DefaultGraphScope is what an app-only credential asks for: the
	// application permissions granted to it (Mail.Send, Mail.ReadWrite).
	DefaultGraphScope = "https://graph.microsoft.com/.default"
	// DefaultGraphMaxMessageBytes is Exchange Online's default message
	// size limit.
	DefaultGraphMaxMessageBytes = 35 << 20
	// DefaultGraphPollInterval is IDLE's default polling interval.
	DefaultGraphPollInterval = 15 * time.Second
	// DefaultGraphCacheMB is the default bound of the cache of bodies.
	DefaultGraphCacheMB = 512
	// DeleMove and DeleDelete are pop3.dele's values.
	DeleMove   = "move"
	DeleDelete = "delete"
)

// DefaultGraphStateDir is graph.state_dir's default: systemd's
// $STATE_DIRECTORY (StateDirectory=) when set, else
// $XDG_STATE_HOME/mailproxy, else ~/.local/state/mailproxy; with graph
// below it. The container image sets STATE_DIRECTORY=/var/lib/mailproxy.
func DefaultGraphStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		d, _, _ = strings.Cut(d, ":") // several directories: the first
		return filepath.Join(d, "graph")
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mailproxy", "graph")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, ".local", "state", "mailproxy", "graph")
}

// DefaultGraphDelegatedScopes are what a person grants for Graph mail.
var DefaultGraphDelegatedScopes = []string{
	"https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send",
	"offline_access", "openid", "profile",
}

// Load reads, resolves and validates the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads a configuration from YAML as Decode does, then resolves it
// (Resolve). Every problem of both is reported at once, each with its key
// path and line.
func Parse(data []byte) (*Config, error) {
	cfg, err := decode(data)
	if err != nil {
		return nil, err
	}
	ps := problems{lines: cfg.lines}
	cfg.validate(&ps)
	cfg.resolve(&ps)
	if err := ps.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Decode reads a configuration from YAML, applies inheritance and defaults
// and validates it (Validate), without reading a secret or a file it names:
// that is Resolve's. Every problem is reported at once, each with its key
// path and line.
func Decode(data []byte) (*Config, error) {
	cfg, err := decode(data)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode turns YAML into a Config with inheritance and defaults applied.
func decode(data []byte) (*Config, error) {
	// Inheritance never changes which keys or types exist, so the file as
	// written is checked for them, and errors name its lines.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var check Config
	if err := dec.Decode(&check); err != nil && !errors.Is(err, io.EOF) {
		var de *durationError
		if errors.As(err, &de) {
			var doc yaml.Node
			if yaml.Unmarshal(data, &doc) == nil {
				if path := pathAt(&doc, de.line, de.column); path != "" {
					return nil, Problem{Path: path, Line: de.line, Msg: de.msg()}
				}
			}
		}
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	cfg := &Config{}
	if doc.Kind != 0 {
		cfg.profileAt = profileLines(&doc)
		if err := inherit(&doc); err != nil {
			return nil, err
		}
		if err := doc.Decode(cfg); err != nil {
			return nil, err
		}
		cfg.lines = keyLines(&doc)
	}
	for name, p := range cfg.Profiles {
		if p == nil {
			p = &Profile{}
			cfg.Profiles[name] = p
		}
		p.Name = name
	}
	cfg.applyDefaults()
	return cfg, nil
}

// ProfileNames returns the profile names, sorted.
func (c *Config) ProfileNames() []string {
	names := make([]string, 0, len(c.Profiles))
	for n := range c.Profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
