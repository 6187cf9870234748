package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"mailproxy/tokens"
)

// Webhook posts a JSON notice when a credential starts needing a person:
//
//	{"event":"needs_sign_in","profile":"crm","error":"...","fix":"run mailproxy token add crm","time":"..."}
//
// It is sent once per occurrence (the token cache calls it on the change,
// not on every failed request), retried a few times if the receiver fails.
// Notify queues a notice; Run, which owns the sending, posts them.
type Webhook struct {
	URL    string
	Client *http.Client
	Logger *slog.Logger
	// Backoff is the first wait before a retry (default 1 s; then ×4).
	Backoff time.Duration

	once  sync.Once
	queue chan Notice
	urlMu sync.Mutex // URL changes on reload
}

// SetURL changes where notices go ("": nowhere), for a reload.
func (h *Webhook) SetURL(u string) {
	h.urlMu.Lock()
	defer h.urlMu.Unlock()
	h.URL = u
}

func (h *Webhook) url() string {
	h.urlMu.Lock()
	defer h.urlMu.Unlock()
	return h.URL
}

// Notice is the webhook's body.
type Notice struct {
	Event   string    `json:"event"`
	Profile string    `json:"profile"`
	Error   string    `json:"error"`
	Fix     string    `json:"fix"`
	Time    time.Time `json:"time"`
}

// webhookQueue bounds the notices waiting to be sent.
const webhookQueue = 64

func (h *Webhook) q() chan Notice {
	h.once.Do(func() { h.queue = make(chan Notice, webhookQueue) })
	return h.queue
}

// Notify queues the notice for e without waiting (a token cache calls it
// under its lock). A notice that finds the queue full is logged and dropped.
func (h *Webhook) Notify(e *tokens.Error) {
	n := Notice{Event: "needs_sign_in", Profile: e.Profile, Error: e.Err.Error(), Fix: e.Fix, Time: time.Now().UTC()}
	select {
	case h.q() <- n:
	default:
		h.Logger.Warn("webhook queue full: notice dropped", "event", n.Event, "profile", n.Profile)
	}
}

// Run sends the queued notices until ctx ends; a notice being retried
// then is given up.
func (h *Webhook) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-h.q():
			h.send(ctx, n)
		}
	}
}

// NeedsSignIn sends the notice for e. It blocks until sent or given up.
func (h *Webhook) NeedsSignIn(e *tokens.Error) {
	h.send(context.Background(), Notice{Event: "needs_sign_in", Profile: e.Profile, Error: e.Err.Error(), Fix: e.Fix, Time: time.Now().UTC()})
}

func (h *Webhook) send(ctx context.Context, n Notice) {
	if h.url() == "" {
		return // alerts.webhook_url is not set
	}
	body, _ := json.Marshal(n)
	var err error
	wait := h.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	for attempt := 0; attempt < 4; attempt, wait = attempt+1, wait*4 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				h.Logger.Warn("webhook not sent: stopping", "event", n.Event, "profile", n.Profile, "err", err)
				return
			case <-time.After(wait):
			}
		}
		if err = h.post(ctx, body); err == nil {
			h.Logger.Info("webhook sent", "event", n.Event, "profile", n.Profile)
			return
		}
	}
	h.Logger.Warn("webhook failed", "event", n.Event, "profile", n.Profile, "err", err)
}

func (h *Webhook) post(ctx context.Context, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.Client.Do(req)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		return ue.Err // without the URL: a webhook URL often holds a secret
	}
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
	return nil
}
