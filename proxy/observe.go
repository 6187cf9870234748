package proxy

import (
	"errors"
	"time"

	"github.com/emersion/go-smtp"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

// Observer is told what sessions do, for metrics. Its methods must be quick
// and safe for concurrent use.
type Observer interface {
	// SessionStarted: a session is now the profile's (an SMTP login, or a
	// relayed IMAP or POP3 session).
	SessionStarted(proto, profile string)
	// SessionEnded: that session ended after moving these bytes (SMTP: the
	// messages the upstream accepted).
	SessionEnded(proto, profile string, bytesUp, bytesDown int64)
	// LoggedIn: an IMAP or POP3 session logged in upstream after d.
	LoggedIn(proto, profile string, d time.Duration)
	// Relayed: the upstream accepted a message of n bytes after d.
	Relayed(profile string, n int64, d time.Duration)
	// Failed: the upstream (or the token) failed a session or a message.
	Failed(proto, profile string, err error)
}

// ErrorClass names the kind of an upstream failure: token (no token could
// be had), sign_in (a person must sign in again), refused (the upstream
// refused the login), rejected (the upstream refused a message or
// recipient), or unavailable (not reachable, broken, timed out).
func ErrorClass(err error) string {
	var te *tokens.Error
	var ue *upstream.Error
	switch {
	case errors.As(err, &te) && te.NeedsSignIn:
		return "sign_in"
	case errors.As(err, &te):
		return "token"
	case upstream.IsRefused(err):
		return "refused"
	case errors.As(err, &ue):
		return "unavailable"
	case isSMTPError(err):
		return "rejected"
	}
	return "unavailable"
}

type nopObserver struct{}

func (nopObserver) SessionStarted(string, string)             {}
func (nopObserver) LoggedIn(string, string, time.Duration)    {}
func (nopObserver) SessionEnded(string, string, int64, int64) {}
func (nopObserver) Relayed(string, int64, time.Duration)      {}
func (nopObserver) Failed(string, string, error)              {}

func observerOr(o Observer) Observer {
	if o == nil {
		return nopObserver{}
	}
	return o
}

func isSMTPError(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}
