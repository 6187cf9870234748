package graph

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailproxy/upstream"
)

// Sender sends a profile's messages with Graph: each SMTP transaction ends
// in one sendMail, or a draft that is sent. The SMTP envelope is the
// truth, and Graph has none: it delivers to the To, Cc and Bcc headers
// (GRAPH.md 1.3). So
//   - when every header recipient is in the envelope, the message goes
//     as MIME with the envelope's other recipients in a Bcc header (which
//     Exchange honours and strips);
//   - when the headers name someone the envelope does not (an app sending
//     one copy per recipient under a shared To), the message becomes a
//     draft whose recipients are set to the envelope, then is sent;
//   - a message too large for one request (4 MB, base64) becomes a draft
//     without its largest parts, which are attached apart (upload
//     sessions for 3 MB and more), then is sent.
//
// The app hears 250 only once Graph accepted the message (202).
type Sender struct {
	c       *Client
	mailbox string
	max     int64
	log     *slog.Logger
}

// NewSender sends through c for mailbox, taking messages up to maxBytes.
func NewSender(c *Client, mailbox string, maxBytes int64, log *slog.Logger) *Sender {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{c: c, mailbox: mailbox, max: maxBytes, log: log}
}

// Begin starts a transaction; nothing reaches Graph before DATA.
func (s *Sender) Begin(_ context.Context, from string, _ *smtp.MailOptions) (*Transaction, error) {
	return &Transaction{s: s, from: from}, nil
}

// Check proves the mailbox answers with the granted permissions: it reads
// the inbox's counts (mailproxy check).
func (s *Sender) Check(ctx context.Context) (Folder, error) { return s.c.Folder(ctx, "inbox") }

// Transaction is one message for Graph.
type Transaction struct {
	s     *Sender
	from  string
	rcpts []string // lower case, each once, in order
}

// Rcpt adds a recipient of the envelope.
func (t *Transaction) Rcpt(_ context.Context, to string, _ *smtp.RcptOptions) error {
	to = strings.ToLower(strings.TrimSpace(to))
	if !slices.Contains(t.rcpts, to) {
		t.rcpts = append(t.rcpts, to)
	}
	return nil
}

// Abort ends the transaction without a message.
func (t *Transaction) Abort() {}

// Data sends the message and returns nil only once Graph accepted it. A
// failure reading r (the app went away) is returned as is; Graph's
// refusals are mapped by smtpError.
func (t *Transaction) Data(ctx context.Context, r io.Reader) error {
	sp, err := newSpool(r, t.s.max)
	if errors.Is(err, ErrTooLarge) {
		return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: fmt.Sprintf("message exceeds %d octets", t.s.max)}
	}
	if err != nil {
		return err
	}
	defer sp.Close()
	return t.s.smtpError(t.send(ctx, sp))
}

func (t *Transaction) send(ctx context.Context, sp *spool) error {
	h, err := readHeader(sp, 0, sp.Size())
	if err != nil {
		return permanent(554, smtp.EnhancedCode{5, 6, 0}, "the message's header cannot be read: "+err.Error())
	}
	to, okTo := h.addresses("to")
	cc, okCc := h.addresses("cc")
	bcc, okBcc := h.addresses("bcc")
	named := append(append(slices.Clone(to), cc...), bcc...)
	var missing, extra []string
	for _, r := range t.rcpts {
		if !slices.Contains(named, r) {
			missing = append(missing, r)
		}
	}
	for _, n := range named {
		if !slices.Contains(t.rcpts, n) && !slices.Contains(extra, n) {
			extra = append(extra, n)
		}
	}
	readable := okTo && okCc && okBcc
	if readable && len(extra) == 0 {
		body := withBcc(sp, h, append(slices.Clone(bcc), missing...))
		if Base64Size(body.Size()) <= MaxRequestBytes {
			return t.s.c.SendMIME(ctx, body)
		}
	}
	// A draft whose recipients are exactly the envelope: the headers' To
	// and Cc keep who they name of it, the rest go in Bcc.
	keep := func(list []string) []string {
		return slices.DeleteFunc(slices.Clone(list), func(a string) bool { return !slices.Contains(t.rcpts, a) })
	}
	dTo, dCc, dBcc := keep(to), keep(cc), append(keep(bcc), missing...)
	if !readable {
		dTo, dCc, dBcc = t.rcpts, nil, nil
	}
	return t.viaDraft(ctx, sp, dTo, dCc, dBcc, len(extra) > 0 || len(missing) > 0 || !readable)
}

