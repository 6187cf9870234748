package fakegraph

// Sending and delivery, drafts, move, copy, delete.

import (
	"encoding/json"
	"maps"
	"strconv"
	"strings"
	"time"
)

// sendMail is POST {u}/sendMail: text/plain base64 MIME or the JSON form;
// 202 Accepted with an empty body (user-sendmail.md; GRAPH.md 1.1).
func (c *call) sendMail() reply {
	switch mediaType(c.r) {
	case "text/plain":
		raw, err := decodeMIMEBody(c.body)
		if err != nil {
			// GRAPH.md 1.2 (user-sendmail.md Example 4).
			return fail(newError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."))
		}
		// GRAPH.md 1.7: a MIME send is always saved to Sent Items.
		return c.submit(raw, true)
	case "application/json":
		var req struct {
			Message         json.RawMessage `json:"message"`
			SaveToSentItems *bool           `json:"saveToSentItems"`
		}
		if e := c.decodeJSON(&req); e != nil {
			return fail(e)
		}
		var params map[string]json.RawMessage
		json.Unmarshal(c.body, &params)
		for k := range params {
			if l := strings.ToLower(k); l != "message" && l != "savetosentitems" {
				// [Rec] OData's answer to an unknown action parameter.
				return fail(newError(400, "RequestBodyRead", "The parameter '"+k+"' in the request payload is not a valid parameter for the operation 'sendMail'."))
			}
		}
		if len(req.Message) == 0 || string(req.Message) == "null" {
			// [Rec]
			return fail(newError(400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty."))
		}
		in, e := c.messageInput(req.Message)
		if e != nil {
			return fail(e)
		}
		from := recipient{Address: c.box.address}
		if in.From != nil {
			from = recipient{Name: in.From.EmailAddress.Name, Address: in.From.EmailAddress.Address}
		}
		raw := jsonMIME(in, from, c.s.now())
		if as, e := decodeAttachments(in.Attachments); e != nil {
			return fail(e)
		} else if len(as) > 0 {
			raw = withAttachments(raw, as)
		}
		// user-sendmail.md: saveToSentItems defaults to true.
		return c.submit(raw, req.SaveToSentItems == nil || *req.SaveToSentItems)
	default:
		return fail(unsupportedType())
	}
}

// messageInput decodes a JSON message, refusing unknown properties.
func (c *call) messageInput(b []byte) (*msgInput, *apiError) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, newError(400, "RequestBodyRead", "Invalid JSON: "+err.Error())
	}
	if e := checkProps(raw); e != nil {
		return nil, e
	}
	in := &msgInput{}
	if err := json.Unmarshal(b, in); err != nil {
		return nil, newError(400, "RequestBodyRead", "Cannot read the request body: "+err.Error())
	}
	if e := validEnums(in); e != nil {
		return nil, e
	}
	if e := checkExtended(in.Extended); e != nil {
		return nil, e
	}
	return in, nil
}

// recipients are the To, Cc and Bcc header addresses, each once: Graph
// takes the recipient list from the headers, there is no envelope
// (GRAPH.md 1.3, outlook-things-to-know-about-send-mail.md §1).
func recipients(h rawHeader) (rcpts, bad []string) {
	seen := map[string]bool{}
	for _, name := range []string{"To", "Cc", "Bcc"} {
		rs, b := parseAddrs(h.getAll(name))
		bad = append(bad, b...)
		for _, r := range rs {
			a := strings.ToLower(r.Address)
			if !seen[a] {
				seen[a] = true
				rcpts = append(rcpts, a)
			}
		}
	}
	return rcpts, bad
}

func noRecipients() *apiError {
	// GRAPH.md 1.5 (SMTP2Graph#30).
	return newError(400, "ErrorInvalidRecipients", "At least one recipient is not valid., A message can't be sent because it contains no recipients.")
}

func badRecipient(a string) *apiError {
	// [Rec] same code as GRAPH.md 1.5, Exchange's text for an unresolved one.
	return newError(400, "ErrorInvalidRecipients", "At least one recipient is not valid., Recipient '"+a+"' is not resolved. All recipients must be resolved before a message can be submitted.")
}

// checkFrom: a From other than the mailbox needs Send As (GRAPH.md 1.6,
// outlook-send-mail-from-other-user.md; for MIME too, msgraph-sdk-php#1499).
func (c *call) checkFrom(from string) *apiError {
	if from == "" {
		return nil
	}
	a := strings.ToLower(from)
	if a == c.box.address || c.box.sendAs[a] {
		return nil
	}
	return newError(403, "ErrorSendAsDenied", "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.")
}

// submit sends a whole message to its header recipients.
func (c *call) submit(raw []byte, save bool) reply {
	h, _ := splitMessage(raw)
	rcpts, bad := recipients(h)
	if len(bad) > 0 {
		return fail(badRecipient(bad[0]))
	}
	if len(rcpts) == 0 {
		return fail(noRecipients())
	}
	from := ""
	if f, _ := parseAddrs(h.get("From")); len(f) > 0 {
		from = f[0].Address
	}
	if e := c.checkFrom(from); e != nil {
		return fail(e)
	}
	raw = stamp(raw, c.box.address, c.s.now())
	c.s.deliver(raw, rcpts)
	if save {
		// The Sent Items copy keeps its Bcc header (GRAPH.md 1.4 [Rec]).
		m := c.s.newMessage(c.box.wellKnown["sentitems"], raw, time.Time{})
		m.isRead = true
	}
	return reply{status: 202}
}

// deliver puts one copy per recipient, without the Bcc header (GRAPH.md
// 1.4), into the recipient's inbox when the double has that mailbox, and
// records it for Delivered either way.
func (s *Server) deliver(raw []byte, rcpts []string) {
	h, body := splitMessage(raw)
	if h.has("Bcc") {
		h.del("Bcc")
		raw = join(h, body)
	}
	var from string
	if f, _ := parseAddrs(h.get("From")); len(f) > 0 {
		from = strings.ToLower(f[0].Address)
	}
	to, _ := parseAddrs(h.getAll("To"))
	cc, _ := parseAddrs(h.getAll("Cc"))
	for _, a := range rcpts {
		d := Message{MIME: append([]byte(nil), raw...), From: from, To: addrsOf(to), Cc: addrsOf(cc), Received: s.now()}
		if b := s.boxes[a]; b != nil && b.address == a {
			m := s.newMessage(b.wellKnown["inbox"], raw, time.Time{})
			d.ID, d.Received = m.immID, m.received
		}
		s.delivered[a] = append(s.delivered[a], d)
	}
}

// createMessage is POST {u}/messages or {u}/mailFolders/{f}/messages →
// 201 + the message, a draft (user-post-messages.md; GRAPH.md 4.4).
func (c *call) createMessage() reply {
	f := c.box.wellKnown["drafts"]
	if c.folderRef != "" {
		var e *apiError
		if f, e = c.box.resolveFolder(c.folderRef); e != nil {
			return fail(e)
		}
	}
	var m *message
	switch mediaType(c.r) {
	case "text/plain":
		raw, err := decodeMIMEBody(c.body)
		if err != nil {
			// As for sendMail (GRAPH.md 1.2).
			return fail(newError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."))
		}
		// The recipient properties come from the headers (GRAPH.md 4.4);
		// the MIME is stored as given.
		m = c.s.newMessage(f, raw, time.Time{})
		m.isDraft, m.isRead = true, true
	case "application/json", "":
		if len(strings.TrimSpace(string(c.body))) == 0 {
			return fail(newError(400, "BadRequest", "Empty Payload. JSON content expected."))
		}
		in, e := c.messageInput(c.body)
		if e != nil {
			return fail(e)
		}
		as, e := decodeAttachments(in.Attachments)
		if e != nil {
			return fail(e)
		}
		received, e := dateInput("receivedDateTime", in.ReceivedDateTime)
		if e != nil {
			return fail(e)
		}
		sent, e := dateInput("sentDateTime", in.SentDateTime)
		if e != nil {
			return fail(e)
		}
		from := recipient{Address: c.box.address}
		if in.From != nil {
			from = recipient{Name: in.From.EmailAddress.Name, Address: in.From.EmailAddress.Address}
		}
		date := sent // [Rec] Exchange renders the Date header from sentDateTime
		if date.IsZero() {
			date = c.s.now()
		}
		// [Src] DAV GraphExchangeSession.createMessage/applyMessageProperties
		// give an APPENDed message its received date in receivedDateTime.
		m = c.s.newMessage(f, jsonMIME(in, from, date), received)
		if !sent.IsZero() {
			m.sent = sent
		}
		m.isDraft, m.isRead = true, true
		for _, a := range as {
			m.attachments = append(m.attachments, &attachment{id: c.box.newAttachmentID(), modified: m.created, Attachment: a})
		}
		setExtended(m, in.Extended, true)
		// [Rec] An explicit isRead wins over PR_MESSAGE_FLAGS' read bit:
		// DAV sends both, the flags without the read bit, for a \Seen
		// APPEND.
		applyAnyTime(m, in)
	default:
		return fail(unsupportedType())
	}
	out := c.messageJSON(m, nil)
	out["@odata.context"] = c.context("messages/$entity")
	return reply{status: 201, body: out}
}

// dateInput reads a DateTimeOffset property; nil is the zero time.
func dateInput(name string, v *string) (time.Time, *apiError) {
	if v == nil || *v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, *v)
	if err != nil {
		// [Rec] OData's answer to a malformed Edm.DateTimeOffset.
		return time.Time{}, newError(400, "RequestBodyRead", "Cannot convert the literal '"+*v+"' to the expected type 'Edm.DateTimeOffset' of '"+name+"'.")
	}
	return t.UTC(), nil
}

// setExtended applies singleValueExtendedProperties from a JSON create
// (creating) or a PATCH. PR_MESSAGE_FLAGS (0x0E07) sets isDraft (no
// MSGFLAG_UNSENT 0x8) and the read state (0x1) at creation only (GRAPH.md
// 4.4); PidTagFlagStatus (0x1090) is the flag ([MS-OXOFLAG] 2.2.1.1);
// the size and article number are the store's own ([Rec] ignored);
// anything else, e.g. PidTagLastVerbExecuted 0x1081 (102 reply, 103 reply
// all, 104 forward: DAV GraphField "lastVerbExecuted", its \Answered), is
// stored as given and answered when $expand asks for it.
func setExtended(m *message, props []extInput, creating bool) {
	for _, p := range props {
		canon, tag, isInteger := extKey(p.ID)
		if isInteger {
			n, _ := strconv.ParseInt(strings.TrimSpace(p.Value), 10, 32) // checkExtended read it
			switch tag {
			case tagMessageFlags:
				if creating {
					m.isDraft, m.isRead = n&8 != 0, n&1 != 0
				}
				continue
			case tagFlagStatus:
				m.flag = map[int64]string{1: "complete", 2: "flagged"}[n]
				if m.flag == "" {
					m.flag = "notFlagged"
				}
				continue
			case tagMessageSize, tagArticleNumber:
				continue
			}
		}
		if m.ext == nil {
			m.ext = map[string]extProp{}
		}
		m.ext[strings.ToLower(canon)] = extProp{canon, p.Value}
	}
}

// checkExtended refuses what setExtended cannot store: an empty id, or an
// Integer property whose value is no 32-bit integer ([Rec] EWS's codes).
func checkExtended(props []extInput) *apiError {
	for _, p := range props {
		canon, _, isInteger := extKey(p.ID)
		if canon == "" {
			return newError(400, "ErrorInvalidExtendedProperty", "An extended property id is empty.")
		}
		if _, err := strconv.ParseInt(strings.TrimSpace(p.Value), 10, 32); isInteger && err != nil {
			return newError(400, "ErrorInvalidExtendedPropertyValue", "The value '"+p.Value+"' is not valid for the extended property '"+p.ID+"'.")
		}
	}
	return nil
}

// sendDraft is POST {u}/messages/{id}/send → 202 (message-send.md). The
// recipients are the message's properties, not its headers; what
// recipients get is re-rendered from them: To/Cc set from the properties,
// no Bcc, the attachments folded in. The draft moves to Sent Items
// (message-send.md: "saves the message in the Sent Items folder").
func (c *call) sendDraft() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	if !m.isDraft {
		// [Rec] message-send.md sends drafts only and names no error.
		return fail(newError(400, "ErrorInvalidOperation", "Only a draft message can be sent."))
	}
	seen := map[string]bool{}
	var rcpts []string
	for _, r := range append(append(append([]recipient{}, m.to...), m.cc...), m.bcc...) {
		a := strings.ToLower(strings.TrimSpace(r.Address))
		if !strings.Contains(a, "@") {
			return fail(badRecipient(r.Address))
		}
		if !seen[a] {
			seen[a] = true
			rcpts = append(rcpts, a)
		}
	}
	if len(rcpts) == 0 {
		return fail(noRecipients())
	}
	if m.from != nil {
		if e := c.checkFrom(m.from.Address); e != nil {
			return fail(e)
		}
	}
	h, body := splitMessage(m.mime)
	for _, x := range []struct {
		name string
		rs   []recipient
	}{{"To", m.to}, {"Cc", m.cc}, {"Bcc", m.bcc}} {
		if len(x.rs) > 0 {
			h.set(x.name, formatAddrs(x.rs, h.eol))
		} else {
			h.del(x.name)
		}
	}
	now := c.s.now()
	m.mime = stamp(join(h, body), c.box.address, now)
	m.fromHeaders()
	m.isDraft, m.isRead, m.sent = false, true, now
	c.s.deliver(m.render(true), rcpts) // deliver drops the Bcc header
	c.s.moveAt(m, c.box.wellKnown["sentitems"], now)
	return reply{status: 202}
}

