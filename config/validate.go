package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Problem is one thing wrong with the file, at a key path.
type Problem struct {
	Path string
	Msg  string
}

func (p Problem) Error() string { return p.Path + ": " + p.Msg }

type problems []error

func (ps *problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// DefaultListenHost is where listeners bind unless told otherwise.
const DefaultListenHost = "127.0.0.1"

// DefaultMessagesPerSession follows CMO's NumberOfMessagesPerSession.
const DefaultMessagesPerSession = 3

// DefaultMaxMessageBytes is the SIZE advertised when none is configured.
const DefaultMaxMessageBytes = 50 << 20

func (c *Config) applyDefaults() {
	if c.Admin != nil {
		c.Admin.Listen = withDefaultHost(c.Admin.Listen)
	}
	for _, p := range c.Profiles {
		cr := &p.Credentials
		switch cr.Type {
		case CredMicrosoft365:
			if cr.Authority == "" {
				cr.Authority = DefaultMicrosoftAuthority
			}
			if cr.App == "" {
				cr.App = AppConfidential
			}
			if len(cr.Scopes) == 0 {
				cr.Scopes = []string{DefaultMicrosoftScope}
				if cr.App == AppPublic {
					cr.Scopes = DefaultMicrosoftDelegatedScopes
				}
			}
			if cr.App == AppPublic && cr.RedirectURL == "" {
				cr.RedirectURL = "http://localhost"
			}
		case CredGoogleServiceAccount:
			if len(cr.Scopes) == 0 {
				cr.Scopes = []string{DefaultGoogleScope}
			}
			if cr.Impersonate == "" {
				cr.Impersonate = p.Mailbox
			}
		case CredOAuth2:
			cr.applyProvider()
			if cr.Grant == "" {
				cr.Grant = GrantClientCredentials
				if cr.RefreshToken.IsSet() || cr.AuthorizeURL != "" || cr.DeviceURL != "" {
					cr.Grant = GrantRefreshToken
				}
			}
			if cr.PKCE == nil {
				yes := true
				cr.PKCE = &yes
			}
			if cr.RedirectURL == "" {
				cr.RedirectURL = "http://localhost"
			}
		case CredBasic:
			if cr.Username == "" {
				cr.Username = p.Mailbox
			}
		}
		for i := range p.LocalUsers {
			if p.LocalUsers[i].Name == "" {
				p.LocalUsers[i].Name = p.LocalUsers[i].Username
			}
		}
		if (cr.Type == CredOAuth2 || cr.Type == CredMicrosoft365) && cr.Account == "" {
			cr.Account = p.Mailbox
		}
		basic := cr.Type == CredBasic
		if s := p.SMTP; s != nil {
			s.Listen = withDefaultHost(s.Listen)
			if s.LocalAuth == "" {
				s.LocalAuth = LocalAuthPassword
			}
			if s.MaxMessageBytes == 0 {
				s.MaxMessageBytes = DefaultMaxMessageBytes
			}
			if s.Upstream.MessagesPerSession == 0 {
				s.Upstream.MessagesPerSession = DefaultMessagesPerSession
			}
			s.Upstream.applyDefaults(TLSStartTLS, "plain", basic, smtpPorts)
		}
		if r := p.IMAP; r != nil {
			r.Listen = withDefaultHost(r.Listen)
			r.Upstream.applyDefaults(TLSImplicit, "login", basic, imapPorts)
		}
		if r := p.POP3; r != nil {
			r.Listen = withDefaultHost(r.Listen)
			r.Upstream.applyDefaults(TLSImplicit, "login", basic, pop3Ports)
		}
	}
}

// The ports that follow each protocol's TLS mode.
var (
	smtpPorts = map[string]string{TLSImplicit: "465", TLSStartTLS: "587", TLSNone: "25"}
	imapPorts = map[string]string{TLSImplicit: "993", TLSStartTLS: "143", TLSNone: "143"}
	pop3Ports = map[string]string{TLSImplicit: "995", TLSStartTLS: "110", TLSNone: "110"}
)

func (u *Upstream) applyDefaults(tls, basicMech string, basic bool, ports map[string]string) {
	if u.TLS == "" {
		u.TLS = tls
	}
	if u.Mechanism == "" {
		u.Mechanism = "xoauth2"
		if basic {
			u.Mechanism = basicMech
		}
	}
	u.Host = withDefaultPort(u.Host, u.TLS, ports)
}

// withDefaultHost turns ":2525" or "2525" into "127.0.0.1:2525".
func withDefaultHost(addr string) string {
	if addr == "" {
		return ""
	}
	if !strings.Contains(addr, ":") {
		return net.JoinHostPort(DefaultListenHost, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err == nil && host == "" {
		return net.JoinHostPort(DefaultListenHost, port)
	}
	return addr
}

// withDefaultPort adds the port that follows the TLS mode when host has none.
func withDefaultPort(host, tls string, ports map[string]string) string {
	if host == "" {
		return ""
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if p, ok := ports[tls]; ok {
		return net.JoinHostPort(strings.Trim(host, "[]"), p)
	}
	return host
}

// IsLoopback reports whether a listen address binds to loopback only.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Validate checks the whole configuration and returns every problem joined,
// each naming its key path and what to do.
func (c *Config) Validate() error {
	var ps problems
	if len(c.Profiles) == 0 {
		ps.add("profiles", "no profiles: add at least one (see README, Configuration)")
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		ps.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		ps.add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if ts := c.TokenStore; ts != nil {
		if ts.Path == "" {
			ps.add("token_store.path", "required: a file mailproxy may write (mode 0600)")
		}
		c.secret(&ps, "token_store.key", &ts.Key, true)
	}
	for _, name := range c.ProfileNames() {
		c.validateProfile(&ps, c.Profiles[name])
	}
	c.validateSharedListeners(&ps)
	if a := c.Admin; a != nil {
		c.validateAdmin(&ps, a)
	}
	c.secret(&ps, "alerts.webhook_url", &c.Alerts.WebhookURL, false)
	if u := c.Alerts.WebhookURL; u.IsSet() && u.resolve() == nil && !strings.HasPrefix(u.Value(), "https://") && !strings.HasPrefix(u.Value(), "http://") {
		ps.add("alerts.webhook_url", "not an http(s) URL")
	}
	return errors.Join(ps...)
}

func (c *Config) validateAdmin(ps *problems, a *Admin) {
	if a.Listen == "" {
		ps.add("admin.listen", "required: host:port of the admin page and probes, e.g. 127.0.0.1:8025")
	} else if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		ps.add("admin.listen", "%q is not host:port", a.Listen)
	}
	c.secret(ps, "admin.password", &a.Password, false)
	c.secret(ps, "admin.token", &a.Token, false)
	if (a.Username == "") != !a.Password.IsSet() {
		ps.add("admin.username", "give username and password together")
	}
	if a.Username == "" && !a.Token.IsSet() {
		ps.add("admin.password", "required: the admin page is never open; give username and password, or a bearer token")
	}
	if a.Listen != "" && !IsLoopback(a.Listen) && a.TLS == nil {
		ps.add("admin.tls", "required when admin.listen is not on loopback (%s): give cert_file and key_file", a.Listen)
	}
	if t := a.TLS; t != nil {
		fileExists(ps, "admin.tls.cert_file", t.CertFile)
		fileExists(ps, "admin.tls.key_file", t.KeyFile)
	}
}

func (c *Config) secret(ps *problems, path string, s *Secret, required bool) {
	if !s.IsSet() {
		if required {
			ps.add(path, "required: give it inline, as ${env:NAME} or as file:/path")
		}
		return
	}
	if err := s.resolve(); err != nil {
		ps.add(path, "%v", err)
	}
}

func fileExists(ps *problems, path, file string) {
	if file == "" {
		return
	}
	if _, err := os.Stat(file); err != nil {
		ps.add(path, "cannot read %s: %v", file, errors.Unwrap(err))
	}
}

func (c *Config) validateProfile(ps *problems, p *Profile) {
	at := "profiles." + p.Name
	if p.SMTP == nil && p.IMAP == nil && p.POP3 == nil {
		ps.add(at, "no listener: add smtp, imap or pop3")
	}
	if p.Mailbox == "" {
		ps.add(at+".mailbox", "required: the upstream mailbox address (e.g. crm@contoso.com)")
	}
	c.validateCredentials(ps, at+".credentials", p)
	needsPasswords := false
	if s := p.SMTP; s != nil {
		sa := at + ".smtp"
		validateListener(ps, sa, s.Listener, s.LocalAuth)
		needsPasswords = s.LocalAuth == LocalAuthPassword
		validateUpstream(ps, sa+".upstream", s.Upstream.Upstream, p.Credentials.Type, "smtp.office365.com")
		if s.Upstream.MessagesPerSession < 1 {
			ps.add(sa+".upstream.messages_per_session", "must be 1 or more")
		}
		if s.MaxMessageBytes < 0 {
			ps.add(sa+".max_message_bytes", "must be positive")
		}
	}
	for _, r := range []struct {
		at  string
		rcv *Receiving
		eg  string
	}{{at + ".imap", p.IMAP, "outlook.office365.com"}, {at + ".pop3", p.POP3, "outlook.office365.com"}} {
		if r.rcv == nil {
			continue
		}
		// An IMAP or POP3 login always names a user: there is no "none".
		validateListener(ps, r.at, r.rcv.Listener, LocalAuthPassword)
		validateUpstream(ps, r.at+".upstream", r.rcv.Upstream, p.Credentials.Type, r.eg)
		needsPasswords = true
	}
	if needsPasswords && len(p.LocalUsers) == 0 {
		ps.add(at+".local_users", "required: add a username and password for each app (local_auth: none exists only for smtp)")
	}
	seen := map[string]bool{}
	for i := range p.LocalUsers {
		u := &p.LocalUsers[i]
		ua := fmt.Sprintf("%s.local_users[%d]", at, i)
		if u.Username == "" {
			ps.add(ua+".username", "required: the login name the app uses")
		}
		if seen[u.Username] {
			ps.add(ua+".username", "%q is listed twice", u.Username)
		}
		seen[u.Username] = true
		c.secret(ps, ua+".password", &u.Password, true)
	}
}

func validateUpstream(ps *problems, at string, u Upstream, credType, example string) {
	if u.Host == "" {
		ps.add(at+".host", "required: the upstream server, host[:port] (e.g. %s)", example)
	}
	switch u.TLS {
	case TLSImplicit, TLSStartTLS, TLSNone:
	default:
		ps.add(at+".tls", "%q is not one of starttls, implicit, none", u.TLS)
	}
	fileExists(ps, at+".ca_file", u.CAFile)
	validateMechanism(ps, at+".mechanism", u.Mechanism, credType)
}

func validateListener(ps *problems, at string, l Listener, localAuth string) {
	listen, t := l.Listen, l.TLS
	if listen == "" {
		ps.add(at+".listen", "required: host:port to listen on (e.g. 127.0.0.1:2525)")
		return
	}
	if _, _, err := net.SplitHostPort(listen); err != nil {
		ps.add(at+".listen", "%q is not host:port", listen)
		return
	}
	switch localAuth {
	case LocalAuthPassword:
	case LocalAuthNone:
		if !IsLoopback(listen) {
			ps.add(at+".local_auth", "none is allowed on loopback only; listen on 127.0.0.1 or use password")
		}
	default:
		ps.add(at+".local_auth", "%q is not one of password, none", localAuth)
	}
	if t != nil {
		switch t.Mode {
		case TLSStartTLS, TLSImplicit:
		default:
			ps.add(at+".tls.mode", "%q is not one of starttls, implicit", t.Mode)
		}
		if t.CertFile == "" || t.KeyFile == "" {
			ps.add(at+".tls", "cert_file and key_file are both required")
		}
		fileExists(ps, at+".tls.cert_file", t.CertFile)
		fileExists(ps, at+".tls.key_file", t.KeyFile)
	}
	if !IsLoopback(listen) && t == nil {
		ps.add(at+".listen", "%s is not loopback: configure tls (cert_file, key_file) and local_auth: password, or listen on 127.0.0.1", listen)
	}
}

// RequiresTLS reports whether logins on l must wait for TLS: when asked,
// and always off loopback.
func (l Listener) RequiresTLS() bool {
	return l.TLS != nil && (l.TLS.Required || !IsLoopback(l.Listen))
}

func validateMechanism(ps *problems, at, mech, credType string) {
	switch mech {
	case "xoauth2", "oauthbearer":
		if credType == CredBasic {
			ps.add(at, "%s needs a token credential; with type basic use plain or login", mech)
		}
	case "plain", "login":
		if credType != CredBasic && credType != "" {
			ps.add(at, "%s sends a password; credentials of type %s give tokens: use xoauth2 or oauthbearer", mech, credType)
		}
	default:
		ps.add(at, "%q is not one of xoauth2, oauthbearer, plain, login", mech)
	}
}

func (c *Config) validateCredentials(ps *problems, at string, p *Profile) {
	cr := &p.Credentials
	req := func(field, value, why string) {
		if value == "" {
			ps.add(at+"."+field, "required for %s: %s", cr.Type, why)
		}
	}
	switch cr.Type {
	case CredMicrosoft365:
		req("tenant_id", cr.TenantID, "the directory (tenant) ID or domain from the Entra app registration")
		req("client_id", cr.ClientID, "the application (client) ID")
		if cr.App == AppPublic {
			req("account", cr.Account, "the account a person signs in with (defaults to mailbox)")
			if cr.ClientSecret.IsSet() || cr.CertificateFile != "" {
				ps.add(at+".app", "a public app has no client secret or certificate: remove them, or use app: confidential")
			}
			if c.TokenStore == nil {
				ps.add("token_store", "required for microsoft365 app: public: the signed-in accounts are kept there")
			}
			break
		}
		if cr.App != AppConfidential {
			ps.add(at+".app", "%q is not one of confidential, public", cr.App)
		}
		switch {
		case cr.ClientSecret.IsSet() && cr.CertificateFile != "":
			ps.add(at, "give client_secret or certificate_file, not both")
		case cr.ClientSecret.IsSet():
			c.secret(ps, at+".client_secret", &cr.ClientSecret, true)
		case cr.CertificateFile != "":
			fileExists(ps, at+".certificate_file", cr.CertificateFile)
			c.secret(ps, at+".certificate_password", &cr.CertificatePassword, false)
		default:
			ps.add(at+".client_secret", "required for microsoft365 confidential: a client secret, or certificate_file")
		}
	case CredGoogleServiceAccount:
		req("key_file", cr.KeyFile, "the service account key (.json, or legacy .p12)")
		fileExists(ps, at+".key_file", cr.KeyFile)
		if strings.EqualFold(filepath.Ext(cr.KeyFile), ".p12") {
			req("service_account", cr.ServiceAccount, "a .p12 key does not name its account: give the service account e-mail")
		}
		req("impersonate", cr.Impersonate, "the Workspace user to act as (defaults to mailbox)")
	case CredOAuth2:
		switch cr.Provider {
		case "", ProviderMicrosoft, ProviderGoogle:
		default:
			ps.add(at+".provider", "%q is not one of microsoft, google: give authorize_url, token_url and scopes instead", cr.Provider)
		}
		req("token_url", cr.TokenURL, "the provider's token endpoint")
		req("client_id", cr.ClientID, "the OAuth client ID")
		switch cr.Grant {
		case GrantClientCredentials:
			c.secret(ps, at+".client_secret", &cr.ClientSecret, true)
		case GrantRefreshToken:
			c.secret(ps, at+".client_secret", &cr.ClientSecret, false)
			c.secret(ps, at+".refresh_token", &cr.RefreshToken, false)
			if c.TokenStore == nil {
				ps.add("token_store", "required for grant refresh_token: signed-in accounts and rotated refresh tokens are kept there")
			}
			req("account", cr.Account, "who signs in (defaults to mailbox)")
			if cr.AuthorizeURL == "" && cr.DeviceURL == "" && !cr.RefreshToken.IsSet() {
				ps.add(at+".authorize_url", "required for grant refresh_token: where a person signs in (or device_url, or a provider preset), or a refresh_token to start from")
			}
			for _, u := range []struct{ key, v string }{{"authorize_url", cr.AuthorizeURL}, {"device_url", cr.DeviceURL}, {"token_url", cr.TokenURL}} {
				if strings.Contains(u.v, "{tenant}") && cr.TenantID == "" {
					ps.add(at+".tenant_id", "required: %s has a {tenant} placeholder", u.key)
				}
			}
		default:
			ps.add(at+".grant", "%q is not one of client_credentials, refresh_token", cr.Grant)
		}
	case CredBasic:
		req("username", cr.Username, "the upstream login")
		c.secret(ps, at+".password", &cr.Password, true)
	case "":
		ps.add(at+".type", "required: one of microsoft365, google_service_account, oauth2, basic")
	default:
		ps.add(at+".type", "%q is not one of microsoft365, google_service_account, oauth2, basic", cr.Type)
	}
}

// validateSharedListeners allows several profiles on one address when the
// login name can pick the profile: one protocol, password auth everywhere,
// the same TLS, and no username claimed twice.
func (c *Config) validateSharedListeners(ps *problems) {
	type first struct {
		profile, proto string
		l              Listener
		localAuth      string
	}
	seen := map[string]first{}
	owner := map[string]map[string]string{} // addr -> username -> profile
	for _, name := range c.ProfileNames() {
		p := c.Profiles[name]
		for _, ln := range p.Listeners() {
			at := "profiles." + name + "." + ln.Proto
			addr := ln.Listen
			if addr == "" {
				continue
			}
			f, shared := seen[addr]
			if !shared {
				seen[addr] = first{name, ln.Proto, ln.Listener, ln.LocalAuth}
				owner[addr] = map[string]string{}
			} else {
				if f.proto != ln.Proto {
					ps.add(at+".listen", "%s is already the %s listener of profile %q: give each protocol its own port", addr, f.proto, f.profile)
					continue
				}
				if ln.LocalAuth != LocalAuthPassword || f.localAuth != LocalAuthPassword {
					ps.add(at+".listen", "%s is shared with profile %q: shared listeners need local_auth: password, so the login picks the profile", addr, f.profile)
				}
				if !sameTLS(ln.TLS, f.l.TLS) {
					ps.add(at+".tls", "%s is shared with profile %q: give both the same tls", addr, f.profile)
				}
			}
			for _, u := range p.LocalUsers {
				if other, dup := owner[addr][u.Username]; dup && other != name {
					ps.add(at+".listen", "local username %q is used by profiles %q and %q on %s: the login must pick one profile", u.Username, other, name, addr)
				}
				owner[addr][u.Username] = name
			}
		}
	}
}

// ProfileListener is one local listener of a profile.
type ProfileListener struct {
	Proto string // smtp, imap or pop3
	Listener
	LocalAuth string
}

// Listeners lists the profile's local listeners.
func (p *Profile) Listeners() []ProfileListener {
	var out []ProfileListener
	if p.SMTP != nil {
		out = append(out, ProfileListener{"smtp", p.SMTP.Listener, p.SMTP.LocalAuth})
	}
	if p.IMAP != nil {
		out = append(out, ProfileListener{"imap", p.IMAP.Listener, LocalAuthPassword})
	}
	if p.POP3 != nil {
		out = append(out, ProfileListener{"pop3", p.POP3.Listener, LocalAuthPassword})
	}
	return out
}

func sameTLS(a, b *LocalTLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
