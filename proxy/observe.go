package proxy

import "time"

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