func (c *call) destination() (*folder, *apiError) {
	var in struct {
		DestinationID string `json:"destinationId"`
	}
	if e := c.decodeJSON(&in); e != nil {
		return nil, e
	}
	// A well-known name or a folder id (GRAPH.md 3.3).
	return c.box.resolveFolder(in.DestinationID)
}

// moveMessage → 201 + the message in its new folder, with a new REST id
// and the same immutable id (message-move.md; GRAPH.md 4.2).
func (c *call) moveMessage() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	f, e := c.destination()
	if e != nil {
		return fail(e)
	}
	c.s.move(m, f)
	out := c.messageJSON(m, nil)
	out["@odata.context"] = c.context("messages/$entity")
	return reply{status: 201, body: out}
}

// copyMessage → 201 + a new item with new ids (message-copy.md; GRAPH.md
// 4.2: the doc's example shows 200, clients accept any 2xx).
func (c *call) copyMessage() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	f, e := c.destination()
	if e != nil {
		return fail(e)
	}
	n := c.s.newMessage(f, m.mime, m.received)
	n.isDraft, n.isRead, n.flag, n.importance = m.isDraft, m.isRead, m.flag, m.importance
	n.categories = append([]string(nil), m.categories...)
	n.sent = m.sent
	n.ext = maps.Clone(m.ext) // [Rec] a copy keeps the extended properties set on the original
	for _, a := range m.attachments {
		cp := *a
		cp.id = c.box.newAttachmentID()
		n.attachments = append(n.attachments, &cp)
	}
	out := c.messageJSON(n, nil)
	out["@odata.context"] = c.context("messages/$entity")
	return reply{status: 201, body: out}
}

