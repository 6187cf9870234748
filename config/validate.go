package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Problem is one thing wrong with the file, at a key path.
type Problem struct {
	Path string
	// Line is where Path is written in the file (an inherited value: in
	// the profile it is inherited from), or its nearest enclosing key when
	// Path is missing; 0 when unknown.
	Line int
	Msg  string
}

// Error is "line N: PATH: MSG", or "PATH: MSG" without a line.
func (p Problem) Error() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Path, p.Msg)
	}
	return p.Path + ": " + p.Msg
}

// problems collects Problems, each given the line of its path.
type problems struct {
	lines map[string]int // key path -> line
	errs  []error
}

func (ps *problems) add(path, format string, args ...any) {
	ps.addAt(path, lineOf(ps.lines, path), format, args...)
}

func (ps *problems) addAt(path string, line int, format string, args ...any) {
	ps.errs = append(ps.errs, Problem{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (ps *problems) err() error { return errors.Join(ps.errs...) }

// lineOf is the line of path, or of its nearest enclosing key that is
// written (a missing key points at the mapping it belongs in).
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// DefaultListenHost is where listeners bind unless told otherwise.
const DefaultListenHost = "127.0.0.1"

// DefaultMessagesPerSession follows CMO's NumberOfMessagesPerSession.
const DefaultMessagesPerSession = 3

// DefaultMaxMessageBytes is the SIZE advertised when none is configured.
const DefaultMaxMessageBytes = 50 << 20

// Defaults of limits, shutdown_grace and smtp.upstream.timeout.
const (
	DefaultConnectionsPerAddress = 100
	DefaultLoginTimeout          = Duration(2 * time.Minute)
	DefaultFailedLogins          = 30
	DefaultShutdownGrace         = Duration(30 * time.Second)
	DefaultUpstreamTimeout       = Duration(2 * time.Minute)
)

func (c *Config) applyDefaults() {
	l := &c.Limits
	if l.ConnectionsPerAddress == 0 {
		l.ConnectionsPerAddress = DefaultConnectionsPerAddress
	}
	if l.LoginTimeout == 0 {
		l.LoginTimeout = DefaultLoginTimeout
	}
	if l.FailedLogins == 0 {
		l.FailedLogins = DefaultFailedLogins
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if c.Admin != nil {
		c.Admin.Listen = withDefaultHost(c.Admin.Listen)
	}
	for _, p := range c.Profiles {
		cr := &p.Credentials
		graph := p.Graph != nil
		if g := p.Graph; g != nil {
			if g.User == "" {
				g.User = p.Mailbox
			}
			if g.Endpoint == "" {
				g.Endpoint = DefaultGraphEndpoint
			}
			if g.StateDir == "" {
				g.StateDir = DefaultGraphStateDir()
			}
			if g.PollInterval == 0 {
				g.PollInterval = Duration(DefaultGraphPollInterval)
			}
			if g.CacheMB == 0 {
				g.CacheMB = DefaultGraphCacheMB
			}
			g.Endpoint = strings.TrimRight(g.Endpoint, "/")
		}
		switch cr.Type {
		case CredMicrosoft365:
			if cr.Authority == "" {
				cr.Authority = DefaultMicrosoftAuthority
			}
			if cr.App == "" {
				cr.App = AppConfidential
			}
			if len(cr.Scopes) == 0 {
				switch {
				case graph && cr.App == AppPublic:
					cr.Scopes = DefaultGraphDelegatedScopes
				case graph:
					cr.Scopes = []string{DefaultGraphScope}
				case cr.App == AppPublic:
					cr.Scopes = DefaultMicrosoftDelegatedScopes
				default:
					cr.Scopes = []string{DefaultMicrosoftScope}
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
			cr.applyProvider(graph)
			if cr.Grant == "" {
				cr.Grant = GrantClientCredentials
				if cr.RefreshToken.IsSet() || cr.AuthorizeURL != "" || cr.DeviceURL != "" {
					cr.Grant = GrantRefreshToken
				}
			}
			if graph && len(cr.Scopes) == 0 {
				cr.Scopes = []string{DefaultGraphScope}
				if cr.Grant == GrantRefreshToken {
					cr.Scopes = DefaultGraphDelegatedScopes
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
				if graph {
					s.MaxMessageBytes = DefaultGraphMaxMessageBytes
				}
			}
			if s.Upstream.MessagesPerSession == 0 {
				s.Upstream.MessagesPerSession = DefaultMessagesPerSession
			}
			if s.Upstream.Timeout == 0 {
				s.Upstream.Timeout = DefaultUpstreamTimeout
			}
			if !graph {
				s.Upstream.applyDefaults(TLSStartTLS, "plain", basic, smtpPorts)
			}
		}
		if r := p.IMAP; r != nil {
			r.Listen = withDefaultHost(r.Listen)
			if !graph {
				r.Upstream.applyDefaults(TLSImplicit, "login", basic, imapPorts)
			}
		}
		if r := p.POP3; r != nil {
			r.Listen = withDefaultHost(r.Listen)
			if graph {
				if r.Folder == "" {
					r.Folder = "inbox"
				}
				if r.Dele == "" {
					r.Dele = DeleMove
				}
			} else {
				r.Upstream.applyDefaults(TLSImplicit, "login", basic, pop3Ports)
			}
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

// Validate checks the configuration's structure and returns every problem
// joined, each naming its key path (and line) and what to do. It is pure: it
// reads no environment variable, file or network, and a secret that is set
// counts as set; Resolve does the rest.
func (c *Config) Validate() error {
	ps := problems{lines: c.lines}
	c.validate(&ps)
	return ps.err()
}

func (c *Config) validate(ps *problems) {
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
	c.validateLimits(ps)
	if ts := c.TokenStore; ts != nil {
		switch {
		case ts.Path != "" && ts.Postgres.IsSet():
			ps.add("token_store", "path and postgres are both set: choose one (postgres for replicas that share their sign-ins)")
		case ts.Path == "" && !ts.Postgres.IsSet():
			ps.add("token_store.path", "required: a file mailproxy may write (mode 0600), or token_store.postgres: a database replicas share")
		}
		requireSecret(ps, "token_store.key", ts.Key)
	}
	for _, name := range c.ProfileNames() {
		c.validateProfile(ps, c.Profiles[name])
	}
	c.validateSharedListeners(ps)
	if a := c.Admin; a != nil {
		c.validateAdmin(ps, a)
	}
	// A reference is checked once Resolve has read it.
	if u := c.Alerts.WebhookURL; u.IsSet() && !u.isRef() {
		checkWebhookURL(ps, u.ref)
	}
}

func checkWebhookURL(ps *problems, u string) {
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		ps.add("alerts.webhook_url", "not an http(s) URL")
	}
}

// durationWithin reports a duration that is not in (0, most].
func durationWithin(ps *problems, path string, d Duration, most time.Duration) {
	if d <= 0 || d.D() > most {
		ps.add(path, "%s is out of range: give more than 0s and at most %s", shortDuration(d.D()), shortDuration(most))
	}
}

// shortDuration writes 1h rather than 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (c *Config) validateLimits(ps *problems) {
	l := c.Limits
	if l.Connections < 0 {
		ps.add("limits.connections", "must be 0 (a share of the open-file limit) or more")
	}
	if l.ConnectionsPerAddress < 0 {
		ps.add("limits.connections_per_address", "must be positive (0 means the default, %d)", DefaultConnectionsPerAddress)
	}
	durationWithin(ps, "limits.login_timeout", l.LoginTimeout, time.Hour)
	if l.FailedLogins < 1 {
		ps.add("limits.failed_logins", "must be 1 or more")
	}
	durationWithin(ps, "shutdown_grace", c.ShutdownGrace, 10*time.Minute)
}

func (c *Config) validateAdmin(ps *problems, a *Admin) {
	if a.Listen == "" {
		ps.add("admin.listen", "required: host:port of the admin page and probes, e.g. 127.0.0.1:8025")
	} else if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		ps.add("admin.listen", "%q is not host:port", a.Listen)
	}
	if (a.Username == "") != !a.Password.IsSet() {
		ps.add("admin.username", "give username and password together")
	}
	if a.Username == "" && !a.Token.IsSet() {
		ps.add("admin.password", "required: the admin page is never open; give username and password, or a bearer token")
	}
	if a.Listen != "" && !IsLoopback(a.Listen) && a.TLS == nil {
		ps.add("admin.tls", "required when admin.listen is not on loopback (%s): give cert_file and key_file", a.Listen)
	}
}

// requireSecret reports a secret that is not set; whether it resolves is
// Resolve's to say.
func requireSecret(ps *problems, path string, s Secret) {
	if !s.IsSet() {
		ps.add(path, "required: give it inline, as ${env:NAME} or as file:/path")
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
	graph := p.Graph != nil
	if graph {
		c.validateGraph(ps, at, p)
	}
	needsPasswords := false
	if s := p.SMTP; s != nil {
		sa := at + ".smtp"
		validateListener(ps, sa, s.Listener, s.LocalAuth)
		needsPasswords = s.LocalAuth == LocalAuthPassword
		if !graph {
			validateUpstream(ps, sa+".upstream", s.Upstream.Upstream, p.Credentials.Type, "smtp.office365.com")
			if s.Upstream.MessagesPerSession < 1 {
				ps.add(sa+".upstream.messages_per_session", "must be 1 or more")
			}
			durationWithin(ps, sa+".upstream.timeout", s.Upstream.Timeout, 30*time.Minute)
		}
		if s.MaxMessageBytes < 0 {
			ps.add(sa+".max_message_bytes", "must be positive")
		}
	}
	for _, r := range []struct {
		at  string
		rcv *Receiving
		eg  string
	}{{at + ".imap", p.IMAP, "outlook.office365.com"}, {at + ".pop3", p.POP3.receiving(), "outlook.office365.com"}} {
		if r.rcv == nil {
			continue
		}
		// An IMAP or POP3 login always names a user: there is no "none".
		validateListener(ps, r.at, r.rcv.Listener, LocalAuthPassword)
		if !graph {
			validateUpstream(ps, r.at+".upstream", r.rcv.Upstream, p.Credentials.Type, r.eg)
		}
		needsPasswords = true
	}
	if r := p.POP3; r != nil && !graph && (r.Folder != "" || r.Dele != "") {
		ps.add(at+".pop3", "folder and dele are for profiles with graph: a POP3 upstream has its own maildrop")
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
		requireSecret(ps, ua+".password", u.Password)
	}
}

// validateGraph checks a profile that talks to Microsoft Graph: no mail
// server upstreams, Microsoft credentials that give tokens, listeners
// mailproxy can serve from Graph.
func (c *Config) validateGraph(ps *problems, at string, p *Profile) {
	g := p.Graph
	for _, up := range []string{".smtp.upstream", ".imap.upstream", ".pop3.upstream"} {
		if _, written := c.lines[at+up]; written {
			ps.add(at+up, "a profile with graph: talks to Microsoft Graph, not to a mail server: remove upstream, or remove graph")
		}
	}
	if g.PollInterval.D() < time.Second {
		ps.add(at+".graph.poll_interval", "%s is too short: at least 1s (each poll is a Graph request)", g.PollInterval)
	}
	if g.CacheMB < 0 {
		ps.add(at+".graph.cache_mb", "%d is not a size: megabytes, at least 0", g.CacheMB)
	}
	if !filepath.IsAbs(g.StateDir) {
		ps.add(at+".graph.state_dir", "%q is not an absolute path", g.StateDir)
	}
	u, err := url.Parse(g.Endpoint)
	switch {
	case err != nil || u.Host == "":
		ps.add(at+".graph.endpoint", "%q is not a URL (e.g. %s)", g.Endpoint, DefaultGraphEndpoint)
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		ps.add(at+".graph.endpoint", "%s is not https: Graph is reached over TLS (http only on loopback)", g.Endpoint)
	case u.Scheme != "https" && u.Scheme != "http":
		ps.add(at+".graph.endpoint", "%s is not an https URL", g.Endpoint)
	}
	switch cr := p.Credentials; {
	case cr.Type == CredBasic:
		ps.add(at+".credentials.type", "basic gives no token: Graph takes microsoft365 or oauth2 credentials")
	case cr.Type == CredGoogleServiceAccount || cr.Provider == ProviderGoogle:
		ps.add(at+".credentials", "Google credentials give no Microsoft Graph token: use microsoft365 or oauth2 (provider: microsoft)")
	}
	if r := p.POP3; r != nil {
		switch r.Dele {
		case DeleMove, DeleDelete:
		default:
			ps.add(at+".pop3.dele", "%q is not one of move (to Deleted Items), delete", r.Dele)
		}
	}
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
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
		case cr.ClientSecret.IsSet(), cr.CertificateFile != "":
		default:
			ps.add(at+".client_secret", "required for microsoft365 confidential: a client secret, or certificate_file")
		}
	case CredGoogleServiceAccount:
		req("key_file", cr.KeyFile, "the service account key (.json, or legacy .p12)")
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
			requireSecret(ps, at+".client_secret", cr.ClientSecret)
		case GrantRefreshToken:
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
		requireSecret(ps, at+".password", cr.Password)
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
