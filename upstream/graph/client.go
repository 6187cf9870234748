// Package graph is mailproxy's Microsoft Graph client for mail: the few
// calls it needs to send mail and to serve a mailbox (sendMail with MIME,
// drafts, upload sessions, listing, $value, move, delete), each with
// Prefer: IdType="ImmutableId", @odata.nextLink paging followed verbatim,
// OData errors that name their code and the profile, one token refresh on
// a 401, and throttling as Graph documents it: at most 4 requests in
// flight per (app, mailbox), Retry-After honoured by every request of that
// mailbox, bounded retries with backoff.
//
// It is a small net/http client, not msgraph-sdk-go: the SDK's cold build
// costs minutes and gigabytes, and it cannot send raw MIME (README).
//
// It must never write a token to a log or an error.
package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// TokenSource gives a current access token for Graph.
type TokenSource interface {
	Token(ctx context.Context) (*oauth2.Token, error)
}

// invalidator drops a token Graph refused, so the next one is new.
type invalidator interface{ Invalidate(*oauth2.Token) }

// Observer counts Graph requests, for metrics. Its methods must be quick.
type Observer interface {
	// GraphRequest: a request of profile ended with status (0: no answer).
	GraphRequest(profile string, status int)
	// GraphRetry: a request is tried again because of reason (throttled,
	// unavailable, token).
	GraphRetry(profile, reason string)
}

// Options configure a Client.
type Options struct {
	Profile string
	// Endpoint is Graph's base URL, e.g. https://graph.microsoft.com/v1.0.
	Endpoint string
	// User is the mailbox's object id or user principal name: requests go
	// to /users/{User}; empty means /me (a delegated token).
	User   string
	Tokens TokenSource
	// HTTPClient carries the requests (its Transport's TLS settings); each
	// request has its own deadline (RequestTimeout).
	HTTPClient *http.Client
	// Limiter bounds requests in flight per mailbox; its key is LimitKey
	// (the app and the mailbox). Shared by every client of the process.
	Limiter  *Limiter
	LimitKey string
	// RequestTimeout bounds one request (default 2 min); MaxRetries the
	// retries of a throttled or failed one (default 8); MaxWait the time
	// spent waiting for retries in all (default 60 s), so a persistent
	// throttle is an error, never a hang.
	RequestTimeout time.Duration
	MaxRetries     int
	MaxWait        time.Duration
	Observer       Observer
	Logger         *slog.Logger
}

// Client calls Graph for one profile's mailbox.
type Client struct {
	o    Options
	base string // endpoint + /users/{user} or /me
}