// deleteMessage → 204; the message goes to Recoverable Items
// (recoverableitemsdeletions), not Deleted Items (message-delete.md;
// GRAPH.md 4.3). [Rec] Deleting it there removes it for good.
func (c *call) deleteMessage() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	if m.folder.wellKnown == "recoverableitemsdeletions" {
		c.s.remove(m)
	} else {
		c.s.move(m, c.box.wellKnown["recoverableitemsdeletions"])
	}
	return reply{status: 204}
}

// patchMessage is PATCH {u}/messages/{id} → 200 + the message (GRAPH.md
// 4.1, message-update.md).
func (c *call) patchMessage() reply {
	m, e := c.message()
	if e != nil {
		return fail(e)
	}
	var raw map[string]json.RawMessage
	if e := c.decodeJSON(&raw); e != nil {
		return fail(e)
	}
	if e := checkProps(raw); e != nil {
		return fail(e)
	}
	var in msgInput
	if err := json.Unmarshal(c.body, &in); err != nil {
		// [Rec]
		return fail(newError(400, "RequestBodyRead", "Cannot read the request body: "+err.Error()))
	}
	for k := range raw {
		if draftOnly[messageProps[strings.ToLower(k)]] && !m.isDraft {
			// GRAPH.md 4.1 (code observed; [Rec] text).
			return fail(newError(400, "ErrorInvalidPropertyUpdateSentMessage", "Update operation is not allowed on a sent message: '"+k+"' can only be changed on a draft."))
		}
	}
	if e := validEnums(&in); e != nil {
		return fail(e)
	}
	if e := checkExtended(in.Extended); e != nil {
		return fail(e)
	}
	// Draft content goes into the MIME, which Exchange renders from the
	// properties (GRAPH.md 2.6).
	h, body := splitMessage(m.mime)
	changed := false
	setAddrs := func(name string, rs *[]recipientJSON) {
		if rs == nil {
			return
		}
		changed = true
		if l := fromJSONRecipients(rs); len(l) > 0 {
			h.set(name, formatAddrs(l, h.eol))
		} else {
			h.del(name)
		}
	}
	setAddrs("To", in.ToRecipients)
	setAddrs("Cc", in.CcRecipients)
	setAddrs("Bcc", in.BccRecipients)
	setAddrs("Reply-To", in.ReplyTo)
	if in.From != nil {
		setAddrs("From", &[]recipientJSON{*in.From})
	}
	if in.Subject != nil {
		h.set("Subject", mimeWord(*in.Subject))
		changed = true
	}
	if in.InternetMessageID != nil {
		h.set("Message-ID", *in.InternetMessageID)
		changed = true
	}
	if changed || in.Body != nil {
		msg := join(h, body)
		if in.Body != nil {
			msg = replaceBody(msg, in.Body.ContentType, in.Body.Content)
		}
		m.mime = msg
		m.fromHeaders()
	}
	// Extended properties may change on any message (PROTOCOLS.md §3.4);
	// receivedDateTime and sentDateTime are read-only here ([Rec] ignored).
	setExtended(m, in.Extended, false)
	applyAnyTime(m, &in)
	m.touch(c.s)
	return reply{status: 200, body: c.messageJSON(m, nil)}
}

