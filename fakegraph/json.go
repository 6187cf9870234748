package fakegraph

// The JSON shapes (message, mailFolder, user, collections with paging) and
// the handlers that read and update them.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

type emailAddress struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

type recipientJSON struct {
	EmailAddress emailAddress `json:"emailAddress"`
}

type itemBody struct {
	ContentType string `json:"contentType"`
	Content     string `json:"content"`
}

// msgInput is the writable part of a message resource, as sendMail's JSON
// form, a JSON create and PATCH carry it.
type msgInput struct {
	Subject       *string          `json:"subject"`
	Body          *itemBody        `json:"body"`
	From          *recipientJSON   `json:"from"`
	ToRecipients  *[]recipientJSON `json:"toRecipients"`
	CcRecipients  *[]recipientJSON `json:"ccRecipients"`
	BccRecipients *[]recipientJSON `json:"bccRecipients"`
	ReplyTo       *[]recipientJSON `json:"replyTo"`
	Importance    *string          `json:"importance"`
	IsRead        *bool            `json:"isRead"`
	Categories    *[]string        `json:"categories"`
	Flag          *struct {
		FlagStatus string `json:"flagStatus"`
	} `json:"flag"`
	InternetMessageID *string           `json:"internetMessageId"`
	Attachments       []attachmentInput `json:"attachments"`
	Extended          []extInput        `json:"singleValueExtendedProperties"`
	// Read at creation only ([Src] DAV GraphExchangeSession.createMessage
	// sets the received date of an IMAP APPEND this way).
	ReceivedDateTime *string `json:"receivedDateTime"`
	SentDateTime     *string `json:"sentDateTime"`
}

// extInput is a singleValueLegacyExtendedProperty: the value is a string
// whatever the type (singlevaluelegacyextendedproperty.md).
type extInput struct {
	ID    string `json:"id"`
	Value string `json:"value"`
}

// messageProps are the v1.0 message properties and relationships, lower
// case to canonical (message resource); anything else in a body is 400
// RequestBodyRead (GRAPH.md 4.1).
var messageProps = canonicalNames(`id createdDateTime lastModifiedDateTime changeKey categories receivedDateTime
	sentDateTime hasAttachments internetMessageId internetMessageHeaders subject body uniqueBody bodyPreview importance
	parentFolderId conversationId conversationIndex isDeliveryReceiptRequested isReadReceiptRequested isRead isDraft
	webLink inferenceClassification sender from toRecipients ccRecipients bccRecipients replyTo flag attachments
	extensions singleValueExtendedProperties multiValueExtendedProperties`)

func canonicalNames(names string) map[string]string {
	out := map[string]string{}
	for _, p := range strings.Fields(names) {
		out[strings.ToLower(p)] = p
	}
	return out
}

// draftOnly may change only while the message is a draft (GRAPH.md 4.1;
// PROTOCOLS.md §3.4).
var draftOnly = map[string]bool{"subject": true, "body": true, "toRecipients": true, "ccRecipients": true,
	"bccRecipients": true, "replyTo": true, "internetMessageId": true, "from": true, "sender": true}

// checkProps refuses a property the message type does not have.
func checkProps(raw map[string]json.RawMessage) *apiError {
	for k := range raw {
		if strings.HasPrefix(k, "@") {
			continue // annotations (@odata.type, @odata.etag)
		}
		if _, ok := messageProps[strings.ToLower(k)]; !ok {
			// GRAPH.md 4.1 (msgraph-sdk-dotnet#270, msgraph-sdk-python#440).
			return newError(400, "RequestBodyRead", "The property '"+k+"' does not exist on type 'microsoft.graph.message'. Make sure to only use property names that are defined by the type or mark the type as open type.")
		}
	}
	return nil
}

func fromJSONRecipients(rs *[]recipientJSON) []recipient {
	if rs == nil {
		return nil
	}
	var out []recipient
	for _, r := range *rs {
		out = append(out, recipient{Name: r.EmailAddress.Name, Address: r.EmailAddress.Address})
	}
	return out
}

