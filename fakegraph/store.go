package fakegraph

// The mail store: mailboxes, their well-known folders, messages and their
// two kinds of id, and what was delivered where.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Message is a snapshot of a stored or delivered message.
type Message struct {
	ID string // immutable id ("" for a copy delivered outside the double)
	// MIME is the message as stored (what GET …/$value returns: attachments
	// added through Graph are folded in) or, for Delivered, as delivered.
	MIME            []byte
	IsDraft, IsRead bool
	From            string
	To, Cc, Bcc     []string // addresses, lower case
	Received        time.Time
	// Attachments are those added through upload sessions or POST
	// attachments.
	Attachments []Attachment
}

// Attachment is a file attachment added through Graph.
type Attachment struct {
	Name, ContentType string
	Data              []byte
	IsInline          bool
	ContentID         string
}

// wellKnown are the folders AddMailbox creates, with their display names
// (GRAPH.md 3.3, PROTOCOLS.md §3.3 list the names; mailfolder.md).
var wellKnown = []struct{ name, display string }{
	{"msgfolderroot", "Top of Information Store"},
	{"inbox", "Inbox"},
	{"drafts", "Drafts"},
	{"sentitems", "Sent Items"},
	{"deleteditems", "Deleted Items"},
	{"junkemail", "Junk Email"},
	{"archive", "Archive"},
	{"outbox", "Outbox"},
	{"recoverableitemsdeletions", "Deletions"},
}

// otherWellKnown are well-known names a real mailbox may have that the
// double does not create: asking for one is a 404, not a malformed id.
var otherWellKnown = "clutter conflicts conversationhistory localfailures scheduled searchfolders serverfailures syncissues recoverableitemsroot"

type mailbox struct {
	address, objectID string
	stem              string             // id prefix shared by the mailbox's ids
	folders           map[string]*folder // by well-known name
	sendAs            map[string]bool
	msgs              []*message
	article           int64 // last IMAP article number handed out
}

type folder struct {
	name, id, display, parent string
}

type recipient struct{ Name, Address string }

type message struct {
	seq           int64
	immID, restID string
	box           *mailbox
	folder        string
	// mime is the message without the attachments added through Graph
	// (render folds those in).
	mime              []byte
	isDraft, isRead   bool
	subject           string
	from              *recipient
	to, cc, bcc       []recipient
	replyTo           []recipient
	msgID             string
	created, modified time.Time
	received, sent    time.Time
	flag, importance  string
	categories        []string
	attachments       []*attachment
	changes           int
	article           int64
	inference         string
	receiptRequested  bool
	deliveryRequested bool
}

type attachment struct {
	id       string
	modified time.Time
	Attachment
}

// idPattern is what a Graph item id looks like: base64url with '='
// padding; ids are case-sensitive and contain '-', '_', '='
// (GRAPH.md 4.5; outlook-immutable-id.md).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]{20,}$`)

// immPrefix starts every immutable id; DAV tells immutable (72 chars) and
// REST (~140 chars) ids apart by length (GRAPH.md 5).
const immPrefix = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A"