// viaDraft creates a draft from the message (without its largest parts
// when it is too large for one request), sets its recipients when they
// are not its headers', attaches the parts taken out, and sends it. A
// draft that could not be sent is deleted.
func (t *Transaction) viaDraft(ctx context.Context, sp *spool, to, cc, bcc []string, setRecipients bool) (err error) {
	var mime Body = sp
	var attachments []Attachment
	if Base64Size(sp.Size()) > MaxRequestBytes {
		stripped, atts, cleanup, err := split(sp)
		if err != nil {
			return err
		}
		defer cleanup()
		mime, attachments = stripped, atts
		// Parts taken out are attached apart: their recipients are the
		// draft's properties, so they must be set.
		setRecipients = true
	}
	draft, err := t.s.c.CreateDraft(ctx, "", mime)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if derr := t.s.c.Delete(dctx, draft.ID); derr != nil {
				t.s.log.Warn("a draft that was not sent could not be deleted", "profile", t.s.c.o.Profile, "err", derr)
			}
		}
	}()
	if setRecipients {
		if err := t.s.c.SetRecipients(ctx, draft.ID, to, cc, bcc); err != nil {
			return err
		}
	}
	for _, a := range attachments {
		if err := t.s.c.Attach(ctx, draft.ID, a); err != nil {
			return err
		}
	}
	return t.s.c.Send(ctx, draft.ID)
}

// split takes the largest parts that are files out of the message
// until the rest fits one request; it returns the rest and the parts as
// attachments (decoded, spooled), and what frees them.
func split(sp *spool) (Body, []Attachment, func(), error) {
	root, err := parseParts(sp, 0, sp.Size(), 0)
	if err != nil {
		return nil, nil, nil, permanent(554, smtp.EnhancedCode{5, 6, 0}, "the message cannot be read as MIME: "+err.Error())
	}
	var candidates []*part
	leaves := root.leaves()
	for _, l := range leaves {
		if l != root && l.attachable() {
			candidates = append(candidates, l)
		}
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		return candidates[i].end-candidates[i].start > candidates[j].end-candidates[j].start
	})
	skip := map[*part]bool{}
	rest := sp.Size()
	for _, c := range candidates {
		if Base64Size(rest) <= MaxRequestBytes {
			break
		}
		skip[c] = true
		rest -= c.end - c.start
	}
	if Base64Size(rest) > MaxRequestBytes {
		return nil, nil, nil, permanent(552, smtp.EnhancedCode{5, 3, 4},
			"message too large for Microsoft Graph: without its attachments it is still over 3 MB (Graph takes 4 MB a request, base64)")
	}
	var stripped bytes.Buffer
	if err := root.render(&stripped, sp, skip); err != nil {
		return nil, nil, nil, err
	}
	var atts []Attachment
	var spools []*spool
	cleanup := func() {
		for _, s := range spools {
			s.Close()
		}
	}
	for _, c := range leaves { // attached in the message's order
		if !skip[c] {
			continue
		}
		data, err := newSpool(c.decoded(sp), 1<<40)
		if err != nil {
			cleanup()
			return nil, nil, nil, permanent(554, smtp.EnhancedCode{5, 6, 0}, "an attachment cannot be decoded: "+err.Error())
		}
		spools = append(spools, data)
		mt, _ := c.mediaType()
		disp, _, _ := strings.Cut(c.h.get("content-disposition"), ";")
		name := c.filename()
		if name == "" {
			name = "attachment"
			if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 {
				name += exts[0]
			}
		}
		atts = append(atts, Attachment{Name: name, ContentType: mt, Data: data,
			ContentID: strings.Trim(c.h.get("content-id"), "<> "), Inline: strings.EqualFold(strings.TrimSpace(disp), "inline")})
	}
	return Bytes(stripped.Bytes()), atts, cleanup, nil
}

