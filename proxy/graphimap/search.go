package graphimap

import (
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-imap"

	"mailproxy/upstream/graph/mirror"
)

// searcher evaluates SEARCH criteria: flags, dates, sizes, sequence and
// UID sets, and the envelope's headers (From, To, Cc, Bcc, Subject,
// Reply-To, Sender, Message-ID) on the mirror; BODY and TEXT on Graph
// ($search, word by word as Exchange's own IMAP and Outlook search, at
// most 1000 matches: search-query-parameter.md); other headers on the
// message's MIME.
type searcher struct {
	m    *mailbox
	text map[string]map[string]bool // KQL query → ids Graph matched
	err  error
}

// SearchMessages answers SEARCH and UID SEARCH.
func (m *mailbox) SearchMessages(uid bool, c *imap.SearchCriteria) ([]uint32, error) {
	s := &searcher{m: m, text: map[string]map[string]bool{}}
	all := m.v.resolve(false, &imap.SeqSet{Set: []imap.Seq{{Start: 1, Stop: 0}}})
	var out []uint32
	for _, r := range all {
		ok := s.match(r, c)
		if s.err != nil {
			return nil, m.u.s.fail("search", s.err)
		}
		if ok {
			if uid {
				out = append(out, r.e.UID)
			} else {
				out = append(out, r.seq)
			}
		}
	}
	return out, nil
}

func (s *searcher) match(r ref, c *imap.SearchCriteria) bool {
	e := r.e
	switch {
	case c.SeqNum != nil && !c.SeqNum.Contains(r.seq):
		return false
	case c.Uid != nil && !c.Uid.Contains(e.UID):
		return false
	case !c.Since.IsZero() && day(e.Received).Before(day(c.Since)):
		return false
	case !c.Before.IsZero() && !day(e.Received).Before(day(c.Before)):
		return false
	case c.Larger > 0 && e.Size <= int64(c.Larger):
		return false
	case c.Smaller > 0 && e.Size >= int64(c.Smaller):
		return false
	}
	have := flagList(e)
	for _, f := range c.WithFlags {
		if !hasFlag(have, f) {
			return false
		}
	}
	for _, f := range c.WithoutFlags {
		if hasFlag(have, f) {
			return false
		}
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() || len(c.Header) > 0 {
		env, _ := s.m.f.Envelope(e.ID)
		switch {
		case !c.SentSince.IsZero() && day(env.Date).Before(day(c.SentSince)):
			return false
		case !c.SentBefore.IsZero() && !day(env.Date).Before(day(c.SentBefore)):
			return false
		}
		for key, values := range c.Header {
			for _, v := range values {
				if !s.header(e, env, key, v) {
					return false
				}
			}
		}
	}
	for _, t := range c.Body {
		if !s.graph(e, "body:"+quote(t)) {
			return false
		}
	}
	for _, t := range c.Text {
		if !s.graph(e, quote(t)) {
			return false
		}
	}
	for _, n := range c.Not {
		if s.match(r, n) {
			return false
		}
	}
	for _, or := range c.Or {
		if !s.match(r, or[0]) && !s.match(r, or[1]) {
			return false
		}
	}
	return true
}

// day is t's date, the unit IMAP's date criteria compare (RFC 3501
// §6.4.4: "disregarding time and timezone").
func day(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func hasFlag(have []string, f string) bool {
	for _, h := range have {
		if strings.EqualFold(h, f) {
			return true
		}
	}
	return false
}

// quote makes t one KQL term (a phrase when it has spaces).
func quote(t string) string {
	if strings.ContainsAny(t, " \t") {
		return `"` + strings.ReplaceAll(t, `"`, "") + `"`
	}
	return t
}

// header matches a header criterion: on the envelope when Graph has the
// field as a property, else on the MIME (an empty value asks only that
// the field be there, RFC 3501 §6.4.4).
func (s *searcher) header(e mirror.Entry, env mirror.Envelope, key, v string) bool {
	v = strings.ToLower(v)
	in := func(as []mirror.Address) bool {
		for _, a := range as {
			if strings.Contains(strings.ToLower(a.Name+" <"+a.Addr+">"), v) {
				return true
			}
		}
		return false
	}
	switch textproto.CanonicalMIMEHeaderKey(key) {
	case "From":
		return in(env.From)
	case "To":
		return in(env.To)
	case "Cc":
		return in(env.Cc)
	case "Bcc":
		return in(env.Bcc)
	case "Reply-To":
		return in(orFrom(env.ReplyTo, env.From))
	case "Sender":
		return in(orFrom(env.Sender, env.From))
	case "Subject":
		return strings.Contains(strings.ToLower(env.Subject), v)
	case "Message-Id":
		return strings.Contains(strings.ToLower(env.MessageID), v)
	}
	f, _, err := s.m.openBody(s.m.u.s.ctx, e)
	if err != nil {
		if !isNotFound(err) {
			s.err = err
		}
		return false
	}
	defer f.Close()
	h, _, err := header(f)
	if err != nil {
		return false
	}
	if !h.Has(key) {
		return false
	}
	if v == "" {
		return true
	}
	for _, hv := range h.Values(key) {
		if strings.Contains(strings.ToLower(hv), v) {
			return true
		}
	}
	return false
}

// graph matches a KQL query on Graph, once per SEARCH.
func (s *searcher) graph(e mirror.Entry, kql string) bool {
	ids, ok := s.text[kql]
	if !ok {
		found, err := s.m.u.s.b.Client.Search(s.m.u.s.ctx, s.m.info.ID, kql)
		if err != nil {
			s.err = err
			return false
		}
		ids = map[string]bool{}
		for _, id := range found {
			ids[id] = true
		}
		s.text[kql] = ids
	}
	return ids[e.ID]
}
