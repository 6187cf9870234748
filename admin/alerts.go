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
	"time"

	"mailproxy/tokens"
)

// Webhook posts a JSON notice when a credential starts needing a person:
//
//	{"event":"needs_sign_in","profile":"crm","error":"...","fix":"run mailproxy token add crm","time":"..."}
//
// It is sent once per occurrence (the token cache calls it on the change,
// not on every failed request), retried a few times if the receiver fails.
type Webhook struct {
	URL    string
	Client *http.Client
	Logger *slog.Logger
	// Backoff is the first wait before a retry (default 1 s; then ×4).
	Backoff time.Duration
}

// Notice is the webhook's body.
type Notice struct {
	Event   string    `json:"event"`
	Profile string    `json:"profile"`
	Error   string    `json:"error"`
	Fix     string    `json:"fix"`
	Time    time.Time `json:"time"`
}

// NeedsSignIn sends the notice for e. It blocks until sent or given up.
func (h *Webhook) NeedsSignIn(e *tokens.Error) {
	n := Notice{Event: "needs_sign_in", Profile: e.Profile, Error: e.Err.Error(), Fix: e.Fix, Time: time.Now().UTC()}
	body, _ := json.Marshal(n)
	var err error
	wait := h.Backoff
	if wait <= 0 {
		wait = time.Second
	}
	for attempt := 0; attempt < 4; attempt, wait = attempt+1, wait*4 {
		if attempt > 0 {
			time.Sleep(wait)
		}
		if err = h.post(body); err == nil {
			h.Logger.Info("webhook sent", "event", n.Event, "profile", n.Profile)
			return
		}
	}
	h.Logger.Warn("webhook failed", "event", n.Event, "profile", n.Profile, "err", err)
}

func (h *Webhook) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
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
