package graph

import (
	"context"
	"sync"
	"time"
)

// DefaultConcurrency is Graph's limit of requests in flight per app and
// mailbox (throttling-limits.md, Outlook service limits: 4 concurrent
// requests); one more is answered 429 ApplicationThrottled.
const DefaultConcurrency = 4

// Limiter bounds the Graph requests in flight per key (an app and a
// mailbox) across every session and protocol of the process, and holds
// them all back while Graph has asked that key to wait (Retry-After).
type Limiter struct {
	n int

	mu    sync.Mutex
	slots map[string]chan struct{}
	until map[string]time.Time
}

// NewLimiter allows n requests in flight per key.
func NewLimiter(n int) *Limiter {
	return &Limiter{n: max(n, 1), slots: map[string]chan struct{}{}, until: map[string]time.Time{}}
}

// acquire waits for a place for key and for the end of any pause; the
// caller calls release when its request is done.
func (l *Limiter) acquire(ctx context.Context, key string) (release func(), err error) {
	l.mu.Lock()
	ch := l.slots[key]
	if ch == nil {
		ch = make(chan struct{}, l.n)
		l.slots[key] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	for {
		l.mu.Lock()
		wait := time.Until(l.until[key])
		l.mu.Unlock()
		if wait <= 0 {
			return func() { <-ch }, nil
		}
		if !sleep(ctx, wait) {
			<-ch
			return nil, ctx.Err()
		}
	}
}

// pause holds every request of key back for d.
func (l *Limiter) pause(key string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := time.Now().Add(d); t.After(l.until[key]) {
		l.until[key] = t
	}
}
