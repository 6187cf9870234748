package fakegraph

// Message delta per folder: GET {u}/mailFolders/{f}/messages/delta
// (message-delta.md, concepts/delta-query-messages.md; GRAPH.md 6).
//
// A round is one or more requests: the first takes a snapshot of what it
// reports, the others page through it by @odata.nextLink ($skiptoken); its
// last page carries @odata.deltaLink ($deltatoken), from which the next
// round reports what changed since. The query options of a round's first
// request travel in its tokens (GRAPH.md 6.1). Tokens are base64url JSON;
// snapshots stay in the server, by round.

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// deltaOptions are the query options of a round's first request.
type deltaOptions struct {
	Select     string `json:"s,omitempty"`
	Expand     string `json:"e,omitempty"`
	ChangeType string `json:"c,omitempty"` // created, updated or deleted
	Filter     string `json:"f,omitempty"` // receivedDateTime ge|gt {value}
	OrderBy    string `json:"o,omitempty"` // receivedDateTime desc
	Top        int    `json:"t,omitempty"` // the round's total (GRAPH.md 6.4)
}

// deltaToken is what $skiptoken and $deltatoken hold.
type deltaToken struct {
	Gen int64 `json:"g"` // ExpireDeltaTokens' generation
	// A skip token: the round in progress and how much of it was served.
	Round  string `json:"r,omitempty"`
	Offset int    `json:"n,omitempty"`
	// A delta token: the folder, the mailbox change the round saw last,
	// and the options.
	Box    string       `json:"b,omitempty"`
	Folder string       `json:"f,omitempty"`
	Since  int64        `json:"c,omitempty"`
	Opts   deltaOptions `json:"q"`
}

type deltaRound struct {
	id      string
	folder  *folder
	opts    deltaOptions
	sel     *selection
	entries []deltaEntry
	until   int64 // the mailbox's changes when the snapshot was taken
}

// deltaEntry is a message to report or a removal (16 bytes: a round of
// 50,000 is small).
type deltaEntry struct {
	m       *message
	removed *removal
}

// maxRounds is the rounds kept for their skip tokens: Outlook's "internal
// delta token cache" drops the oldest tokens once full
// (delta-query-overview.md, Token duration); [Rec] its size.
const maxRounds = 100

// ExpireDeltaTokens makes every skip and delta token handed out so far
// invalid: using one is 410 SyncStateNotFound, and the client must sync
// again from scratch.
func (s *Server) ExpireDeltaTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deltaGen++
	s.rounds, s.roundOrder = map[string]*deltaRound{}, nil
}

// syncStateNotFound: delta-query-overview.md (Token duration: a 40X
// with syncStateNotFound on an expired token); GRAPH.md 9 expects 410;
// status, code and text as observed (microsoft-graph-docs#2350, #2162).
func syncStateNotFound(gen, highest int64) *apiError {
	return newError(410, "SyncStateNotFound", fmt.Sprintf("The sync state generation is not found; generation=%d;[highest=%d].", gen, highest))
}

func badToken(name string) *apiError {
	// [Rec] a token that does not parse.
	return newError(400, "BadRequest", "The "+name+" is malformed.")
}

func (s *Server) encodeToken(t deltaToken) string {
	t.Gen = s.deltaGen
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Server) decodeToken(name, v string) (deltaToken, *apiError) {
	var t deltaToken
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || json.Unmarshal(b, &t) != nil {
		return t, badToken(name)
	}
	if t.Gen != s.deltaGen {
		return t, syncStateNotFound(t.Gen, s.deltaGen)
	}
	return t, nil
}

