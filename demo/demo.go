// Package demo is the embedded default: an in-process token issuer and
// in-process upstream SMTP, IMAP and POP3 servers that accept only XOAUTH2
// and share one mailbox, so mailproxy can be tried on a fresh machine with
// no cloud account: send a message, then read it back.
//
// It must never be mistaken for a real server: it listens on loopback only
// and keeps mail in memory.
package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mailproxy/fakegraph"
	"mailproxy/idp"
	"mailproxy/tokens"
)

// Names the demo uses.
const (
	Mailbox      = "demo@mailproxy.test"
	ClientID     = "demo-client"
	ClientSecret = "demo-client-secret"
	// PublicClientID is the app a person signs in to (delegated), as
	// Mailbox with PersonPassword on the issuer's sign-in page.
	PublicClientID = "demo-public-app"
	PersonPassword = "demo"
	// GraphMailbox is the Microsoft 365 mailbox of the Graph double, sent
	// from and read with GraphClientID's app-only token.
	GraphMailbox      = "cmo@contoso.test"
	GraphClientID     = "demo-graph-app"
	GraphClientSecret = "demo-graph-secret"
)

// Env is a running demo: the issuer and the upstreams.
type Env struct {
	IdP      *idp.Server
	TokenURL string
	SMTPAddr string
	IMAPAddr string
	POP3Addr string
	// Graph is the Microsoft Graph double, at GraphURL (…/v1.0).
	Graph    *fakegraph.Server
	GraphURL string

	log     *slog.Logger
	mailbox *mailbox
	closers []func()
}

// Start runs the issuer and the upstream on loopback ports until Close.
func Start(log *slog.Logger) (*Env, error) {
	e := &Env{IdP: idp.New(), log: log}
	e.IdP.AddClient(idp.Client{ID: ClientID, Secret: ClientSecret, Mailbox: Mailbox})
	e.IdP.AddPublicApp(idp.PublicApp{ClientID: PublicClientID,
		RedirectURIs: []string{"http://127.0.0.1/oauth/callback", "http://localhost/oauth/callback", "http://localhost/"}})
	e.IdP.AddUser(Mailbox, PersonPassword)

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: e.IdP, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(hl)
	e.closers = append(e.closers, func() { hs.Close() })
	e.TokenURL = "http://" + hl.Addr().String() + "/token"
	e.IdP.URL = "http://" + hl.Addr().String()

	// Microsoft Graph, for a profile with no SMTP, IMAP or POP3 upstream.
	e.IdP.AddClient(idp.Client{ID: GraphClientID, Secret: GraphClientSecret, Mailbox: GraphMailbox, Roles: []string{"Mail.Send", "Mail.ReadWrite"}})
	e.Graph = fakegraph.New(e.IdP)
	e.Graph.AddMailbox(GraphMailbox, "00000000-0000-4000-8000-00000000c305")
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, err
	}
	gs := &http.Server{Handler: e.Graph, ReadHeaderTimeout: 10 * time.Second}
	go gs.Serve(gl)
	e.closers = append(e.closers, func() { gs.Close() })
	e.Graph.URL = "http://" + gl.Addr().String()
	e.GraphURL = e.Graph.URL + "/v1.0"

	if e.mailbox, err = newMailbox(); err != nil {
		e.Close()
		return nil, err
	}
	listen := func() (net.Listener, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			e.Close()
		}
		return l, err
	}

	sl, err := listen()
	if err != nil {
		return nil, err
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{env: e}, nil
	}))
	srv.Domain = "upstream.demo"
	srv.AllowInsecureAuth = true
	srv.MaxMessageBytes = 100 << 20
	go srv.Serve(sl)
	e.closers = append(e.closers, func() { srv.Close() })
	e.SMTPAddr = sl.Addr().String()

	il, err := listen()
	if err != nil {
		return nil, err
	}
	is := e.mailbox.imapServer(e.validate)
	go is.Serve(il)
	e.closers = append(e.closers, func() { is.Close() })
	e.IMAPAddr = il.Addr().String()

	pl, err := listen()
	if err != nil {
		return nil, err
	}
	go e.servePOP3(pl)
	e.closers = append(e.closers, func() { pl.Close() })
	e.POP3Addr = pl.Addr().String()
	return e, nil
}

// validate accepts a token the issuer gave for user.
func (e *Env) validate(user, token string) error {
	mailbox, ok := e.IdP.Validate(token)
	if !ok || !strings.EqualFold(mailbox, user) {
		return errors.New("invalid token")
	}
	return nil
}

// Close stops the servers.
func (e *Env) Close() {
	for _, c := range e.closers {
		c()
	}
}

