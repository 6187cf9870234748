package fakegraph

// Attachments: POST …/attachments (small files) and upload sessions for
// large ones (concepts/outlook-large-attachments.md; PROTOCOLS.md §3.2).

import (
	"encoding/base64"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type attachmentInput struct {
	ODataType    string  `json:"@odata.type"`
	Name         string  `json:"name"`
	ContentType  string  `json:"contentType"`
	ContentBytes *string `json:"contentBytes"`
	IsInline     bool    `json:"isInline"`
	ContentID    string  `json:"contentId"`
}

func (b *mailbox) newAttachmentID() string { return "AAMkA" + b.stem + "BEgAQA" + randomB64(24) + "=" }

// decodeAttachments reads fileAttachments (message-post-attachments.md).
func decodeAttachments(in []attachmentInput) ([]Attachment, *apiError) {
	var out []Attachment
	for _, a := range in {
		switch {
		case a.ODataType == "" && a.ContentBytes != nil:
			// Without @odata.type the body is read as the abstract
			// attachment, which has no contentBytes ([Rec], the text of
			// GRAPH.md 4.1's unknown-property error).
			return nil, newError(400, "RequestBodyRead", "The property 'contentBytes' does not exist on type 'microsoft.graph.attachment'. Make sure to only use property names that are defined by the type or mark the type as open type.")
		case !strings.EqualFold(a.ODataType, "#microsoft.graph.fileAttachment"):
			// [Rec] the double has file attachments only.
			return nil, newError(400, "ErrorInvalidRequest", "The Graph double supports #microsoft.graph.fileAttachment only.")
		}
		var data []byte
		if a.ContentBytes != nil {
			var err error
			if data, err = base64.StdEncoding.DecodeString(*a.ContentBytes); err != nil {
				// [Rec] Edm.Binary is base64.
				return nil, newError(400, "RequestBodyRead", "Invalid base64 string for contentBytes.")
			}
		}
		out = append(out, Attachment{Name: a.Name, ContentType: a.ContentType, Data: data, IsInline: a.IsInline, ContentID: a.ContentID})
	}
	return out, nil
}

func attachmentJSON(a *attachment) map[string]any {
	ct := a.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return map[string]any{"@odata.type": "#microsoft.graph.fileAttachment", "@odata.mediaContentType": ct,
		"id": a.id, "lastModifiedDateTime": ts(a.modified), "name": a.Name, "contentType": ct,
		"size": len(a.Data), "isInline": a.IsInline, "contentId": emptyNil(a.ContentID),
		"contentBytes": base64.StdEncoding.EncodeToString(a.Data)}
}

// addAttachment is POST {u}/messages/{id}/attachments → 201 + the
// attachment (message-post-attachments.md); the request is bound by the
// 4 MB limit like any other (GRAPH.md 1.8).
func (c *call) addAttachment() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	var in attachmentInput
	if e := c.decodeJSON(&in); e != nil {
		return fail(e)
	}
	as, e := decodeAttachments([]attachmentInput{in})
	if e != nil {
		return fail(e)
	}
	a := &attachment{id: c.box.newAttachmentID(), modified: c.s.now(), Attachment: as[0]}
	m.attachments = append(m.attachments, a)
	m.touch(c.s)
	out := attachmentJSON(a)
	out["@odata.context"] = c.context("messages('" + c.idOf(m) + "')/attachments/$entity")
	return reply{status: 201, body: out}
}

func (c *call) listAttachments() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	values := []any{}
	for _, a := range m.attachments {
		values = append(values, attachmentJSON(a))
	}
	return c.collection("messages('"+c.idOf(m)+"')/attachments", values, len(values), "", "")
}

type uploadSession struct {
	token    string
	box      *mailbox
	msg      string // immutable id
	clientID string
	att      Attachment
	size     int
	expires  time.Time
}

const (
	// outlook-large-attachments.md: sessions are for 3 MB to 150 MB, a
	// single POST on attachments for less. [Rec] The double reads "3 MB" as
	// 3,000,000 bytes: with 3 MiB, files just under it would fit neither
	// way (their base64 in a POST exceeds the 4 MB request limit).
	minUpload = 3_000_000
	maxUpload = 150 << 20
	// uploadTTL is [Rec]: the doc gives an expirationDateTime, not its span.
	uploadTTL = time.Hour
)

// createUploadSession is POST {u}/messages/{id}/attachments/
// createUploadSession → 201 + uploadSession (outlook-large-attachments.md
// step 1): an opaque, pre-authenticated URL on this server.
func (c *call) createUploadSession() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	var in struct {
		AttachmentItem *struct {
			AttachmentType string `json:"attachmentType"`
			Name           string `json:"name"`
			Size           int    `json:"size"`
			ContentType    string `json:"contentType"`
			IsInline       bool   `json:"isInline"`
			ContentID      string `json:"contentId"`
		} `json:"AttachmentItem"`
	}
	if e := c.decodeJSON(&in); e != nil {
		return fail(e)
	}
	it := in.AttachmentItem
	switch {
	case it == nil:
		// [Rec]
		return fail(newError(400, "ErrorInvalidParameter", "The value of the parameter 'AttachmentItem' is empty."))
	case !strings.EqualFold(it.AttachmentType, "file"):
		// [Rec] the doc's attachmentType is "file".
		return fail(newError(400, "ErrorInvalidParameter", "The double supports attachmentType 'file' only."))
	case it.Size < minUpload:
		// outlook-large-attachments.md "Errors": under 3 MB is a single
		// POST on attachments ([Rec] status and text).
		return fail(newError(400, "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize", "Attachment size must be at least 3 MB; attach smaller files with a single POST on attachments."))
	case it.Size > maxUpload:
		// [Rec] Exchange's size limit error (GRAPH.md 1.8).
		return fail(newError(400, "ErrorMessageSizeExceeded", "The message exceeds the maximum supported size."))
	}
	sess := &uploadSession{token: randomB64(32), box: c.box, msg: m.immID, clientID: c.g.ClientID, size: it.Size,
		att:     Attachment{Name: it.Name, ContentType: it.ContentType, IsInline: it.IsInline, ContentID: it.ContentID},
		expires: time.Now().Add(uploadTTL).UTC()}
	c.s.sessions[sess.token] = sess
	return reply{status: 201, body: map[string]any{
		"@odata.context":     c.s.base(c.r) + "/v1.0/$metadata#microsoft.graph.uploadSession",
		"uploadUrl":          c.s.base(c.r) + "/upload/" + sess.token,
		"expirationDateTime": sess.expires.Format(time.RFC3339Nano),
		"nextExpectedRanges": []string{"0-"},
	}}
}