func randomB64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func newUUID() string {
	b := make([]byte, 16)
	rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// newImmutableID is 72 characters, stable for the message's life in its
// mailbox (outlook-immutable-id.md).
func newImmutableID() string { return immPrefix + randomB64(27) }

// newRESTID is ~141 characters and is replaced on every move (GRAPH.md 4.2).
func (b *mailbox) newRESTID() string { return "AAMkA" + b.stem + "ARgAAAAA" + randomB64(72) }

func (b *mailbox) folderID(name string) string {
	sum := sha256.Sum256([]byte(b.objectID + "/" + name))
	return "AAMkA" + b.stem + "AuAAAAAA" + base64.RawURLEncoding.EncodeToString(sum[:]) + "AAA="
}

// AddMailbox creates a mailbox with its well-known folders. objectID is
// the user's id (a GUID); the mailbox is reachable as /users/{address}
// and /users/{objectID} (case-insensitive address), and as /me for a
// delegated token whose Grant.Mailbox is address.
func (s *Server) AddMailbox(address, objectID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256([]byte(strings.ToLower(objectID)))
	b := &mailbox{address: strings.ToLower(address), objectID: strings.ToLower(objectID),
		stem: base64.RawURLEncoding.EncodeToString(sum[:24]), folders: map[string]*folder{}, sendAs: map[string]bool{}}
	for _, wk := range wellKnown {
		f := &folder{name: wk.name, id: b.folderID(wk.name), display: wk.display}
		switch wk.name {
		case "msgfolderroot":
			f.parent = b.folderID("root")
		case "recoverableitemsdeletions":
			// Recoverable Items live outside the IPM subtree.
			f.parent = b.folderID("recoverableitemsroot")
		default:
			f.parent = b.folderID("msgfolderroot")
		}
		b.folders[wk.name] = f
	}
	s.boxes[b.address] = b
	s.boxes[b.objectID] = b
}

// AllowSendAs lets mailbox send with From: as (Send As permission).
func (s *Server) AllowSendAs(mailbox, as string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	b.sendAs[strings.ToLower(as)] = true
}

func (s *Server) mustBox(address string) *mailbox {
	b := s.boxes[strings.ToLower(address)]
	if b == nil {
		panic("fakegraph: no mailbox " + address)
	}
	return b
}

// Put stores mime as a received message in mailbox's folder (a well-known
// name) and returns its immutable id.
func (s *Server) Put(mailbox, folder string, mime []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	if b.folders[strings.ToLower(folder)] == nil {
		panic("fakegraph: no folder " + folder)
	}
	m := s.newMessage(b, strings.ToLower(folder), mime)
	return m.immID
}

// newMessage stores mime in b's folder as a received, unread message with
// its properties taken from the headers.
func (s *Server) newMessage(b *mailbox, folder string, mime []byte) *message {
	now := s.now()
	s.seq++
	m := &message{seq: s.seq, immID: newImmutableID(), restID: b.newRESTID(), box: b, folder: folder,
		mime: append([]byte(nil), mime...), created: now, modified: now, received: now,
		flag: "notFlagged", importance: "normal", inference: "focused"}
	m.fromHeaders()
	if m.sent.IsZero() {
		m.sent = now
	}
	b.article++
	m.article = b.article
	b.msgs = append(b.msgs, m)
	s.byImm[m.immID] = m
	s.byREST[m.restID] = m
	return m
}

// now is strictly increasing, so that receivedDateTime orders messages
// stored in one burst as they came.
func (s *Server) now() time.Time {
	t := time.Now().UTC()
	if !t.After(s.last) {
		t = s.last.Add(time.Microsecond)
	}
	s.last = t
	return t
}

// fromHeaders sets the properties Exchange copies from the MIME headers
// (outlook-things-to-know-about-send-mail.md §1, GRAPH.md 1.3 and 4.4).
func (m *message) fromHeaders() {
	h, _ := splitMessage(m.mime)
	m.subject = decodeWords(h.get("Subject"))
	m.from = nil
	if f, _ := parseAddrs(h.get("From")); len(f) > 0 {
		m.from = &f[0]
	}
	m.to, _ = parseAddrs(h.getAll("To"))
	m.cc, _ = parseAddrs(h.getAll("Cc"))
	m.bcc, _ = parseAddrs(h.getAll("Bcc"))
	m.replyTo, _ = parseAddrs(h.getAll("Reply-To"))
	m.msgID = h.get("Message-ID")
	if d, err := parseDate(h.get("Date")); err == nil {
		m.sent = d.UTC()
	}
	switch strings.ToLower(h.get("Importance")) {
	case "high":
		m.importance = "high"
	case "low":
		m.importance = "low"
	}
}

// move puts m in folder with a new REST id: the old one then 404s; the
// immutable id stays (GRAPH.md 4.2, 5).
func (s *Server) move(m *message, folder string) {
	delete(s.byREST, m.restID)
	m.restID = m.box.newRESTID()
	s.byREST[m.restID] = m
	m.folder = folder
	m.box.article++
	m.article = m.box.article
	m.touch(s)
}

func (m *message) touch(s *Server) {
	m.modified = s.now()
	m.changes++
}

// remove deletes m for good.
func (s *Server) remove(m *message) {
	delete(s.byImm, m.immID)
	delete(s.byREST, m.restID)
	b := m.box
	for i, x := range b.msgs {
		if x == m {
			b.msgs = append(b.msgs[:i], b.msgs[i+1:]...)
			break
		}
	}
}

// inFolder is folder's messages, oldest first.
func (b *mailbox) inFolder(folder string) []*message {
	var out []*message
	for _, m := range b.msgs {
		if folder == "" && m.folder != "recoverableitemsdeletions" || m.folder == folder {
			out = append(out, m)
		}
	}
	sortOldest(out)
	return out
}

func sortOldest(ms []*message) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].received.Equal(ms[j].received) {
			return ms[i].received.Before(ms[j].received)
		}
		return ms[i].seq < ms[j].seq
	})
}

