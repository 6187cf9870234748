// Package upstream connects to the real mail servers (SMTP, IMAP, POP3) and
// authenticates with OAuth 2.0 tokens or a password. It asks for tokens
// through TokenSource and never stores them.
//
// It must never write a token or password to a log or an error.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-sasl"
	"golang.org/x/oauth2"
)

// TokenSource gives a current access token.
type TokenSource interface {
	Token(ctx context.Context) (*oauth2.Token, error)
}

// invalidator is implemented by token caches that can drop a token the
// upstream refused.
type invalidator interface {
	Invalidate(*oauth2.Token)
}

// SASL mechanisms mailproxy uses upstream.
const (
	MechXOAUTH2     = "xoauth2"
	MechOAUTHBEARER = "oauthbearer"
	MechPlain       = "plain"
	MechLogin       = "login"
)

// Auth is how to log in upstream.
type Auth struct {
	// Mechanism is one of the Mech constants.
	Mechanism string
	// User is the XOAUTH2 user= / OAUTHBEARER a= / basic login.
	User string
	// Password for plain and login.
	Password string
	// Tokens for xoauth2 and oauthbearer.
	Tokens TokenSource
}

// UsesToken reports whether the mechanism sends an OAuth 2.0 token.
func (a Auth) UsesToken() bool {
	return a.Mechanism == MechXOAUTH2 || a.Mechanism == MechOAUTHBEARER
}

// client returns the SASL client for one login. tok is nil for password
// mechanisms. With initial, XOAUTH2 sends its response with the command
// (SASL-IR); without, it waits for the server's empty challenge (SMTP and
// POP3, whose line limits a token would break).
func (a Auth) client(tok *oauth2.Token, host string, port int, initial bool) sasl.Client {
	switch a.Mechanism {
	case MechXOAUTH2:
		return &xoauth2Client{user: a.User, token: tok.AccessToken, initial: initial}
	case MechOAUTHBEARER:
		return &oauthBearerClient{Client: sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: a.User, Token: tok.AccessToken, Host: host, Port: port})}
	case MechLogin:
		return sasl.NewLoginClient(a.User, a.Password)
	default:
		return sasl.NewPlainClient("", a.User, a.Password)
	}
}

// xoauth2Client is SASL XOAUTH2 (Google's and Microsoft's documented form:
// base64("user=" U ^A "auth=Bearer " T ^A ^A)). go-sasl does not have it.
//
// On failure Google sends a challenge carrying JSON; the client must answer
// it with an empty response before the server says NO/535/-ERR. Microsoft
// answers NO/535/-ERR directly. Both are handled.
type xoauth2Client struct {
	user, token string
	initial     bool
	sent        bool
	// Challenge is the server's error JSON, if it sent one.
	Challenge string
}

func (c *xoauth2Client) response() []byte {
	return []byte("user=" + c.user + "\x01auth=Bearer " + c.token + "\x01\x01")
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	if c.initial {
		c.sent = true
		return "XOAUTH2", c.response(), nil
	}
	return "XOAUTH2", nil, nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if !c.sent {
		c.sent = true
		return c.response(), nil
	}
	c.Challenge = strings.TrimSpace(string(challenge))
	return []byte{}, nil
}

// oauthBearerClient answers OAUTHBEARER's error challenge as RFC 7628
// §3.2.3 asks: with a single %x01, after which the server fails the login
// with its own reply. (go-sasl returns an error, which makes callers abort.)
type oauthBearerClient struct {
	sasl.Client
	Challenge string
}

func (c *oauthBearerClient) Next(challenge []byte) ([]byte, error) {
	_, err := c.Client.Next(challenge)
	c.Challenge = strings.TrimSpace(string(challenge))
	if err != nil && c.Challenge != "" {
		return []byte{0x01}, nil
	}
	return nil, err
}

// serverChallenge is the error JSON a server sent during a failed login,
// if any.
func serverChallenge(c sasl.Client) string {
	switch c := c.(type) {
	case *xoauth2Client:
		return c.Challenge
	case *oauthBearerClient:
		return c.Challenge
	}
	return ""
}