var contentRange = regexp.MustCompile(`^bytes (\d+)-(\d+)/(\d+)$`)

// upload serves the upload URLs: ordered PUTs with Content-Range, without
// an Authorization header (outlook-large-attachments.md steps 2–3), or
// DELETE to cancel. They count as requests and are throttled as the
// session's (app, mailbox) (GRAPH.md 7.1: uploads count against the
// mailbox's limits).
func (s *Server) upload(r *http.Request) (reply, func()) {
	token := strings.TrimPrefix(r.URL.Path, "/upload/")
	s.mu.Lock()
	sess := s.sessions[token]
	s.mu.Unlock()
	if sess == nil {
		// [Rec]
		return fail(errNotFound()), nil
	}
	if r.Header.Get("Authorization") != "" {
		// The doc: "Do not specify an Authorization request header"; the
		// URL is pre-authenticated for outlook.office.com, so a Graph token
		// is [Rec] refused there for its audience.
		return fail(unauthorized("Access token validation failure. Invalid audience.")), nil
	}
	if time.Now().After(sess.expires) {
		// [Rec] the token in the URL expires by expirationDateTime (the doc).
		return fail(unauthorized("Access token has expired or is not yet valid.")), nil
	}
	if e := s.checkThrottle(); e != nil {
		return fail(e), nil
	}
	release, e := s.acquire(sess.clientID, sess.box.address)
	if e != nil {
		return fail(e), nil
	}
	switch r.Method {
	case http.MethodDelete:
		// "Cancel the upload session": 204.
		s.mu.Lock()
		delete(s.sessions, token)
		s.mu.Unlock()
		return reply{status: 204}, release
	case http.MethodPut:
	default:
		return fail(newError(405, "BadRequest", "The HTTP method '"+r.Method+"' is not allowed for this resource.")), release
	}
	// The doc recommends at most 4 MB per PUT; [Rec] the double enforces it
	// with the front end's 413 (GRAPH.md 1.8).
	body, e := readBody(r)
	if e != nil {
		return fail(e), release
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putRange(r, sess, body), release
}

func (s *Server) putRange(r *http.Request, sess *uploadSession, body []byte) reply {
	got := len(sess.att.Data)
	next := func() []string { return []string{strconv.Itoa(len(sess.att.Data))} }
	cr := contentRange.FindStringSubmatch(strings.TrimSpace(r.Header.Get("Content-Range")))
	if cr == nil {
		// [Rec]
		return fail(newError(400, "InvalidContentRange", "The Content-Range header is missing or malformed; expected 'bytes {start}-{end}/{total}'."))
	}
	start, _ := strconv.Atoi(cr[1])
	end, _ := strconv.Atoi(cr[2])
	total, _ := strconv.Atoi(cr[3])
	switch {
	case total != sess.size:
		return fail(newError(400, "InvalidContentRange", "The total in Content-Range is not the size the upload session was created with."))
	case start != got:
		// "You must upload bytes in a file in order." [Rec] 416 with the
		// range expected next.
		e := newError(416, "InvalidRange", "The uploaded fragment is not the next expected range.")
		e.extra = map[string]any{"nextExpectedRanges": next()}
		return fail(e)
	case end < start || end >= total || len(body) != end-start+1:
		return fail(newError(400, "InvalidContentRange", "The Content-Range does not match the bytes sent."))
	}
	sess.att.Data = append(sess.att.Data, body...)
	if len(sess.att.Data) < sess.size {
		// Step 2: 200 + uploadSession; nextExpectedRanges is the single
		// "{start}" for Outlook ("2097152", uploadsession.md), and
		// ExpirationDateTime stays as created (spelt as in the doc's
		// Outlook v2.0 answer).
		return reply{status: 200, body: map[string]any{
			"@odata.context":     s.base(r) + "/api/v2.0/$metadata#Users('" + sess.box.objectID + "')/Messages('" + sess.msg + "')/AttachmentSessions/$entity",
			"ExpirationDateTime": sess.expires.Format(time.RFC3339Nano),
			"nextExpectedRanges": next(),
		}}
	}
	delete(s.sessions, sess.token)
	m := s.byImm[sess.msg]
	if m == nil {
		return fail(errNotFound())
	}
	a := &attachment{id: m.box.newAttachmentID(), modified: s.now(), Attachment: sess.att}
	m.attachments = append(m.attachments, a)
	m.touch(s)
	// Step 3: 201 and a Location with the attachment's URL, empty body.
	return reply{status: 201, header: http.Header{"Location": {s.base(r) + "/api/v2.0/Users('" + m.box.objectID +
		"')/Messages('" + m.restID + "')/Attachments('" + a.id + "')"}}}
}
