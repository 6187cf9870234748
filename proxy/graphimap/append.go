package graphimap

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"time"

	"github.com/emersion/go-imap"

	"mailproxy/upstream/graph"
	"mailproxy/upstream/graph/mirror"
)

// CreateMessage is go-imap's APPEND, which the extension replaces (to
// answer APPENDUID).
func (m *mailbox) CreateMessage(flags []string, date time.Time, body imap.Literal) error {
	_, _, err := m.append(flags, date, body)
	return err
}

// append puts a message in the folder and returns the folder's
// UIDVALIDITY and the message's UID.
//
// Graph makes a message from MIME only as a draft (GRAPH.md 4.4). An
// APPEND with \Draft is that draft, in this folder. Any other APPEND is
// made as DAV makes it: the MIME becomes a draft in Drafts, whose
// properties (subject, body, addresses, Message-ID, date sent,
// importance, file attachments) make a new message in this folder through
// JSON with PR_MESSAGE_FLAGS set at creation (not a draft, read or not),
// receivedDateTime from the APPEND's date, flag and categories; then the
// draft is deleted. Graph renders that message's MIME from the
// properties: headers it has no property for (Received, X-…, List-…) and
// the original MIME structure are not kept.
func (m *mailbox) append(flags []string, date time.Time, lit imap.Literal) (validity, uid uint32, err error) {
	ctx, c := m.u.s.ctx, m.u.s.b.Client
	if int64(lit.Len()) > m.u.s.b.appendLimit() {
		return 0, 0, no("TOOBIG", "the message is %d octets, over the %d this mailbox takes", lit.Len(), m.u.s.b.appendLimit())
	}
	sp, err := graph.Spool(lit, m.u.s.b.appendLimit())
	if err != nil {
		return 0, 0, m.u.s.fail("append", err)
	}
	defer sp.Close()
	f, err := m.folder()
	if err != nil {
		return 0, 0, err
	}
	bits, kw := flagBits(flags)
	var made graph.Message
	if bits&mirror.Draft != 0 {
		made, err = c.CreateDraft(ctx, m.info.ID, sp)
		if err == nil {
			e, _ := mirror.FromGraph(made)
			want := e
			want.Flags, want.Keywords = bits, kw
			if p := patch(e, want); p != nil {
				err = c.Update(ctx, made.ID, p)
			}
		}
	} else {
		made, err = m.createMessage(ctx, sp, bits, kw, date)
	}
	if err != nil {
		return 0, 0, m.u.s.fail("append", err)
	}
	e, env := mirror.FromGraph(made)
	e.Flags, e.Keywords = e.Flags&mirror.Draft|bits&^mirror.Draft, kw
	if e.Size == 0 {
		e.Size = sp.Size()
	}
	if !date.IsZero() && bits&mirror.Draft == 0 {
		e.Received = date
	}
	uid, err = f.Add(e, env)
	if err != nil {
		return 0, 0, m.u.s.fail("append", err)
	}
	return f.Snapshot().Validity, uid, nil
}

// draftProperties are what a message made from a draft takes of it.
const draftProperties = "subject,body,from,sender,toRecipients,ccRecipients,bccRecipients,replyTo,internetMessageId,importance," +
	"sentDateTime,isDeliveryReceiptRequested,isReadReceiptRequested"

// createMessage makes a message that is not a draft from MIME (append's
// comment says how).
func (m *mailbox) createMessage(ctx context.Context, mime graph.Body, bits mirror.Flags, kw []string, date time.Time) (graph.Message, error) {
	c := m.u.s.b.Client
	tmp, err := c.CreateDraft(ctx, "", mime)
	if err != nil {
		return graph.Message{}, err
	}
	defer func() {
		// The draft goes even when the session ends meanwhile.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := c.Delete(dctx, tmp.ID); err != nil && !isNotFound(err) {
			m.u.s.log.Warn("append: the temporary draft could not be deleted", "err", err)
		}
	}()
	props, err := c.MessageJSON(ctx, tmp.ID, url.Values{"$select": {draftProperties}, "$expand": {"attachments"}})
	if err != nil {
		return graph.Message{}, err
	}
	out := map[string]any{}
	for _, p := range []string{"subject", "body", "from", "sender", "toRecipients", "ccRecipients", "bccRecipients", "replyTo",
		"internetMessageId", "importance", "sentDateTime", "isDeliveryReceiptRequested", "isReadReceiptRequested"} {
		if v, ok := props[p]; ok && string(v) != "null" {
			out[p] = v
		}
	}
	read := "0"
	if bits&mirror.Seen != 0 {
		read = "1" // MSGFLAG_READ; no MSGFLAG_UNSENT (8): not a draft
	}
	ext := []map[string]string{{"id": "Integer 0x0E07", "value": read}}
	if bits&mirror.Answered != 0 {
		ext = append(ext, map[string]string{"id": "Integer 0x1081", "value": "102"})
	}
	out["singleValueExtendedProperties"] = ext
	out["isRead"] = bits&mirror.Seen != 0
	if bits&mirror.Flagged != 0 {
		out["flag"] = map[string]string{"flagStatus": "flagged"}
	}
	if len(kw) > 0 {
		out["categories"] = kw
	}
	if !date.IsZero() {
		out["receivedDateTime"] = date.UTC().Format(time.RFC3339)
	}
	atts, err := fileAttachments(props["attachments"])
	if err != nil {
		return graph.Message{}, err
	}
	// Small attachments go with the message; when they would take the
	// request over Graph's 4 MB, they are added after it.
	var later []graph.Attachment
	size := 0
	for _, a := range atts {
		size += len(a.raw)
	}
	if size < graph.MaxRequestBytes-256<<10 {
		var inline []json.RawMessage
		for _, a := range atts {
			inline = append(inline, a.raw)
		}
		if len(inline) > 0 {
			out["attachments"] = inline
		}
	} else {
		for _, a := range atts {
			later = append(later, a.att)
		}
	}
	made, err := c.CreateMessage(ctx, m.info.ID, out)
	if err != nil {
		return graph.Message{}, err
	}
	for _, a := range later {
		if err := c.Attach(ctx, made.ID, a); err != nil {
			c.Delete(ctx, made.ID)
			return graph.Message{}, err
		}
	}
	return made, nil
}

type fileAttachment struct {
	raw json.RawMessage
	att graph.Attachment
}

// fileAttachments reads a draft's file attachments (the only kind a MIME
// draft has: attached messages are files to Graph too).
func fileAttachments(v json.RawMessage) ([]fileAttachment, error) {
	if len(v) == 0 {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, err
	}
	var out []fileAttachment
	for _, raw := range list {
		var a struct {
			Type        string `json:"@odata.type"`
			Name        string `json:"name"`
			ContentType string `json:"contentType"`
			ContentID   string `json:"contentId"`
			Inline      bool   `json:"isInline"`
			Bytes       []byte `json:"contentBytes"`
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		if a.Type != "#microsoft.graph.fileAttachment" {
			return nil, errors.New("the message has an attachment Graph does not give as a file (" + a.Type + ")")
		}
		keep, _ := json.Marshal(map[string]any{"@odata.type": a.Type, "name": a.Name, "contentType": a.ContentType,
			"contentId": a.ContentID, "isInline": a.Inline, "contentBytes": a.Bytes})
		out = append(out, fileAttachment{raw: keep, att: graph.Attachment{Name: a.Name, ContentType: a.ContentType,
			ContentID: a.ContentID, Inline: a.Inline, Data: graph.Bytes(a.Bytes)}})
	}
	return out, nil
}
