package graph

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// MessageProperties are the properties a mirror of a folder keeps, asked
// for in every delta round: what IMAP's FETCH of FLAGS, INTERNALDATE,
// RFC822.SIZE and ENVELOPE answers without the MIME.
const MessageProperties = "id,receivedDateTime,sentDateTime,subject,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo," +
	"internetMessageId,isRead,isDraft,flag,categories"

// Extended properties read with every message: the store size (Graph v1.0
// has no size property, GRAPH.md 2.5) and PidTagLastVerbExecuted, which
// says a message was answered (102 reply, 103 reply all) or forwarded
// (104), as DAV reads it (GraphField.java lastVerbExecuted).
const (
	SizeTag     = 0x0E08
	LastVerbTag = 0x1081
)

// DeltaPageSize is the page size asked of delta rounds (Prefer:
// odata.maxpagesize is honoured there, GRAPH.md 2.4; $top would cap the
// whole round, GRAPH.md 6.4).
const DeltaPageSize = 1000

// ErrDeltaExpired: Graph no longer knows the round a delta link continues
// (410 SyncStateNotFound, GRAPH.md 9); the caller starts a new round.
var ErrDeltaExpired = errors.New("graph delta link is no longer valid")

// Delta reads one round of changes to folder's messages: from link, the
// deltaLink the last round ended with, or, with link "", an initial round
// of every message in the folder (delta-query-messages.md). page is
// called for each page in order: messages with MessageProperties, and
// those that left the folder with Removed set. It returns the round's
// deltaLink, to start the next round from.
func (c *Client) Delta(ctx context.Context, folder, link string, page func([]Message) error) (string, error) {
	next := link
	if next == "" {
		q := url.Values{}
		q.Set("$select", MessageProperties)
		q.Set("$expand", "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'Integer 0x1081')")
		next = c.folderURL(folder) + "/messages/delta?" + q.Encode()
	}
	for {
		var p struct {
			Value []Message `json:"value"`
			Next  string    `json:"@odata.nextLink"`
			Delta string    `json:"@odata.deltaLink"`
		}
		err := c.getJSON(ctx, request{op: "messages delta", method: http.MethodGet, url: next, idempotent: true,
			header: http.Header{"Prefer": {"odata.maxpagesize=1000"}}}, &p)
		if ge, ok := errors.AsType[*Error](err); ok && (ge.Status == http.StatusGone || strings.HasPrefix(ge.Code, "SyncState")) {
			return "", ErrDeltaExpired
		}
		if err != nil {
			return "", err
		}
		if err := page(p.Value); err != nil {
			return "", err
		}
		switch {
		case p.Next != "":
			next = p.Next // verbatim: it carries the round's options
		case p.Delta != "":
			return p.Delta, nil
		default:
			return "", &Error{Profile: c.o.Profile, Op: "messages delta", Err: errors.New("a page with neither nextLink nor deltaLink")}
		}
	}
}

// Search is the ids of folder's messages that match a KQL query
// (search-query-parameter.md: $search on message collections matches
// words of from, subject and body, or of the property a term names, and
// returns at most 1000 results).
func (c *Client) Search(ctx context.Context, folder, kql string) ([]string, error) {
	q := url.Values{}
	q.Set("$search", `"`+strings.ReplaceAll(kql, `"`, `\"`)+`"`)
	q.Set("$select", "id")
	q.Set("$top", "250")
	next := c.folderURL(folder) + "/messages?" + q.Encode()
	var ids []string
	for next != "" {
		var p struct {
			Value []struct {
				ID string `json:"id"`
			} `json:"value"`
			Next string `json:"@odata.nextLink"`
		}
		if err := c.getJSON(ctx, request{op: "search messages", method: http.MethodGet, url: next, idempotent: true}, &p); err != nil {
			return nil, err
		}
		for _, m := range p.Value {
			ids = append(ids, m.ID)
		}
		next = p.Next
	}
	return ids, nil
}

// MessageJSON reads a message's properties as Graph gives them, with
// query's $select and $expand.
func (c *Client) MessageJSON(ctx context.Context, id string, query url.Values) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	err := c.getJSON(ctx, request{op: "get message", method: http.MethodGet, url: c.messageURL(id) + "?" + query.Encode(), idempotent: true}, &m)
	return m, err
}

// CreateMessage creates a message in folder from its JSON properties
// (user-post-messages.md: 201): the one way to make a message that is not
// a draft, with PR_MESSAGE_FLAGS (Integer 0x0E07) set at creation
// (GRAPH.md 4.4).
func (c *Client) CreateMessage(ctx context.Context, folder string, props map[string]any) (Message, error) {
	var m Message
	err := c.getJSON(ctx, request{op: "create message", method: http.MethodPost, url: c.folderURL(folder) + "/messages",
		body: jsonBody(props), contentType: "application/json", want: []int{http.StatusCreated}}, &m)
	return m, err
}