// delta serves one page of a round.
func (c *call) delta() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	q := c.r.URL.Query()
	var rd *deltaRound
	offset := 0
	switch {
	case q.Has("$skiptoken") && q.Has("$deltatoken"):
		return fail(newError(400, "BadRequest", "$skiptoken and $deltatoken cannot be used together.")) // [Rec]
	case q.Has("$skiptoken"):
		t, e := c.s.decodeToken("$skiptoken", q.Get("$skiptoken"))
		if e != nil {
			return fail(e)
		}
		if rd = c.s.rounds[t.Round]; rd == nil {
			// The round fell out of the cache (microsoft-graph-docs#2162:
			// older nextLinks turn SyncStateNotFound).
			return fail(syncStateNotFound(t.Gen, c.s.deltaGen))
		}
		if rd.folder != f {
			return fail(newError(400, "BadRequest", "The $skiptoken is for another folder.")) // [Rec]
		}
		offset = min(t.Offset, len(rd.entries))
	case q.Has("$deltatoken"):
		t, e := c.s.decodeToken("$deltatoken", q.Get("$deltatoken"))
		if e != nil {
			return fail(e)
		}
		if t.Box != c.box.objectID || t.Folder != f.id {
			return fail(newError(400, "BadRequest", "The $deltatoken is for another folder.")) // [Rec]
		}
		if rd, e = c.s.newRound(f, t.Opts, t.Since, false); e != nil {
			return fail(e)
		}
	default:
		opts, e := deltaQuery(q)
		if e != nil {
			return fail(e)
		}
		if rd, e = c.s.newRound(f, opts, 0, true); e != nil {
			return fail(e)
		}
	}
	// Pages are Prefer: odata.maxpagesize (default 10), read on every
	// request (delta-query-messages.md sends it each time); $top does not
	// size them (GRAPH.md 6.4).
	size, applied := 10, ""
	if n, ok := maxPageSize(c.r); ok {
		size, applied = n, "odata.maxpagesize="+strconv.Itoa(n)
	}
	end := min(offset+size, len(rd.entries))
	values := make([]any, 0, end-offset)
	for _, en := range rd.entries[offset:end] {
		values = append(values, c.deltaJSON(en, rd.sel))
	}
	// The context is the doc's examples'; the links name the folder in
	// OData's key form (GRAPH.md 6.1).
	link := c.s.base(c.r) + "/v1.0/users/" + c.box.objectID + "/mailFolders('" + f.id + "')/messages/delta?"
	out := map[string]any{"@odata.context": c.s.base(c.r) + "/v1.0/$metadata#Collection(message)", "value": values}
	if end < len(rd.entries) {
		out["@odata.nextLink"] = link + "$skiptoken=" + c.s.encodeToken(deltaToken{Round: rd.id, Offset: end})
	} else {
		out["@odata.deltaLink"] = link + "$deltatoken=" + c.s.encodeToken(deltaToken{Box: c.box.objectID, Folder: f.id, Since: rd.until, Opts: rd.opts})
	}
	rp := reply{status: 200, body: out}
	if applied != "" {
		rp.header = map[string][]string{"Preference-Applied": {applied}}
	}
	return rp
}

// deltaJSON renders a message as listings do, with its type as the doc's
// examples show it, or a removal: deleted and moved-out items alike
// (GRAPH.md 6.3), by the id the request asks for (the REST id it had).
func (c *call) deltaJSON(en deltaEntry, sel *selection) map[string]any {
	if en.m == nil {
		id := en.removed.restID
		if c.immutable {
			id = en.removed.immID
		}
		return map[string]any{"@odata.type": "#microsoft.graph.message", "id": id, "@removed": map[string]string{"reason": "deleted"}}
	}
	out := c.messageJSON(en.m, sel)
	out["@odata.type"] = "#microsoft.graph.message"
	return out
}

// deltaFilter is the one $filter delta supports (message-delta.md:
// receivedDateTime ge|gt {value}).
var deltaFilter = regexp.MustCompile(`(?i)^\s*receivedDateTime\s+(ge|gt)\s+'?([0-9T:.+Z-]+)'?\s*$`)

// receivedAfter reads a delta $filter: received must be at or after (ge)
// or after (gt) the time; "" lets everything through.
func receivedAfter(filter string) (func(time.Time) bool, *apiError) {
	if filter == "" {
		return func(time.Time) bool { return true }, nil
	}
	m := deltaFilter.FindStringSubmatch(filter)
	if m == nil {
		// [Rec] status and text; the doc names the only filter allowed.
		return nil, newError(400, "BadRequest", "Delta supports $filter=receivedDateTime ge|gt {value} only.")
	}
	t, err := time.Parse(time.RFC3339Nano, m[2])
	if err != nil {
		return nil, newError(400, "BadRequest", "Invalid $filter value '"+m[2]+"': a DateTimeOffset is expected.")
	}
	if strings.EqualFold(m[1], "gt") {
		return func(r time.Time) bool { return r.After(t) }, nil
	}
	return func(r time.Time) bool { return !r.Before(t) }, nil
}