// permanent is a refusal the app must not retry.
func permanent(code int, ec smtp.EnhancedCode, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// Classify turns a failure into the upstream error kinds the proxy maps
// to replies:
//   - no token: the token's error (temporary, or a person must sign in);
//   - Graph refusing mailproxy's credential (401 after a refresh, 403 for
//     a missing permission, an unknown mailbox): the upstream refused the
//     login, saying what to grant;
//   - throttling, 5xx, timeouts, no answer: temporary.
//
// What only this message or request cannot do is left as the *Error, for
// the caller to say.
func (c *Client) Classify(err error) error {
	var ge *Error
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &ge):
		return err
	case ge.Op == "token":
		return upstream.TokenError(c.o.Profile, ge.Err)
	case ge.Temporary():
		return &upstream.Error{Profile: c.o.Profile, Stage: upstream.StageSession, Err: ge}
	case refusesCredential(ge):
		return &upstream.Error{Profile: c.o.Profile, Stage: upstream.StageAuth, Kind: upstream.Refused,
			Err: &upstream.RefusedError{Reply: fmt.Sprintf("Microsoft Graph answered %d %s: %s", ge.Status, ge.Code, ge.Message) + graphFix(ge)}}
	}
	return ge
}

// smtpError maps a failure to what the proxy tells the app, in one place:
// Classify's kinds (454 for the token or the credential, 451 when
// temporary), and what this message cannot do, whatever the retry (the
// From header is not the mailbox, too large, no valid recipient, bad
// MIME): 5xx with Graph's code and message.
func (s *Sender) smtpError(err error) error {
	err = s.c.Classify(err)
	if _, ok := errors.AsType[*upstream.Error](err); ok {
		return err
	}
	ge, ok := errors.AsType[*Error](err)
	if !ok {
		return err // nil, an SMTP reply, a local read error
	}
	switch {
	case ge.Code == "ErrorSendAsDenied":
		return permanent(550, smtp.EnhancedCode{5, 7, 1}, fmt.Sprintf("%s (the From header must be %s, or a mailbox it may send as: give it Send As in Exchange)", ge, s.mailbox))
	case ge.Status == http.StatusRequestEntityTooLarge || ge.Code == "ErrorMessageSizeExceeded":
		return permanent(552, smtp.EnhancedCode{5, 3, 4}, ge.Error())
	case ge.Code == "ErrorInvalidRecipients":
		return permanent(550, smtp.EnhancedCode{5, 1, 3}, ge.Error())
	}
	return permanent(554, smtp.EnhancedCode{5, 6, 0}, ge.Error())
}

// refusesCredential: Graph does not accept what mailproxy is, rather than
// this message.
func refusesCredential(e *Error) bool {
	switch {
	case e.Status == http.StatusUnauthorized:
		return true
	case e.Status == http.StatusForbidden && e.Code != "ErrorSendAsDenied":
		return true // ErrorAccessDenied, Authorization_RequestDenied, NoPermissionsInAccessToken
	case e.Code == "ErrorInvalidUser", e.Code == "ResourceNotFound" && strings.Contains(e.Message, "user"):
		return true
	case e.Status == http.StatusBadRequest && strings.Contains(e.Message, "/me request is only valid with delegated"):
		return true
	}
	return false
}

// graphFix says what a person does about a refused credential.
func graphFix(e *Error) string {
	switch {
	case e.Status == http.StatusForbidden:
		return " (grant the app Mail.Send and Mail.ReadWrite (application) with admin consent, or the person Mail.Send and Mail.ReadWrite; check any application access policy)"
	case e.Code == "ErrorInvalidUser":
		return " (graph.user, or the profile's mailbox, names no mailbox of the tenant)"
	case e.Status == http.StatusUnauthorized:
		return " (the token is not for Graph: check credentials.scopes and the tenant)"
	}
	return ""
}