// Messages is a snapshot of a folder, oldest first.
func (s *Server) Messages(mailbox, folder string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	var out []Message
	for _, m := range b.inFolder(strings.ToLower(folder)) {
		out = append(out, m.snapshot())
	}
	return out
}

func (m *message) snapshot() Message {
	sm := Message{ID: m.immID, MIME: m.render(true), IsDraft: m.isDraft, IsRead: m.isRead,
		To: addrsOf(m.to), Cc: addrsOf(m.cc), Bcc: addrsOf(m.bcc), Received: m.received}
	if m.from != nil {
		sm.From = strings.ToLower(m.from.Address)
	}
	for _, a := range m.attachments {
		c := a.Attachment
		c.Data = append([]byte(nil), a.Data...)
		sm.Attachments = append(sm.Attachments, c)
	}
	return sm
}

func addrsOf(rs []recipient) []string {
	var out []string
	for _, r := range rs {
		out = append(out, strings.ToLower(r.Address))
	}
	return out
}

// Delivered is every copy delivered to address (a mailbox of the double,
// or an address outside it), oldest first, with the Bcc header removed as
// Exchange does.
func (s *Server) Delivered(address string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.delivered[strings.ToLower(address)]...)
}

// resolveFolder finds a folder by well-known name or id. An unknown name
// that is no id is malformed; an unknown id (or a well-known folder the
// double lacks) is not found (GRAPH.md 3.3, 4.5).
func (b *mailbox) resolveFolder(ref string) (*folder, *apiError) {
	if f := b.folders[strings.ToLower(ref)]; f != nil {
		return f, nil
	}
	for _, f := range b.folders {
		if f.id == ref {
			return f, nil
		}
	}
	if strings.Contains(" "+otherWellKnown+" ", " "+strings.ToLower(ref)+" ") || idPattern.MatchString(ref) {
		return nil, errNotFound()
	}
	return nil, errMalformed()
}

// lookup finds a message of b by immutable or REST id; both forms are
// accepted in paths (outlook-immutable-id.md).
func (s *Server) lookup(b *mailbox, id string) (*message, *apiError) {
	if !idPattern.MatchString(id) {
		return nil, errMalformed()
	}
	m := s.byImm[id]
	if m == nil {
		m = s.byREST[id]
	}
	if m == nil || m.box != b {
		return nil, errNotFound()
	}
	return m, nil
}

func errNotFound() *apiError {
	// GRAPH.md 4.5 (MHA#77, msgraph-sdk-dotnet#259).
	return newError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
}

func errMalformed() *apiError {
	// GRAPH.md 4.5 (davmail#459).
	return newError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
}
