package app

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailproxy/config"
	"mailproxy/proxy"
	"mailproxy/proxy/graphimap"
	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// graphProfile is a profile that talks to Microsoft Graph.
type graphProfile struct {
	client *graph.Client
	sender *graph.Sender
	drop   *graph.Maildrop
	imap   *graphimap.Backend
}

// buildGraph makes the Graph client of a profile with graph:, and what
// its smtp and pop3 listeners serve.
func (a *App) buildGraph(p *config.Profile) error {
	g := p.Graph
	tc, err := clientTLS(g.CAFile)
	if err != nil {
		return fmt.Errorf("profile %q: graph.ca_file: %w", p.Name, err)
	}
	user := g.User
	if p.Credentials.Delegated() {
		user = "" // a person's token: /me
	}
	c := graph.New(graph.Options{
		Profile: p.Name, Endpoint: g.Endpoint, User: user, Tokens: a.creds[p.Name].cache,
		HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: graph.DefaultConcurrency, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 30 * time.Second}},
		// Graph's limits are per app and mailbox, whatever the profile.
		Limiter: a.graphLimiter, LimitKey: strings.ToLower(p.Credentials.ClientID + "/" + g.User),
		Observer: a.metrics, Logger: a.log,
	})
	gp := &graphProfile{client: c}
	if s := p.SMTP; s != nil {
		gp.sender = graph.NewSender(c, p.Mailbox, s.MaxMessageBytes, a.log)
	}
	if r := p.POP3; r != nil {
		gp.drop = graph.NewMaildrop(c, r.Folder, r.Dele == config.DeleDelete)
	}
	if p.IMAP != nil {
		gp.imap = &graphimap.Backend{Profile: p.Name, Client: c, Mirror: a.mirror(g, p.Mailbox), Poll: g.PollInterval.D(),
			AppendLimit: config.DefaultGraphMaxMessageBytes, Log: a.log}
	}
	a.graph[p.Name] = gp
	return nil
}

// mirror is the mirror of a Graph mailbox, one per state file: profiles
// of one mailbox share it (its file can be open once).
func (a *App) mirror(g *config.Graph, mailbox string) *mirror.Mailbox {
	name := g.User
	if name == "" {
		name = mailbox
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '@', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, strings.ToLower(name))
	path := filepath.Join(g.StateDir, name+".db")
	if m := a.mirrors[path]; m != nil {
		return m
	}
	m := mirror.New(path, filepath.Join(g.StateDir, name+".bodies"), int64(g.CacheMB)<<20)
	a.mirrors[path] = m
	return m
}

// closeGraph ends the Graph IMAP servers and closes the mirrors' files.
func (a *App) closeGraph() {
	for _, gp := range a.graph {
		if gp.imap != nil {
			gp.imap.Close()
		}
	}
	for _, m := range a.mirrors {
		if err := m.Close(); err != nil {
			a.log.Warn("graph state could not be closed", "err", err)
		}
	}
}

// graphSender adapts graph.Sender to proxy.Sender.
type graphSender struct{ s *graph.Sender }

func (g graphSender) Begin(ctx context.Context, from string, opts *smtp.MailOptions) (proxy.Transaction, error) {
	return g.s.Begin(ctx, from, opts)
}

// graphDrop adapts graph.Maildrop to proxy.Maildrop.
type graphDrop struct{ d *graph.Maildrop }

func (g graphDrop) List(ctx context.Context) ([]proxy.DropMessage, error) {
	items, err := g.d.List(ctx)
	out := make([]proxy.DropMessage, len(items))
	for i, it := range items {
		out[i] = proxy.DropMessage{ID: it.ID, Size: it.Size}
	}
	return out, err
}

func (g graphDrop) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	return g.d.Open(ctx, id)
}
func (g graphDrop) Remove(ctx context.Context, ids []string) error { return g.d.Remove(ctx, ids) }
