package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Body is a message's octets, readable as often as a request is tried.
type Body interface {
	Open() (io.ReadCloser, error)
	Size() int64
}

// Bytes is a Body in memory.
type Bytes []byte

// SpooledBody is a Body read once from a stream: in memory when small, in
// an unlinked temporary file when large. Close frees it.
type SpooledBody interface {
	Body
	io.Closer
}

// Spool reads r, at most limit octets (ErrTooLarge past that).
func Spool(r io.Reader, limit int64) (SpooledBody, error) { return newSpool(r, limit) }

func (b Bytes) Open() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
func (b Bytes) Size() int64                  { return int64(len(b)) }

// MaxRequestBytes is what Graph takes in one request body: larger ones are
// refused "413 The maximum request length supported is 4MB." (GRAPH.md
// 1.8: 4,194,304 observed). A little is kept back for headers.
const MaxRequestBytes = 4<<20 - 64<<10

// Base64Size is the length of b's base64 encoding (no line breaks).
func Base64Size(n int64) int64 { return (n + 2) / 3 * 4 }

// base64Of is b encoded as base64, as a stream.
func base64Of(b Body) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		src, err := b.Open()
		if err != nil {
			return nil, err
		}
		pr, pw := io.Pipe()
		go func() { // ends when src is read, or the request's body is closed
			enc := base64.NewEncoder(base64.StdEncoding, pw)
			_, err := io.Copy(enc, src)
			if err == nil {
				err = enc.Close()
			}
			src.Close()
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
}

func jsonBody(v any) func() (io.ReadCloser, error) {
	data, _ := json.Marshal(v)
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
}

// SendMIME sends the message as it is (user-sendmail.md: Content-Type
// text/plain, the base64 of the whole MIME; 202 Accepted). Graph delivers
// to the To, Cc and Bcc headers: the caller makes them the envelope.
func (c *Client) SendMIME(ctx context.Context, mime Body) error {
	return c.getJSON(ctx, request{op: "sendMail", method: http.MethodPost, url: c.base + "/sendMail",
		body: base64Of(mime), contentType: "text/plain", length: Base64Size(mime.Size()), want: []int{http.StatusAccepted}}, nil)
}

// Recipient is an address in Graph's JSON.
type Recipient struct {
	EmailAddress struct {
		Address string `json:"address"`
		Name    string `json:"name,omitempty"`
	} `json:"emailAddress"`
}

// Recipients turns addresses into Graph's JSON.
func Recipients(addrs []string) []Recipient {
	out := make([]Recipient, 0, len(addrs))
	for _, a := range addrs {
		var r Recipient
		r.EmailAddress.Address = a
		out = append(out, r)
	}
	return out
}

// Message is what mailproxy reads of a message's JSON: the properties it
// asks for with $select, the extended properties with $expand.
type Message struct {
	ID                string      `json:"id"`
	IsDraft           bool        `json:"isDraft"`
	IsRead            bool        `json:"isRead"`
	Subject           string      `json:"subject"`
	From              *Recipient  `json:"from"`
	Sender            *Recipient  `json:"sender"`
	To                []Recipient `json:"toRecipients"`
	Cc                []Recipient `json:"ccRecipients"`
	Bcc               []Recipient `json:"bccRecipients"`
	ReplyTo           []Recipient `json:"replyTo"`
	InternetMessageID string      `json:"internetMessageId"`
	Received          string      `json:"receivedDateTime"`
	Sent              string      `json:"sentDateTime"`
	Flag              *struct {
		Status string `json:"flagStatus"`
	} `json:"flag"`
	Categories []string `json:"categories"`
	// Extended holds singleValueExtendedProperties asked for with $expand.
	Extended []struct {
		ID    string `json:"id"`
		Value string `json:"value"`
	} `json:"singleValueExtendedProperties"`
	// Removed is set on a delta item that left the folder (GRAPH.md 6.3).
	Removed *struct {
		Reason string `json:"reason"`
	} `json:"@removed"`
}