func validEnums(in *msgInput) *apiError {
	if in.Flag != nil {
		switch strings.ToLower(in.Flag.FlagStatus) {
		case "notflagged", "flagged", "complete":
		default:
			// [Rec]
			return newError(400, "RequestBodyRead", "Requested value '"+in.Flag.FlagStatus+"' was not found.")
		}
	}
	if in.Importance != nil {
		switch strings.ToLower(*in.Importance) {
		case "low", "normal", "high":
		default:
			return newError(400, "RequestBodyRead", "Requested value '"+*in.Importance+"' was not found.")
		}
	}
	return nil
}

// applyAnyTime sets what may change on any message: isRead, flag,
// categories, importance (GRAPH.md 4.1).
func applyAnyTime(m *message, in *msgInput) {
	if in.IsRead != nil {
		m.isRead = *in.IsRead
	}
	if in.Categories != nil {
		m.categories = append([]string(nil), *in.Categories...)
	}
	if in.Importance != nil {
		m.importance = strings.ToLower(*in.Importance)
	}
	if in.Flag != nil {
		switch strings.ToLower(in.Flag.FlagStatus) {
		case "flagged":
			m.flag = "flagged"
		case "complete":
			m.flag = "complete"
		default:
			m.flag = "notFlagged"
		}
	}
}
