package graph

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"mailproxy/upstream"
)

// tokens hands out numbered tokens and counts invalidations.
type tokens struct {
	n           atomic.Int64
	invalidated atomic.Int64
}

func (t *tokens) Token(context.Context) (*oauth2.Token, error) {
	return &oauth2.Token{AccessToken: fmt.Sprintf("tok-%d", t.n.Load())}, nil
}
func (t *tokens) Invalidate(*oauth2.Token) { t.invalidated.Add(1); t.n.Add(1) }

func testClient(t *testing.T, h http.HandlerFunc) (*Client, *tokens) {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tk := &tokens{}
	return New(Options{Profile: "p", Endpoint: srv.URL + "/v1.0", User: "u@x", Tokens: tk, LimitKey: "app/u@x",
		Limiter: NewLimiter(DefaultConcurrency), MaxWait: 10 * time.Second}), tk
}

func TestEveryRequestAsksForImmutableIDs(t *testing.T) {
	var prefer []string
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		prefer = r.Header.Values("Prefer")
		fmt.Fprint(w, `{"value":[]}`)
	})
	c.Messages(context.Background(), "inbox", func(Message, int64) error { return nil })
	if !strings.Contains(strings.Join(prefer, ","), `IdType="ImmutableId"`) || !strings.Contains(strings.Join(prefer, ","), "odata.maxpagesize") {
		t.Fatalf("Prefer headers %q", prefer)
	}
}

func TestThrottledRequestsWaitRetryAfterTogether(t *testing.T) {
	var calls atomic.Int64
	var first time.Time
	var mu sync.Mutex
	var after []time.Time
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			first = time.Now()
			w.Header().Set("Retry-After", "0.4") // fractional, as Graph's own sample
			w.WriteHeader(429)
			fmt.Fprint(w, `{"error":{"code":"TooManyRequests","message":"Please retry again later."}}`)
			return
		}
		mu.Lock()
		after = append(after, time.Now())
		mu.Unlock()
		w.WriteHeader(202)
	})
	var wg sync.WaitGroup
	if err := c.SendMIME(context.Background(), Bytes("x")); err != nil {
		t.Fatal(err)
	}
	for range 3 { // requests after the throttle wait too
		wg.Go(func() {
			if err := c.SendMIME(context.Background(), Bytes("x")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, at := range after {
		if at.Sub(first) < 350*time.Millisecond {
			t.Fatalf("a request went %v after a 429 with Retry-After 0.4", at.Sub(first))
		}
	}
}

func TestPersistentThrottleIsATemporaryErrorNotAHang(t *testing.T) {
	var calls atomic.Int64
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "0.1")
		w.WriteHeader(429)
		fmt.Fprint(w, `{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}`)
	})
	err := c.SendMIME(context.Background(), Bytes("x"))
	var ge *Error
	if !errors.As(err, &ge) || !ge.Temporary() || ge.Code != "ApplicationThrottled" || calls.Load() != 9 {
		t.Fatalf("after %d calls: %v", calls.Load(), err)
	}
	if k := upstream.KindOf(c.Classify(err)); k != upstream.Temporary {
		t.Fatalf("kind %v", k)
	}
}

func TestAtMostFourRequestsInFlightPerMailbox(t *testing.T) {
	var now, peak atomic.Int64
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
		now.Add(-1)
		w.WriteHeader(202)
	})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { c.SendMIME(context.Background(), Bytes("x")) })
	}
	wg.Wait()
	if p := peak.Load(); p != 4 {
		t.Fatalf("%d requests in flight at once, want 4", p)
	}
}

func TestUnauthorizedGetsOneNewToken(t *testing.T) {
	var auth []string
	c, tk := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		if len(auth) == 1 {
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired or is not yet valid."}}`)
			return
		}
		w.WriteHeader(202)
	})
	if err := c.SendMIME(context.Background(), Bytes("x")); err != nil {
		t.Fatal(err)
	}
	if tk.invalidated.Load() != 1 || auth[0] == auth[1] {
		t.Fatalf("tokens %v, %d invalidated", auth, tk.invalidated.Load())
	}
}

func TestErrorsNameGraphsCodeAndTheProfile(t *testing.T) {
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(403)
		fmt.Fprint(w, `{"error":{"code":"ErrorAccessDenied","message":"Access is denied. Check credentials and try again.","innerError":{"request-id":"x"}}}`)
	})
	err := c.Classify(c.SendMIME(context.Background(), Bytes("x")))
	if upstream.KindOf(err) != upstream.Refused || !strings.Contains(err.Error(), `profile "p"`) ||
		!strings.Contains(err.Error(), "403 ErrorAccessDenied: Access is denied") || !strings.Contains(err.Error(), "Mail.Send") {
		t.Fatalf("%v", err)
	}
}

func TestPagingFollowsNextLinkVerbatim(t *testing.T) {
	var srvURL string
	c, _ := testClient(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("$skiptoken") {
		case "":
			fmt.Fprintf(w, `{"value":[{"id":"a","singleValueExtendedProperties":[{"id":"Integer 0xe08","value":"100"}]}],"@odata.nextLink":"%s/v1.0/users/u@x/mailFolders/inbox/messages?$skiptoken=XYZ%%3D"}`, srvURL)
		case "XYZ=":
			fmt.Fprint(w, `{"value":[{"id":"b"}]}`)
		default:
			w.WriteHeader(400)
		}
	})
	srvURL = strings.TrimSuffix(c.o.Endpoint, "/v1.0")
	var ids []string
	var sizes []int64
	err := c.Messages(context.Background(), "inbox", func(m Message, size int64) error {
		ids, sizes = append(ids, m.ID), append(sizes, size)
		return nil
	})
	if err != nil || strings.Join(ids, ",") != "a,b" || sizes[0] != 100 {
		t.Fatalf("%v %v %v", ids, sizes, err)
	}
}

func TestRetryAfterParses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{{"2.128", 2128 * time.Millisecond, true}, {"3", 3 * time.Second, true}, {"", 0, false}, {"soon", 0, false}} {
		if got, ok := retryAfter(tc.in); ok != tc.ok || got != tc.want {
			t.Errorf("%q: %v %v", tc.in, got, ok)
		}
	}
}
