package fakegraph

// The mail store: mailboxes, their folder trees, messages and their two
// kinds of id, what was delivered where, and the change counter that delta
// queries read.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
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

	// The rest is set for stored messages only.
	Folder     string   // the folder's id
	Flag       string   // flagStatus: notFlagged, flagged or complete
	Categories []string // as set, in order
	// Extended are the singleValueExtendedProperties stored by PATCH or a
	// JSON create, by id in Graph's spelling ("Integer 0x1081"); the
	// computed ones (0x0E07, 0x0E08, 0x0E23, 0x1090) are not in it.
	Extended map[string]string
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
	wellKnown         map[string]*folder // by well-known name
	byID              map[string]*folder // every folder, by id
	sendAs            map[string]bool
	article           int64 // last IMAP article number handed out
	userFolders       int   // user folders created so far (their ids derive from it)
	// changes counts every create, change, move, copy and delete of a
	// message: delta tokens are positions in it.
	changes int64
}

// folder is a mail folder: a well-known one or a user folder anywhere
// under msgfolderroot.
type folder struct {
	id, display string
	wellKnown   string // "" for a user folder
	hidden      bool
	box         *mailbox
	parent      *folder // nil for msgfolderroot and recoverableitemsdeletions
	outside     string  // their parentFolderId: a folder the double does not model
	children    []*folder
	// msgs are the folder's messages, oldest first (receivedDateTime, then
	// arrival) unless unsorted; messages() sorts them when needed, so that
	// storing one is O(1).
	msgs     []*message
	unsorted bool
	// removals are the messages that left the folder, in change order
	// (delta's @removed, GRAPH.md 6.3).
	removals []removal
	gone     bool // deleted for good
}

// removal records a message leaving a folder: deleted, moved out, or its
// folder deleted.
type removal struct {
	change        int64  // when it left
	entered       int64  // when it had entered
	immID, restID string // the REST id it had in the folder
	received      time.Time
	m             *message
}

type recipient struct{ Name, Address string }

type message struct {
	seq           int64
	immID, restID string
	box           *mailbox
	folder        *folder
	gone          bool // removed for good
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
	ext               map[string]extProp // stored extended properties, by lower-case id
	changes           int                // for the changeKey
	lastChange        int64              // the mailbox change that last touched it
	entered           int64              // the change that put it in its folder
	article           int64
	inference         string
	receiptRequested  bool
	deliveryRequested bool
}

type extProp struct{ id, value string }

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

// folderID is stable for a name; folder ids never change (GRAPH.md 3.3).
func (b *mailbox) folderID(name string) string {
	sum := sha256.Sum256([]byte(b.objectID + "/" + name))
	return "AAMkA" + b.stem + "AuAAAAAA" + base64.RawURLEncoding.EncodeToString(sum[:]) + "AAA="
}