// Listeners are the demo's local addresses.
type Listeners struct{ SMTP, IMAP, POP3, Admin string }

// Config is a mailproxy configuration that fronts this demo: profile
// "demo" (an app-only credential) on every protocol; profile "signed-in"
// (a person signs in on the admin page), sharing the IMAP listener under
// local user "person"; profile "m365" (Microsoft Graph, no mail server),
// sharing the SMTP, IMAP and POP3 listeners under local user "m365", its
// IMAP state next to the token store; the admin page, with login
// localUser and localPassword; and a token store at storePath.
func (e *Env) Config(l Listeners, storePath, localUser, localPassword string) string {
	base := strings.TrimSuffix(e.TokenURL, "/token")
	return fmt.Sprintf(`token_store: {path: %q, key: %q}
admin: {listen: %q, username: %q, password: %q}
profiles:
  signed-in:
    mailbox: %s
    imap:
      listen: %s
      upstream: {host: %q, tls: none}
    local_users:
      - {name: person-app, username: person, password: %q}
    credentials:
      type: oauth2
      authorize_url: %s/authorize
      token_url: %s/token
      client_id: %s
      scopes: [mail, offline_access]
  demo:
    mailbox: %s
    smtp:
      listen: %s
      upstream:
        host: %s
        tls: none
        mechanism: xoauth2
    imap:
      listen: %s
      upstream: {host: %q, tls: none}
    pop3:
      listen: %s
      upstream: {host: %q, tls: none}
    local_users:
      - name: demo-app
        username: %q
        password: %q
    credentials:
      type: oauth2
      grant: client_credentials
      token_url: %s
      client_id: %s
      client_secret: %s
  m365:
    mailbox: %s
    graph: {endpoint: %q, state_dir: %q}
    smtp: {listen: %s}
    imap: {listen: %s}
    pop3: {listen: %s}
    local_users:
      - {name: m365-app, username: m365, password: %q}
    credentials:
      type: oauth2
      token_url: %s
      client_id: %s
      client_secret: %s
`, storePath, tokens.NewKey(), l.Admin, localUser, localPassword,
		Mailbox, l.IMAP, e.IMAPAddr, localPassword, base, base, PublicClientID,
		Mailbox, l.SMTP, e.SMTPAddr, l.IMAP, e.IMAPAddr, l.POP3, e.POP3Addr, localUser, localPassword, e.TokenURL, ClientID, ClientSecret,
		GraphMailbox, e.GraphURL, filepath.Join(filepath.Dir(storePath), "graph"), l.SMTP, l.IMAP, l.POP3, localPassword, e.TokenURL, GraphClientID, GraphClientSecret)
}

// session is one upstream SMTP session; it requires AUTH XOAUTH2 and
// delivers into the demo mailbox.
type session struct {
	env   *Env
	user  string
	from  string
	rcpts []string
}

func (s *session) AuthMechanisms() []string { return []string{"XOAUTH2"} }

func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return &xoauth2Server{
		check: func(user, token string) error {
			if err := s.env.validate(user, token); err != nil {
				return err
			}
			s.user = user
			return nil
		},
		failure: &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted"},
	}, nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required (XOAUTH2)"}
	}
	s.from, s.rcpts = from, nil
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	e := s.env
	if err := e.mailbox.deliver(buf.Bytes()); err != nil {
		return err
	}
	e.log.Info("demo upstream accepted a message", "authenticated_as", s.user, "mechanism", "XOAUTH2",
		"from", s.from, "to", strings.Join(s.rcpts, ","), "bytes", buf.Len())
	return nil
}

func (s *session) Reset()        { s.from, s.rcpts = "", nil }
func (s *session) Logout() error { return nil }

// xoauth2Server is the server side of SASL XOAUTH2. On a bad token it
// answers as Google does: a JSON challenge, then failure after the client's
// empty response.
type xoauth2Server struct {
	check   func(user, token string) error
	failure error
	failed  bool
}

func (x *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if x.failed {
		return nil, true, x.failure
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	user, token := parseXOAUTH2(resp)
	if err := x.check(user, token); err != nil {
		x.failed = true
		return []byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`), false, nil
	}
	return nil, true, nil
}

// parseXOAUTH2 splits "user=U^Aauth=Bearer T^A^A".
func parseXOAUTH2(resp []byte) (user, token string) {
	for _, kv := range strings.Split(string(resp), "\x01") {
		if v, ok := strings.CutPrefix(kv, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(kv, "auth=Bearer "); ok {
			token = v
		}
	}
	return user, token
}