// Property reads an Integer extended property by tag, e.g. 0x0E08 (Graph
// answers in its own spelling, "Integer 0xe08"); ok is false when Graph
// gave none.
func (m Message) Property(tag uint32) (n int64, ok bool) {
	for _, p := range m.Extended {
		typ, hex, _ := strings.Cut(p.ID, " ")
		t, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(hex), "0x"), 16, 32)
		if err != nil || !strings.EqualFold(typ, "Integer") || uint32(t) != tag {
			continue
		}
		n, err := strconv.ParseInt(p.Value, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// CreateDraft creates a draft from MIME in folder, Drafts when "" (user-
// post-messages.md: text/plain base64 MIME → 201, isDraft true); its
// recipients are the MIME's headers.
func (c *Client) CreateDraft(ctx context.Context, folder string, mime Body) (Message, error) {
	u := c.base + "/messages"
	if folder != "" {
		u = c.folderURL(folder) + "/messages"
	}
	var m Message
	err := c.getJSON(ctx, request{op: "create draft", method: http.MethodPost, url: u,
		body: base64Of(mime), contentType: "text/plain", length: Base64Size(mime.Size()), want: []int{http.StatusCreated}}, &m)
	return m, err
}

// SetRecipients sets a draft's recipients (message-update.md: recipients
// only while isDraft).
func (c *Client) SetRecipients(ctx context.Context, id string, to, cc, bcc []string) error {
	patch := map[string]any{"toRecipients": Recipients(to), "ccRecipients": Recipients(cc), "bccRecipients": Recipients(bcc)}
	return c.getJSON(ctx, request{op: "set recipients", method: http.MethodPatch, url: c.messageURL(id), body: jsonBody(patch),
		contentType: "application/json", idempotent: true, want: []int{http.StatusOK}}, nil)
}

// Attachment is a file attached to a draft apart from its MIME.
type Attachment struct {
	Name, ContentType, ContentID string
	Inline                       bool
	Data                         Body
}

// SmallAttachmentBytes is the size under which an attachment is sent in
// one request (outlook-large-attachments.md: under 3 MB, POST the
// attachment; 3 MB to 150 MB, an upload session). 3 MB is 3,000,000
// octets here: its base64 in JSON stays under the 4 MB a request takes.
const SmallAttachmentBytes = 3_000_000

// Attach adds a to a draft: in one request when small, else through an
// upload session whose pieces are PUT in order, at most 4 MB each.
func (c *Client) Attach(ctx context.Context, id string, a Attachment) error {
	if a.Data.Size() < SmallAttachmentBytes {
		r, err := a.Data.Open()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return err
		}
		att := map[string]any{"@odata.type": "#microsoft.graph.fileAttachment", "name": a.Name, "contentType": a.ContentType,
			"contentBytes": data, "isInline": a.Inline}
		if a.ContentID != "" {
			att["contentId"] = a.ContentID
		}
		return c.getJSON(ctx, request{op: "attach", method: http.MethodPost, url: c.messageURL(id) + "/attachments",
			body: jsonBody(att), contentType: "application/json", want: []int{http.StatusCreated}}, nil)
	}
	item := map[string]any{"attachmentType": "file", "name": a.Name, "size": a.Data.Size(), "contentType": a.ContentType, "isInline": a.Inline}
	if a.ContentID != "" {
		item["contentId"] = a.ContentID
	}
	var session struct {
		UploadURL string `json:"uploadUrl"`
	}
	if err := c.getJSON(ctx, request{op: "create upload session", method: http.MethodPost, url: c.messageURL(id) + "/attachments/createUploadSession",
		body: jsonBody(map[string]any{"AttachmentItem": item}), contentType: "application/json", want: []int{http.StatusCreated}}, &session); err != nil {
		return err
	}
	if session.UploadURL == "" {
		return &Error{Profile: c.o.Profile, Op: "create upload session", Err: fmt.Errorf("no uploadUrl in the answer")}
	}
	total := a.Data.Size()
	for start := int64(0); start < total; start += uploadChunk {
		end := min(start+uploadChunk, total)
		if err := c.getJSON(ctx, request{op: "upload attachment", method: http.MethodPut, url: session.UploadURL, noAuth: true,
			body: section(a.Data, start, end), length: end - start, contentType: "application/octet-stream", idempotent: true,
			header: http.Header{"Content-Range": {fmt.Sprintf("bytes %d-%d/%d", start, end-1, total)}},
			want:   []int{http.StatusOK, http.StatusCreated}}, nil); err != nil {
			return err
		}
	}
	return nil
}

// uploadChunk is a multiple of 320 KiB under Graph's 4 MB per request.
const uploadChunk = 10 * 320 << 10

