package mirror

import (
	"strings"
	"time"

	"mailproxy/upstream/graph"
)

// Flags are a message's IMAP system flags.
type Flags uint8

const (
	Seen     Flags = 1 << iota // isRead
	Answered                   // PidTagLastVerbExecuted 102 or 103
	Flagged                    // flag.flagStatus flagged
	Deleted                    // kept by mailproxy until EXPUNGE
	Draft                      // isDraft
)

// Entry is a message of a folder as its mirror knows it.
type Entry struct {
	UID uint32 `json:"u"`
	// ID is Graph's immutable id of the message.
	ID       string    `json:"id"`
	Received time.Time `json:"r"` // INTERNALDATE: receivedDateTime
	// Size is RFC822.SIZE: Exchange's store size (PR_MESSAGE_SIZE) until
	// the MIME has been read once, then its octets (Exact).
	Size  int64 `json:"s"`
	Exact bool  `json:"x,omitempty"`
	Flags Flags `json:"f"`
	// Keywords are the message's categories that are IMAP atoms; Other
	// its other categories (kept when keywords change).
	Keywords []string `json:"k,omitempty"`
	Other    []string `json:"o,omitempty"`
}

// Envelope is what IMAP's ENVELOPE says, from Graph's properties.
type Envelope struct {
	Date      time.Time `json:"d,omitzero"`
	Subject   string    `json:"s,omitempty"`
	From      []Address `json:"f,omitempty"`
	Sender    []Address `json:"se,omitempty"`
	ReplyTo   []Address `json:"rt,omitempty"`
	To        []Address `json:"t,omitempty"`
	Cc        []Address `json:"c,omitempty"`
	Bcc       []Address `json:"b,omitempty"`
	MessageID string    `json:"m,omitempty"`
}

// Address is a mailbox of an envelope.
type Address struct {
	Name string `json:"n,omitempty"`
	Addr string `json:"a"`
}

// Graph's last verbs (PidTagLastVerbExecuted, MS-OXOMSG 2.2.1.33).
const (
	verbReply    = 102
	verbReplyAll = 103
)

// FromGraph reads a delta item (or a created message) into an entry
// without its UID, and its envelope.
func FromGraph(m graph.Message) (Entry, Envelope) {
	e := Entry{ID: m.ID, Received: parseTime(m.Received)}
	e.Size, _ = m.Property(graph.SizeTag)
	if m.IsRead {
		e.Flags |= Seen
	}
	if m.IsDraft {
		e.Flags |= Draft
	}
	if m.Flag != nil && strings.EqualFold(m.Flag.Status, "flagged") {
		e.Flags |= Flagged
	}
	if v, _ := m.Property(graph.LastVerbTag); v == verbReply || v == verbReplyAll {
		e.Flags |= Answered
	}
	for _, c := range m.Categories {
		if IsKeyword(c) {
			e.Keywords = append(e.Keywords, c)
		} else {
			e.Other = append(e.Other, c)
		}
	}
	env := Envelope{Date: parseTime(m.Sent), Subject: m.Subject, MessageID: m.InternetMessageID,
		From: one(m.From), Sender: one(m.Sender), ReplyTo: addresses(m.ReplyTo), To: addresses(m.To), Cc: addresses(m.Cc), Bcc: addresses(m.Bcc)}
	return e, env
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func one(r *graph.Recipient) []Address {
	if r == nil || r.EmailAddress.Address == "" {
		return nil
	}
	return []Address{{Name: r.EmailAddress.Name, Addr: r.EmailAddress.Address}}
}

func addresses(rs []graph.Recipient) []Address {
	var out []Address
	for _, r := range rs {
		out = append(out, Address{Name: r.EmailAddress.Name, Addr: r.EmailAddress.Address})
	}
	return out
}

// IsKeyword reports whether a category can be an IMAP keyword: an atom
// (RFC 3501 §9: no space, control, "(){%*\"\\]"), not starting with \.
func IsKeyword(s string) bool {
	if s == "" || s[0] == '\\' {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`(){%*"\]`, r) {
			return false
		}
	}
	return true
}