func toJSONRecipients(rs []recipient) []recipientJSON {
	out := []recipientJSON{}
	for _, r := range rs {
		out = append(out, recipientJSON{emailAddress{r.Name, r.Address}})
	}
	return out
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

func (c *call) idOf(m *message) string {
	if c.immutable {
		return m.immID
	}
	return m.restID
}

func (m *message) changeKey() string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d", m.immID, m.changes))
	return "CQAAABYAAAA" + base64.RawURLEncoding.EncodeToString(sum[:12])
}

func (m *message) hasAttachments() bool {
	for _, a := range m.attachments {
		if !a.IsInline {
			return true
		}
	}
	// [Rec] a multipart/mixed with an attachment part.
	return strings.Contains(strings.ToLower(string(m.mime)), "content-disposition: attachment")
}

// selection is $select and $expand.
type selection struct {
	fields      map[string]bool // nil: the default set
	ext         []string        // extended property ids asked for, e.g. "Integer 0x0E08"
	attachments bool
}

var quoted = regexp.MustCompile(`'([^']*)'`)

func unknownProperty(p string) *apiError {
	// [Rec] Graph's OData text for an unknown $select/$expand property.
	return newError(400, "BadRequest", "Could not find a property named '"+p+"' on type 'microsoft.graph.message'.")
}

func (c *call) selection() (*selection, *apiError) {
	q := c.r.URL.Query()
	return parseSelection(q.Get("$select"), q.Get("$expand"))
}

// parseSelection reads $select and $expand (also kept in delta tokens).
func parseSelection(sel, expand string) (*selection, *apiError) {
	out := &selection{}
	if sel != "" {
		out.fields = map[string]bool{}
		for _, p := range strings.Split(sel, ",") {
			p = strings.TrimSpace(p)
			canon, ok := messageProps[strings.ToLower(p)]
			if !ok {
				return nil, unknownProperty(p)
			}
			out.fields[canon] = true
		}
	}
	for _, x := range splitTop(expand) {
		lx := strings.ToLower(x)
		switch {
		case strings.HasPrefix(lx, "singlevalueextendedproperties"):
			// $expand=singleValueExtendedProperties($filter=id eq 'Integer 0x0E08')
			// (GRAPH.md 2.5); several ids joined by "or" (DAV
			// GraphRequestBuilder) are each collected.
			for _, m := range quoted.FindAllStringSubmatch(x, -1) {
				out.ext = append(out.ext, m[1])
			}
		case lx == "attachments":
			out.attachments = true
		default:
			return nil, unknownProperty(x)
		}
	}
	return out, nil
}

// splitTop splits at commas outside parentheses.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" {
		out = append(out, t)
	}
	return out
}

// Integer MAPI properties the double computes rather than stores.
const (
	tagMessageFlags  = 0x0E07 // PR_MESSAGE_FLAGS
	tagMessageSize   = 0x0E08 // PidTagMessageSize
	tagArticleNumber = 0x0E23 // PidTagInternetArticleNumber
	tagFlagStatus    = 0x1090 // PidTagFlagStatus
)