// deltaQuery reads and checks a round's first request (message-delta.md;
// GRAPH.md 6.2): $select, $expand, $top, changeType, $filter and $orderby
// as far as delta supports them, no $search.
func deltaQuery(q url.Values) (deltaOptions, *apiError) {
	o := deltaOptions{Select: q.Get("$select"), Expand: q.Get("$expand"), Filter: q.Get("$filter"), OrderBy: q.Get("$orderby")}
	if _, e := parseSelection(o.Select, o.Expand); e != nil {
		return o, e
	}
	if q.Has("$search") {
		// "There is no support for $search"; [Rec] status and text.
		return o, newError(400, "BadRequest", "$search is not supported by delta.")
	}
	if q.Has("$top") {
		n, err := strconv.Atoi(q.Get("$top"))
		if err != nil || n < 1 {
			return o, badTop(q.Get("$top"))
		}
		o.Top = n
	}
	switch ct := strings.ToLower(q.Get("changeType")); ct {
	case "", "created", "updated", "deleted":
		o.ChangeType = ct
	default:
		// [Rec]
		return o, newError(400, "BadRequest", "Invalid changeType '"+q.Get("changeType")+"': created, updated or deleted.")
	}
	if _, e := receivedAfter(o.Filter); e != nil {
		return o, e
	}
	if ob := strings.Fields(o.OrderBy); len(ob) > 0 && !(len(ob) == 2 && strings.EqualFold(ob[0], "receivedDateTime") && strings.EqualFold(ob[1], "desc")) {
		// "The only supported $orderby expression is
		// $orderby=receivedDateTime+desc"; [Rec] status and text.
		return o, newError(400, "BadRequest", "Delta supports $orderby=receivedDateTime desc only.")
	}
	return o, nil
}

// newRound takes a round's snapshot of f: every message in it for an
// initial round, else what changed after the mailbox change since.
// Messages come newest first: the order of $orderby=receivedDateTime
// desc, and [Rec] the double's order without it ("the return order isn't
// guaranteed"); removals come first.
func (s *Server) newRound(f *folder, opts deltaOptions, since int64, initial bool) (*deltaRound, *apiError) {
	sel, e := parseSelection(opts.Select, opts.Expand)
	if e != nil {
		return nil, e
	}
	include, e := receivedAfter(opts.Filter)
	if e != nil {
		return nil, e
	}
	rd := &deltaRound{id: randomB64(12), folder: f, opts: opts, sel: sel, until: f.box.changes}
	ms := f.messages()
	if !initial && (opts.ChangeType == "" || opts.ChangeType == "deleted") {
		rd.entries = f.removalsSince(since, include)
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if !include(m.received) {
			continue
		}
		if !initial {
			// The initial round is every message, whatever changeType
			// (delta-query-messages.md, Example 2).
			created := m.entered > since
			switch {
			case m.lastChange <= since, opts.ChangeType == "deleted",
				opts.ChangeType == "created" && !created, opts.ChangeType == "updated" && created:
				continue
			}
		}
		rd.entries = append(rd.entries, deltaEntry{m: m})
	}
	if opts.Filter != "" && len(rd.entries) > 5000 {
		// "Applying $filter in a delta query returns only up to 5,000
		// messages" (delta-query-messages.md).
		rd.entries = rd.entries[:5000]
	}
	if opts.Top > 0 && len(rd.entries) > opts.Top {
		// $top caps the round, not the page (GRAPH.md 6.4).
		rd.entries = rd.entries[:opts.Top]
	}
	s.rounds[rd.id] = rd
	s.roundOrder = append(s.roundOrder, rd.id)
	if len(s.roundOrder) > maxRounds {
		delete(s.rounds, s.roundOrder[0])
		s.roundOrder = s.roundOrder[1:]
	}
	return rd, nil
}

// removalsSince is the messages that left f after the mailbox change
// since and are not in it now. A message was in f at since, and so known
// to the client, when it left after since having entered at or before it:
// that is one removal at most per message. [Rec] One that came after since
// and left again was never reported: it is left out.
func (f *folder) removalsSince(since int64, include func(time.Time) bool) []deltaEntry {
	i := sort.Search(len(f.removals), func(i int) bool { return f.removals[i].change > since })
	var out []deltaEntry
	for _, r := range f.removals[i:] {
		if r.entered <= since && !f.holds(r.m) && include(r.received) {
			out = append(out, deltaEntry{removed: &r})
		}
	}
	return out
}
