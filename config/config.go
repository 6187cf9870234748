// Package config reads mailproxy's YAML file into plain structs and checks it.
//
// A file holds named profiles. A profile is one upstream mailbox: the local
// listeners legacy apps connect to, the upstream servers mailproxy connects
// to, and the credential it gets tokens with. Secrets are given by reference
// (${env:NAME} or file:/path) and never printed.
//
// The package only reads and checks; it never opens a socket or calls a
// token endpoint.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

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

// TokenStore is the encrypted file of refresh tokens.
type TokenStore struct {
	Path string `yaml:"path"`
	// Key is 32 random bytes, base64 (mailproxy key generate).
	Key Secret `yaml:"key"`
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

	SMTP *SMTP      `yaml:"smtp"`
	IMAP *Receiving `yaml:"imap"`
	POP3 *Receiving `yaml:"pop3"`

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
}

// Receiving is a receiving side of a profile (IMAP or POP3): after the
// local login, mailproxy logs in upstream and relays every byte both ways.
type Receiving struct {
	Listener `yaml:",inline"`
	Upstream Upstream `yaml:"upstream"`
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

// Parse reads a configuration from YAML, applies inheritance and defaults,
// resolves secret references and validates it. Every problem is reported at
// once, each with its key path.
func Parse(data []byte) (*Config, error) {
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if err := inherit(raw); err != nil {
		return nil, err
	}
	merged, err := yaml.Marshal(raw)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(merged))
	dec.KnownFields(true)
	var cfg Config
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	for name, p := range cfg.Profiles {
		if p == nil {
			p = &Profile{}
			cfg.Profiles[name] = p
		}
		p.Name = name
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
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

// inherit merges each profile's "inherit" parent into it, recursively,
// so an override states only what differs.
func inherit(raw map[string]any) error {
	profiles, _ := raw["profiles"].(map[string]any)
	done := map[string]bool{}
	var resolve func(name string, seen []string) error
	resolve = func(name string, seen []string) error {
		if done[name] {
			return nil
		}
		p, _ := profiles[name].(map[string]any)
		parent, _ := p["inherit"].(string)
		if parent == "" {
			done[name] = true
			return nil
		}
		for _, s := range seen {
			if s == parent {
				return fmt.Errorf("profiles.%s.inherit: cycle %v -> %s", name, seen, parent)
			}
		}
		if _, ok := profiles[parent].(map[string]any); !ok {
			return fmt.Errorf("profiles.%s.inherit: no profile named %q", name, parent)
		}
		if err := resolve(parent, append(seen, name)); err != nil {
			return err
		}
		merged := deepMerge(profiles[parent].(map[string]any), p)
		merged["inherit"] = parent
		profiles[name] = merged
		done[name] = true
		return nil
	}
	for name := range profiles {
		if err := resolve(name, nil); err != nil {
			return err
		}
	}
	return nil
}

// deepMerge returns base overlaid with over; maps merge, anything else is replaced.
func deepMerge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bm, ok1 := out[k].(map[string]any)
		om, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = deepMerge(bm, om)
			continue
		}
		out[k] = v
	}
	return out
}