// extValue answers the MAPI properties the double computes.
func (m *message) extValue(tag uint64) (string, bool) {
	switch tag {
	case tagMessageSize:
		// PidTagMessageSize (GRAPH.md 2.5: Graph has no size property).
		// Exchange's PR_MESSAGE_SIZE is the size in the store, not the
		// MIME's octets: close to, not equal to, what $value returns. The
		// double says the MIME's length plus a fixed store overhead of 512.
		return strconv.Itoa(m.renderedSize() + 512), true
	case tagMessageFlags:
		// PR_MESSAGE_FLAGS: MSGFLAG_READ 0x1, MSGFLAG_UNSENT 0x8,
		// MSGFLAG_HASATTACH 0x10 (PROTOCOLS.md §3.6).
		f := 0
		if m.isRead {
			f |= 1
		}
		if m.isDraft {
			f |= 8
		}
		if m.hasAttachments() {
			f |= 0x10
		}
		return strconv.Itoa(f), true
	case tagArticleNumber:
		// PidTagInternetArticleNumber: the IMAP UID source DAV uses
		// (PROTOCOLS.md §3.9); [Rec] a new number on every entry into a folder.
		return strconv.FormatInt(m.article, 10), true
	case tagFlagStatus:
		// PidTagFlagStatus, the MAPI side of flag.flagStatus ([MS-OXOFLAG]
		// 2.2.1.1: 1 followupComplete, 2 followupFlagged, absent when not
		// flagged; DAV GraphField "flagStatus").
		switch m.flag {
		case "complete":
			return "1", true
		case "flagged":
			return "2", true
		}
	}
	return "", false
}

// extProperty is the extended property id of m: computed, or stored by
// PATCH or a JSON create; Graph answers with its own spelling of the id
// ("Integer 0xe08").
func (m *message) extProperty(id string) (extProp, bool) {
	canon, tag, isInteger := extKey(id)
	if isInteger {
		switch tag {
		case tagMessageSize, tagMessageFlags, tagArticleNumber, tagFlagStatus:
			v, ok := m.extValue(tag)
			return extProp{canon, v}, ok
		}
	}
	p, ok := m.ext[strings.ToLower(canon)]
	return p, ok
}

// renderedSize is len(m.render(true)) without rendering when nothing is
// folded in.
func (m *message) renderedSize() int {
	if len(m.attachments) == 0 {
		return len(m.mime)
	}
	return len(m.render(true))
}

func (c *call) messageJSON(m *message, sel *selection) map[string]any {
	out := map[string]any{"@odata.etag": `W/"` + m.changeKey() + `"`, "id": c.idOf(m)}
	want := func(p string) bool { return sel == nil || sel.fields == nil || sel.fields[p] }
	addr := func(r *recipient) any {
		if r == nil {
			return nil
		}
		return recipientJSON{emailAddress{r.Name, r.Address}}
	}
	ct, content := "", ""
	if want("body") || want("bodyPreview") {
		ct, content = textBody(m.render(true))
	}
	props := []struct {
		name  string
		value func() any
	}{
		{"createdDateTime", func() any { return ts(m.created) }},
		{"lastModifiedDateTime", func() any { return ts(m.modified) }},
		{"changeKey", func() any { return m.changeKey() }},
		{"categories", func() any { return append([]string{}, m.categories...) }},
		{"receivedDateTime", func() any { return ts(m.received) }},
		{"sentDateTime", func() any { return ifNotDraft(m, ts(m.sent)) }},
		{"hasAttachments", func() any { return m.hasAttachments() }},
		{"internetMessageId", func() any { return emptyNil(m.msgID) }},
		{"subject", func() any { return m.subject }},
		{"bodyPreview", func() any { return preview(ct, content) }},
		{"importance", func() any { return m.importance }},
		{"parentFolderId", func() any { return m.folder.id }},
		{"conversationId", func() any { return m.conversationID() }},
		{"isDeliveryReceiptRequested", func() any { return m.deliveryRequested }},
		{"isReadReceiptRequested", func() any { return m.receiptRequested }},
		{"isRead", func() any { return m.isRead }},
		{"isDraft", func() any { return m.isDraft }},
		{"inferenceClassification", func() any { return m.inference }},
		{"body", func() any { return itemBody{ct, content} }},
		{"sender", func() any { return addr(m.from) }},
		{"from", func() any { return addr(m.from) }},
		{"toRecipients", func() any { return toJSONRecipients(m.to) }},
		{"ccRecipients", func() any { return toJSONRecipients(m.cc) }},
		{"bccRecipients", func() any { return toJSONRecipients(m.bcc) }},
		{"replyTo", func() any { return toJSONRecipients(m.replyTo) }},
		{"flag", func() any { return map[string]any{"flagStatus": m.flag} }},
	}
	for _, p := range props {
		if want(p.name) {
			out[p.name] = p.value()
		}
	}
	if sel != nil && sel.fields != nil {
		for p := range sel.fields {
			if _, ok := out[p]; !ok && p != "attachments" && p != "singleValueExtendedProperties" {
				out[p] = nil // selectable, not rendered by the double
			}
		}
	}
	if sel != nil && len(sel.ext) > 0 {
		var ext []map[string]string
		for _, id := range sel.ext {
			if p, ok := m.extProperty(id); ok {
				ext = append(ext, map[string]string{"id": p.id, "value": p.value})
			}
		}
		if ext != nil {
			out["singleValueExtendedProperties"] = ext
		}
	}
	if sel != nil && sel.attachments {
		var as []any
		for _, a := range m.attachments {
			as = append(as, attachmentJSON(a))
		}
		out["attachments"] = append([]any{}, as...)
	}
	return out
}