// New returns a Client; it makes no request.
func New(o Options) *Client {
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Limiter == nil {
		o.Limiter = NewLimiter(DefaultConcurrency)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 2 * time.Minute
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 8
	}
	if o.MaxWait <= 0 {
		o.MaxWait = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	base := strings.TrimRight(o.Endpoint, "/")
	if o.User == "" {
		base += "/me"
	} else {
		base += "/users/" + url.PathEscape(o.User)
	}
	return &Client{o: o, base: base}
}

type nopObserver struct{}

func (nopObserver) GraphRequest(string, int)  {}
func (nopObserver) GraphRetry(string, string) {}

// retried counts and logs a request tried again.
func (c *Client) retried(op, reason string, err error) {
	c.o.Observer.GraphRetry(c.o.Profile, reason)
	c.o.Logger.Debug("graph request retried", "profile", c.o.Profile, "op", op, "reason", reason, "err", err)
}

// failed logs a request given up.
func (c *Client) failed(op string, err error) error {
	c.o.Logger.Warn("graph request failed", "profile", c.o.Profile, "op", op, "err", err)
	return err
}

// Error is a Graph request that failed: Graph's answer (status, OData code
// and message), or no answer (Err).
type Error struct {
	Profile string
	// Op names the call, e.g. "sendMail".
	Op      string
	Status  int
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("profile %q: graph %s: %v", e.Profile, e.Op, e.Err)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("profile %q: graph %s: %d %s: %s", e.Profile, e.Op, e.Status, e.Code, msg)
	}
	return fmt.Sprintf("profile %q: graph %s: %d: %s", e.Profile, e.Op, e.Status, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether a later try may succeed: no answer (or a
// token that could not be had for a reason retrying fixes), throttling,
// or a server error.
func (e *Error) Temporary() bool {
	switch {
	case e.Status == 0:
		var pn interface{ PersonNeeded() bool }
		return !(errors.As(e.Err, &pn) && pn.PersonNeeded())
	case e.Status == http.StatusTooManyRequests, e.Status == http.StatusRequestTimeout, e.Status >= 500:
		return true
	}
	return false
}

// request is one Graph call: what to send and which statuses are success.
type request struct {
	op     string
	method string
	url    string // absolute
	// body opens the body again for each try; nil for none.
	body        func() (io.ReadCloser, error)
	length      int64 // of body, when known (not chunked)
	contentType string
	// auth is false for upload session PUTs: the upload URL carries its
	// own authorisation and Graph refuses a bearer token there.
	noAuth bool
	header http.Header
	// idempotent requests are tried again after a failure without an
	// answer; others (a send) only after an answer that says nothing was
	// done (429, 503).
	idempotent bool
	want       []int
}

// do runs r: it waits for a place among the requests in flight, retries
// what Graph says to retry, and returns the response (whose body the
// caller closes; the place is held until then) or an *Error.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	lim, key := c.o.Limiter, c.o.LimitKey
	deadline := time.Now().Add(c.o.MaxWait)
	refreshed := false
	backoff := time.Second
	for attempt := 0; ; attempt++ {
		release, err := lim.acquire(ctx, key)
		if err != nil {
			return nil, &Error{Profile: c.o.Profile, Op: r.op, Err: err}
		}
		resp, tok, err := c.send(ctx, r)
		if err != nil {
			release()
			if ctx.Err() != nil {
				return nil, &Error{Profile: c.o.Profile, Op: r.op, Err: ctx.Err()}
			}
			var ge *Error
			if errors.As(err, &ge) { // no token
				return nil, err
			}
			c.o.Observer.GraphRequest(c.o.Profile, 0)
			e := &Error{Profile: c.o.Profile, Op: r.op, Err: err}
			if !r.idempotent || attempt >= c.o.MaxRetries || time.Now().Add(backoff).After(deadline) {
				return nil, c.failed(r.op, e)
			}
			c.retried(r.op, "unavailable", e)
			if !sleep(ctx, jitter(backoff)) {
				return nil, &Error{Profile: c.o.Profile, Op: r.op, Err: ctx.Err()}
			}
			backoff *= 2
			continue
		}
		c.o.Observer.GraphRequest(c.o.Profile, resp.StatusCode)
		if wanted(resp.StatusCode, r.want) {
			resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
			return resp, nil
		}
		e := readError(resp, c.o.Profile, r.op)
		release()
		switch {
		case resp.StatusCode == http.StatusUnauthorized && !refreshed && tok != nil:
			// An expired or revoked token: one new one, at once.
			refreshed = true
			if inv, ok := c.o.Tokens.(invalidator); ok {
				inv.Invalidate(tok)
			}
			c.retried(r.op, "token", e)
			continue
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusGatewayTimeout || (resp.StatusCode >= 500 && r.idempotent):
			wait, ok := retryAfter(resp.Header.Get("Retry-After"))
			if !ok {
				wait = jitter(backoff)
				backoff *= 2
			}
			if attempt >= c.o.MaxRetries || time.Now().Add(wait).After(deadline) {
				return nil, c.failed(r.op, e)
			}
			reason := "unavailable"
			if resp.StatusCode == http.StatusTooManyRequests {
				reason = "throttled"
				// Every request of this mailbox waits: a throttle must
				// not turn into a storm.
				lim.pause(key, wait)
			}
			c.retried(r.op, reason, e)
			if !sleep(ctx, wait) {
				return nil, &Error{Profile: c.o.Profile, Op: r.op, Err: ctx.Err()}
			}
			continue
		}
		return nil, e
	}
}

// send makes one try of r with a deadline of its own.
func (c *Client) send(ctx context.Context, r request) (*http.Response, *oauth2.Token, error) {
	var body io.ReadCloser
	if r.body != nil {
		b, err := r.body()
		if err != nil {
			return nil, nil, err
		}
		body = b
	}
	rctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	req, err := http.NewRequestWithContext(rctx, r.method, r.url, body)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if r.length > 0 {
		req.ContentLength = r.length
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	var tok *oauth2.Token
	if !r.noAuth {
		// outlook-immutable-id.md: the Prefer header applies only to the
		// request that carries it.
		req.Header.Add("Prefer", `IdType="ImmutableId"`)
		tok, err = c.o.Tokens.Token(ctx)
		if err != nil {
			cancel()
			if body != nil {
				body.Close()
			}
			return nil, nil, &Error{Profile: c.o.Profile, Op: "token", Err: err}
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	}
	resp, err := c.o.HTTPClient.Do(req)
	if err != nil {
		cancel()
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL: it names the mailbox
		}
		return nil, tok, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, tok, nil
}

func wanted(status int, want []int) bool {
	for _, w := range want {
		if status == w {
			return true
		}
	}
	return len(want) == 0 && status/100 == 2
}

// readError turns a failed response into an *Error with Graph's code and
// message (errors.md: {"error":{"code","message","innerError"}}).
func readError(resp *http.Response, profile, op string) *Error {
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	json.Unmarshal(data, &body)
	msg, _, _ := strings.Cut(body.Error.Message, "\n")
	return &Error{Profile: profile, Op: op, Status: resp.StatusCode, Code: body.Error.Code, Message: msg}
}

// retryAfter reads Retry-After: seconds, possibly fractional (Graph's own
// sample is "2.128", throttling.md), or an HTTP date.
func retryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second)), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// releasingBody gives the request's place back when the body is closed.
type releasingBody struct {
	io.ReadCloser
	release func()
	done    bool
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.done {
		b.done = true
		b.release()
	}
	return err
}

// cancelBody ends the request's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// getJSON runs r and decodes its JSON answer into v.
func (c *Client) getJSON(ctx context.Context, r request, v any) error {
	resp, err := c.do(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if v == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return &Error{Profile: c.o.Profile, Op: r.op, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	return nil
}