// token returns a token for the mechanism, or nil for password mechanisms.
func (a Auth) token(ctx context.Context, profile string) (*oauth2.Token, error) {
	if !a.UsesToken() {
		return nil, nil
	}
	tok, err := a.Tokens.Token(ctx)
	if err != nil {
		return nil, TokenError(profile, err)
	}
	return tok, nil
}

// login runs one upstream login with a current token (nil for password
// mechanisms). If the upstream refused a token the cache believed valid
// (revoked, or expired early), the token is dropped and login runs once more
// with a new one.
func (a Auth) login(ctx context.Context, profile string, refused func(error) bool, login func(tok *oauth2.Token) error) error {
	tok, err := a.token(ctx, profile)
	if err != nil {
		return err
	}
	err = login(tok)
	inv, ok := a.Tokens.(invalidator)
	if err == nil || tok == nil || !ok || !refused(err) {
		return err
	}
	inv.Invalidate(tok)
	if tok, err = a.token(ctx, profile); err != nil {
		return err
	}
	return login(tok)
}

// splitPort returns host and numeric port of a host:port address.
func splitPort(addr string) (string, int) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return addr, 0
	}
	p, _ := strconv.Atoi(addr[i+1:])
	return strings.Trim(addr[:i], "[]"), p
}

// RefusedError is the upstream's refusal of mailproxy's login: it did not
// accept the token (or password). Reply is the server's answer, Challenge
// the error JSON it sent first, if any; neither holds a credential.
type RefusedError struct {
	Reply     string
	Challenge string
}

func (e *RefusedError) Error() string {
	msg := "server refused the login: " + e.Reply
	if e.Challenge != "" {
		msg += " (server said " + e.Challenge + ")"
	}
	return msg
}

// IsRefused reports whether err is an upstream refusal of the login.
func IsRefused(err error) bool { return KindOf(err) == Refused }

// Kind says what a failure means for the local client, whatever the
// protocol: the proxy maps it to a reply in one place per protocol.
type Kind int

const (
	// Temporary: try again later. The upstream or the token endpoint could
	// not be reached, timed out, broke, or said so itself.
	Temporary Kind = iota
	// Refused: the upstream refused mailproxy's login (its token or
	// password). Retrying the same credential will not help.
	Refused
	// PersonNeeded: a person must act first: sign in again, or fix the
	// credential. The local client keeps its mail and retries meanwhile.
	PersonNeeded
)

func (k Kind) String() string {
	switch k {
	case Refused:
		return "refused"
	case PersonNeeded:
		return "person_needed"
	}
	return "temporary"
}

// Stages of an upstream session, for Error.Stage.
const (
	StageToken   = "token"
	StageConnect = "connect"
	StageTLS     = "tls"
	StageAuth    = "auth"
	StageSession = "session"
)

// Error is a failure to reach or log in to the upstream, or to get a token
// for it. The message names the profile, the stage and the cause, never a
// credential.
type Error struct {
	Profile string
	// Stage is one of the Stage constants.
	Stage string
	Kind  Kind
	Err   error
}

func (e *Error) Error() string {
	if e.Stage == StageToken {
		// The token error names the profile and what to do already.
		return e.Err.Error()
	}
	return fmt.Sprintf("profile %q: upstream %s: %v", e.Profile, e.Stage, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf is the kind of err: Refused if it holds a *RefusedError, else
// an *Error's own kind, else Temporary.
func KindOf(err error) Kind {
	var re *RefusedError
	if errors.As(err, &re) {
		return Refused
	}
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Kind
	}
	return Temporary
}

// personNeeded is implemented by token errors that retrying cannot fix.
type personNeeded interface{ PersonNeeded() bool }

// TokenError wraps a token source's failure for profile: a person is
// needed when the token error says so, else it is temporary.
func TokenError(profile string, err error) *Error {
	kind := Temporary
	var pn personNeeded
	if errors.As(err, &pn) && pn.PersonNeeded() {
		kind = PersonNeeded
	}
	return &Error{Profile: profile, Stage: StageToken, Kind: kind, Err: err}
}

// refused wraps an upstream's refusal of the login.
func refused(profile string, re *RefusedError) *Error {
	return &Error{Profile: profile, Stage: StageAuth, Kind: Refused, Err: re}
}