func ifNotDraft(m *message, v string) any {
	if m.isDraft {
		return nil
	}
	return v
}

func emptyNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// conversationID is [Rec] one per normalised subject and mailbox.
func (m *message) conversationID() string {
	s := strings.ToLower(strings.TrimSpace(m.subject))
	for _, p := range []string{"re:", "fw:", "fwd:", "aw:", "wg:"} {
		s = strings.TrimSpace(strings.TrimPrefix(s, p))
	}
	sum := sha256.Sum256([]byte(m.box.objectID + "/" + s))
	return "AAQkA" + m.box.stem + "AQA" + base64.RawURLEncoding.EncodeToString(sum[:16])
}

func (c *call) context(suffix string) string {
	return c.s.base(c.r) + "/v1.0/$metadata#users('" + url.PathEscape(c.box.address) + "')/" + suffix
}

// message finds the path's message; under mailFolders/{f} it must be in f.
func (c *call) message() (*message, *apiError) {
	m, e := c.s.lookup(c.box, c.msgRef)
	if e != nil {
		return nil, e
	}
	if c.folderRef != "" {
		f, e := c.box.resolveFolder(c.folderRef)
		if e != nil {
			return nil, e
		}
		if m.folder != f {
			return nil, errNotFound()
		}
	}
	return m, nil
}

func (c *call) getMessage() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	sel, e := c.selection()
	if e != nil {
		return fail(e)
	}
	out := c.messageJSON(m, sel)
	out["@odata.context"] = c.context("messages/$entity")
	return reply{status: 200, body: out}
}

// getValue is the MIME: 200, Content-Type text/plain (GRAPH.md 2.6,
// outlook-get-mime-message.md). After BreakValue the connection is cut
// partway through it.
func (c *call) getValue() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	c.s.values.Add(1)
	rp := reply{status: 200, raw: m.render(true), ctype: "text/plain"}
	if c.s.breakValue {
		rp.cut, rp.cutAfter = true, c.s.breakAfter
	}
	return rp
}

// pageSize reads $top (1–1000, default 10) and Prefer: odata.maxpagesize
// (capped at 1000), the smaller winning; applied is the preference as
// applied (GRAPH.md 2.1, 2.3, 2.4).
func (c *call) pageSize() (size int, applied string, e *apiError) {
	q := c.r.URL.Query()
	size, top := 10, false
	if q.Has("$top") {
		v := q.Get("$top")
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			// GRAPH.md 2.3 (laravel-microsoft-graph#90); [Rec] > 1000 alike.
			return 0, "", badTop(v)
		}
		size, top = n, true
	}
	if n, ok := maxPageSize(c.r); ok {
		if !top || n < size {
			size = n
		}
		applied = "odata.maxpagesize=" + strconv.Itoa(n)
	}
	return size, applied, nil
}

func badTop(v string) *apiError {
	return newError(400, "BadRequest", "Invalid value '"+v+"' for $top query option found. The $top query option requires a non-negative integer value.")
}

