package app

import (
	"runtime/debug"
	"sync"
	"time"

	"mailproxy/proxy"
)

// After loginBurst IMAP or POP3 logins, once none has come for
// loginsQuiet, their garbage is collected and returned to the system.
const (
	loginBurst  = 50
	loginsQuiet = 5 * time.Second
)

// collectAfterLogins returns the garbage of a burst of logins once the
// logins stop. A login (TLS handshakes, a token, buffers) leaves tens of
// KB behind; the sessions then sit idle and allocate nothing, so no
// collection comes until the runtime forces one (every 2 minutes), and the
// process holds twice its live heap meanwhile. With 500 idle IMAP sessions
// that was about a quarter of their memory.
type collectAfterLogins struct {
	proxy.Observer
	quiet time.Duration
	free  func() // debug.FreeOSMemory

	mu     sync.Mutex
	logins int
	timer  *time.Timer
}

func newCollectAfterLogins(o proxy.Observer) *collectAfterLogins {
	return &collectAfterLogins{Observer: o, quiet: loginsQuiet, free: debug.FreeOSMemory}
}

func (c *collectAfterLogins) LoggedIn(proto, profile string, d time.Duration) {
	c.Observer.LoggedIn(proto, profile, d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logins++; c.logins < loginBurst {
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(c.quiet, c.collect)
	} else {
		c.timer.Reset(c.quiet)
	}
}

func (c *collectAfterLogins) collect() {
	c.mu.Lock()
	c.logins = 0
	c.mu.Unlock()
	c.free()
}