// section opens bytes [start, end) of b.
func section(b Body, start, end int64) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		r, err := b.Open()
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, r, start); err != nil {
			r.Close()
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(r, end-start), r}, nil
	}
}

// Send sends a draft to its recipients (message-send.md: 202 Accepted).
func (c *Client) Send(ctx context.Context, id string) error {
	return c.getJSON(ctx, request{op: "send", method: http.MethodPost, url: c.messageURL(id) + "/send", want: []int{http.StatusAccepted}}, nil)
}

// Delete deletes a message (message-delete.md: 204; it goes to
// Recoverable Items).
func (c *Client) Delete(ctx context.Context, id string) error {
	return c.getJSON(ctx, request{op: "delete", method: http.MethodDelete, url: c.messageURL(id), idempotent: true,
		want: []int{http.StatusNoContent}}, nil)
}

// Move moves a message into folder, an id or a well-known name, and
// returns it there (message-move.md: 201; with immutable ids the id stays).
func (c *Client) Move(ctx context.Context, id, folder string) (Message, error) {
	var m Message
	err := c.getJSON(ctx, request{op: "move", method: http.MethodPost, url: c.messageURL(id) + "/move",
		body: jsonBody(map[string]string{"destinationId": folder}), contentType: "application/json",
		want: []int{http.StatusCreated, http.StatusOK}}, &m)
	return m, err
}

// Copy copies a message into folder and returns the copy, a new item with
// an id of its own (message-copy.md: 201, its example shows 200; GRAPH.md
// 4.2).
func (c *Client) Copy(ctx context.Context, id, folder string) (Message, error) {
	var m Message
	err := c.getJSON(ctx, request{op: "copy", method: http.MethodPost, url: c.messageURL(id) + "/copy",
		body: jsonBody(map[string]string{"destinationId": folder}), contentType: "application/json",
		want: []int{http.StatusCreated, http.StatusOK}}, &m)
	return m, err
}

// Update changes what may change on any message: isRead, flag,
// categories, extended properties (message-update.md; GRAPH.md 4.1).
func (c *Client) Update(ctx context.Context, id string, patch map[string]any) error {
	return c.getJSON(ctx, request{op: "update message", method: http.MethodPatch, url: c.messageURL(id), body: jsonBody(patch),
		contentType: "application/json", idempotent: true, want: []int{http.StatusOK}}, nil)
}

// sizeProperty is MAPI PidTagMessageSize: Graph v1.0 has no size property
// (GRAPH.md 2.5).
const sizeProperty = "Integer 0x0E08"

// Messages lists a folder, oldest first, following @odata.nextLink as
// given (user-list-messages.md), with each message's id, arrival and
// store size. each is called for every message, in order.
func (c *Client) Messages(ctx context.Context, folder string, each func(Message, int64) error) error {
	q := url.Values{}
	q.Set("$select", "id,receivedDateTime")
	q.Set("$orderby", "receivedDateTime asc")
	q.Set("$top", "1000")
	q.Set("$expand", "singleValueExtendedProperties($filter=id eq '"+sizeProperty+"')")
	next := c.folderURL(folder) + "/messages?" + q.Encode()
	for next != "" {
		var page struct {
			Value []Message `json:"value"`
			Next  string    `json:"@odata.nextLink"`
		}
		if err := c.getJSON(ctx, request{op: "list messages", method: http.MethodGet, url: next, idempotent: true,
			header: http.Header{"Prefer": {"odata.maxpagesize=1000"}}}, &page); err != nil {
			return err
		}
		for _, m := range page.Value {
			if err := each(m, storeSize(m)); err != nil {
				return err
			}
		}
		next = page.Next
	}
	return nil
}

// storeSize reads PidTagMessageSize (0 when Graph gave none).
func storeSize(m Message) int64 {
	n, _ := m.Property(0x0E08)
	return n
}

// MIME opens a message's MIME (outlook-get-mime-message.md: $value). The
// request's place among those in flight is held until it is closed.
func (c *Client) MIME(ctx context.Context, id string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, request{op: "get MIME", method: http.MethodGet, url: c.messageURL(id) + "/$value", idempotent: true,
		want: []int{http.StatusOK}})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (c *Client) messageURL(id string) string { return c.base + "/messages/" + url.PathEscape(id) }