// maxPageSize is Prefer: odata.maxpagesize=N, [Rec] capped at 1000.
func maxPageSize(r *http.Request) (int, bool) {
	for _, p := range preferences(r) {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "odata.maxpagesize") {
			continue
		}
		if n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(v), `"`)); err == nil && n >= 1 {
			return min(n, 1000), true
		}
	}
	return 0, false
}

// page reads the page size and $skip, and builds @odata.nextLink with
// $skip (GRAPH.md 2.1, 2.3, 2.4).
func (c *call) page(total int) (start, end int, next, applied string, e *apiError) {
	q := c.r.URL.Query()
	size, applied, e := c.pageSize()
	if e != nil {
		return 0, 0, "", "", e
	}
	skip := 0
	if q.Has("$skip") {
		v := q.Get("$skip")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			// [Rec]
			return 0, 0, "", "", newError(400, "BadRequest", "Invalid value '"+v+"' for $skip query option found. The $skip query option requires a non-negative integer value.")
		}
		skip = n
	}
	start = min(skip, total)
	end = min(start+size, total)
	if end < total {
		q.Set("$skip", strconv.Itoa(end))
		next = c.s.base(c.r) + c.r.URL.Path + "?" + q.Encode()
	}
	return start, end, next, applied, nil
}

func (c *call) collection(ctx string, values []any, total int, next, applied string) reply {
	out := map[string]any{"@odata.context": c.context(ctx), "value": values}
	if next != "" {
		out["@odata.nextLink"] = next
	}
	if strings.EqualFold(c.r.URL.Query().Get("$count"), "true") {
		out["@odata.count"] = total
	}
	rp := reply{status: 200, body: out}
	if applied != "" {
		rp.header = map[string][]string{"Preference-Applied": {applied}}
	}
	return rp
}

// listMessages is GET {u}/messages or {u}/mailFolders/{f}/messages
// (user-list-messages.md), with $search (search.go).
func (c *call) listMessages() reply {
	q := c.r.URL.Query()
	var f *folder
	ctx := "messages"
	if c.folderRef != "" {
		var e *apiError
		if f, e = c.box.resolveFolder(c.folderRef); e != nil {
			return fail(e)
		}
		ctx = "mailFolders('" + c.folderRef + "')/messages"
	}
	sel, e := c.selection()
	if e != nil {
		return fail(e)
	}
	if q.Has("$search") {
		return c.searchMessages(f, ctx, sel)
	}
	if q.Has("$filter") {
		// [Rec] rather than answer unfiltered.
		return fail(newError(501, "NotImplemented", "The Graph double does not implement $filter on message lists."))
	}
	// GRAPH.md 2.7: the default order is undocumented; [Rec] newest first,
	// as Outlook shows it.
	desc := true
	if ob := strings.Fields(strings.Split(q.Get("$orderby"), ",")[0]); len(ob) > 0 {
		switch strings.ToLower(ob[0]) {
		case "receiveddatetime", "sentdatetime", "createddatetime":
		default:
			return fail(unknownProperty(ob[0]))
		}
		desc = len(ob) > 1 && strings.EqualFold(ob[1], "desc")
	}
	msgs := c.box.inFolder(f)
	if desc {
		slices.Reverse(msgs)
	}
	start, end, next, applied, e := c.page(len(msgs))
	if e != nil {
		return fail(e)
	}
	values := []any{}
	for _, m := range msgs[start:end] {
		values = append(values, c.messageJSON(m, sel))
	}
	return c.collection(ctx, values, len(msgs), next, applied)
}

// getUser is GET {u}, which needs User.Read* (GRAPH.md 8.5).
func (c *call) getUser() reply {
	name, _, _ := strings.Cut(c.box.address, "@")
	return reply{status: 200, body: map[string]any{"@odata.context": c.s.base(c.r) + "/v1.0/$metadata#users/$entity",
		"id": c.box.objectID, "mail": c.box.address, "userPrincipalName": c.box.address, "displayName": name}}
}
