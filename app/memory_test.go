package app

import (
	"sync/atomic"
	"testing"
	"time"

	"mailproxy/proxy"
)

type countLogins struct {
	proxy.Observer
	n atomic.Int32
}

func (c *countLogins) LoggedIn(string, string, time.Duration) { c.n.Add(1) }

// Memory is returned once after a burst of logins has stopped, not while
// it goes on, and not after a few logins.
func TestMemoryIsReturnedOnceABurstOfLoginsStops(t *testing.T) {
	metrics := &countLogins{}
	c := newCollectAfterLogins(metrics)
	c.quiet = 100 * time.Millisecond
	var frees atomic.Int32
	c.free = func() { frees.Add(1) }
	for range loginBurst - 1 {
		c.LoggedIn("imap", "p", 0)
	}
	time.Sleep(300 * time.Millisecond)
	if n := frees.Load(); n != 0 {
		t.Fatalf("%d collections after %d logins", n, loginBurst-1)
	}
	for range 20 { // the burst goes on past loginBurst
		c.LoggedIn("imap", "p", 0)
		time.Sleep(20 * time.Millisecond)
	}
	if n := frees.Load(); n != 0 {
		t.Fatalf("%d collections while logins go on", n)
	}
	time.Sleep(300 * time.Millisecond)
	if n := frees.Load(); n != 1 {
		t.Fatalf("%d collections once the logins stopped, want 1", n)
	}
	if n := metrics.n.Load(); n != loginBurst-1+20 {
		t.Fatalf("the metrics saw %d logins", n)
	}
}