// bump is the next change of the mailbox.
func (b *mailbox) bump() int64 {
	b.changes++
	return b.changes
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
		stem: base64.RawURLEncoding.EncodeToString(sum[:24]), wellKnown: map[string]*folder{},
		byID: map[string]*folder{}, sendAs: map[string]bool{}}
	for _, wk := range wellKnown {
		f := &folder{id: b.folderID(wk.name), display: wk.display, wellKnown: wk.name, box: b}
		switch wk.name {
		case "msgfolderroot":
			f.outside = b.folderID("root")
		case "recoverableitemsdeletions":
			// Recoverable Items live outside the IPM subtree.
			f.outside = b.folderID("recoverableitemsroot")
		default:
			f.parent = b.wellKnown["msgfolderroot"]
			f.parent.children = append(f.parent.children, f)
		}
		b.wellKnown[wk.name] = f
		b.byID[f.id] = f
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

func (b *mailbox) mustFolder(ref string) *folder {
	f, e := b.resolveFolder(ref)
	if e != nil {
		panic("fakegraph: no folder " + ref + " in " + b.address)
	}
	return f
}

// Put stores mime as a received message in mailbox's folder (a well-known
// name or a folder id) and returns its immutable id. It costs the same
// however many messages the folder holds.
func (s *Server) Put(mailbox, folder string, mime []byte) string {
	return s.PutAt(mailbox, folder, mime, time.Time{})
}

// PutAt is Put with the message's receivedDateTime; the zero time is now.
func (s *Server) PutAt(mailbox, folder string, mime []byte, received time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.mustBox(mailbox).mustFolder(folder)
	return s.newMessage(f, mime, received).immID
}

// newMessage stores mime in f as a received, unread message with its
// properties taken from the headers; received is now when zero.
func (s *Server) newMessage(f *folder, mime []byte, received time.Time) *message {
	now := s.now()
	if received.IsZero() {
		received = now
	}
	b := f.box
	s.seq++
	m := &message{seq: s.seq, immID: newImmutableID(), restID: b.newRESTID(), box: b, folder: f,
		mime: append([]byte(nil), mime...), created: now, modified: now, received: received.UTC(),
		flag: "notFlagged", importance: "normal", inference: "focused"}
	m.fromHeaders()
	if m.sent.IsZero() {
		m.sent = m.received
	}
	b.article++
	m.article = b.article
	m.lastChange = b.bump()
	m.entered = m.lastChange
	f.add(m)
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
// immutable id stays (GRAPH.md 4.2, 5). The folder it left records the
// removal for delta (GRAPH.md 6.3).
func (s *Server) move(m *message, to *folder) { s.moveAt(m, to, time.Time{}) }

// moveAt is move giving m a new receivedDateTime unless received is zero.
func (s *Server) moveAt(m *message, to *folder, received time.Time) {
	m.folder.drop(m)
	if !received.IsZero() {
		m.received = received
	}
	delete(s.byREST, m.restID)
	m.restID = m.box.newRESTID()
	s.byREST[m.restID] = m
	m.folder = to
	to.add(m)
	m.box.article++
	m.article = m.box.article
	m.touch(s)
	m.entered = m.lastChange
}

// touch records a change of m: a new changeKey and lastModifiedDateTime,
// and a place in the mailbox's changes (delta sees it).
func (m *message) touch(s *Server) {
	m.modified = s.now()
	m.changes++
	m.lastChange = m.box.bump()
}

// remove deletes m for good.
func (s *Server) remove(m *message) {
	m.folder.drop(m)
	delete(s.byImm, m.immID)
	delete(s.byREST, m.restID)
	m.gone = true
}

func older(a, b *message) bool {
	if !a.received.Equal(b.received) {
		return a.received.Before(b.received)
	}
	return a.seq < b.seq
}

// add stores m in f; mail arriving now is the newest and keeps f sorted.
func (f *folder) add(m *message) {
	if n := len(f.msgs); n > 0 && older(m, f.msgs[n-1]) {
		f.unsorted = true
	}
	f.msgs = append(f.msgs, m)
}

// messages is f's messages, oldest first; the slice is f's own, valid
// until f next changes.
func (f *folder) messages() []*message {
	if f.unsorted {
		sort.Slice(f.msgs, func(i, j int) bool { return older(f.msgs[i], f.msgs[j]) })
		f.unsorted = false
	}
	return f.msgs
}

// drop takes m out of f and records that it left.
func (f *folder) drop(m *message) {
	ms := f.messages()
	i := sort.Search(len(ms), func(i int) bool { return !older(ms[i], m) })
	if i >= len(ms) || ms[i] != m {
		i = slices.Index(ms, m) // its receivedDateTime changed while in f
	}
	if i >= 0 {
		f.msgs = slices.Delete(ms, i, i+1)
	}
	f.removals = append(f.removals, removal{change: m.box.bump(), entered: m.entered, immID: m.immID, restID: m.restID, received: m.received, m: m})
}

// holds: m is in f now.
func (f *folder) holds(m *message) bool { return !m.gone && m.folder == f }

// inFolder is f's messages, oldest first, or with f nil every message of
// the mailbox outside Recoverable Items (user-list-messages.md), in a
// slice of the caller's.
func (b *mailbox) inFolder(f *folder) []*message {
	if f != nil {
		return slices.Clone(f.messages())
	}
	var out []*message
	for _, g := range b.byID {
		if g.wellKnown != "recoverableitemsdeletions" {
			out = append(out, g.messages()...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return older(out[i], out[j]) })
	return out
}

// Messages is a snapshot of a folder (a well-known name or a folder id),
// oldest first; "" is the whole mailbox outside Recoverable Items, and an
// unknown folder has none.
func (s *Server) Messages(mailbox, folderRef string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	var f *folder
	if folderRef != "" {
		var e *apiError
		if f, e = b.resolveFolder(folderRef); e != nil {
			return nil
		}
	}
	var out []Message
	for _, m := range b.inFolder(f) {
		out = append(out, m.snapshot())
	}
	return out
}

func (m *message) snapshot() Message {
	sm := Message{ID: m.immID, MIME: m.render(true), IsDraft: m.isDraft, IsRead: m.isRead,
		To: addrsOf(m.to), Cc: addrsOf(m.cc), Bcc: addrsOf(m.bcc), Received: m.received,
		Folder: m.folder.id, Flag: m.flag, Categories: slices.Clone(m.categories)}
	if m.from != nil {
		sm.From = strings.ToLower(m.from.Address)
	}
	for _, a := range m.attachments {
		c := a.Attachment
		c.Data = append([]byte(nil), a.Data...)
		sm.Attachments = append(sm.Attachments, c)
	}
	for _, p := range m.ext {
		if sm.Extended == nil {
			sm.Extended = map[string]string{}
		}
		sm.Extended[p.id] = p.value
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
	if f := b.wellKnown[strings.ToLower(ref)]; f != nil {
		return f, nil
	}
	if f := b.byID[ref]; f != nil {
		return f, nil
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

// extKey is an extended property id in Graph's spelling ("Integer 0xe08"
// for 'Integer 0x0E08') and, for Integer ones, its tag.
func extKey(id string) (canon string, tag uint64, isInteger bool) {
	canon = strings.Join(strings.Fields(id), " ")
	typ, hex, _ := strings.Cut(canon, " ")
	if t, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(hex), "0x"), 16, 32); err == nil &&
		strings.EqualFold(typ, "Integer") && strings.HasPrefix(strings.ToLower(hex), "0x") {
		return fmt.Sprintf("Integer 0x%x", t), t, true
	}
	return canon, 0, false
}
