package fakegraph

// Test hooks: changes made "from Outlook's side" while the double is
// served, and faults. Each is a change of the mailbox like one made
// through Graph: delta sees it. All are safe for concurrent use with
// serving; they panic on an unknown message or folder, as Put does on an
// unknown mailbox.

import (
	"slices"
	"strings"
)

// mustMessage finds a stored message by immutable (or REST) id.
func (s *Server) mustMessage(id string) *message {
	m := s.byImm[id]
	if m == nil {
		m = s.byREST[id]
	}
	if m == nil {
		panic("fakegraph: no message " + id)
	}
	return m
}

// Message is a snapshot of the stored message with immutable (or REST)
// id; ok is false when there is none.
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.byImm[id]
	if m == nil {
		m = s.byREST[id]
	}
	if m == nil {
		return Message{}, false
	}
	return m.snapshot(), true
}

// SetRead marks a message read or unread.
func (s *Server) SetRead(id string, read bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mustMessage(id)
	m.isRead = read
	m.touch(s)
}

// SetFlag sets flag.flagStatus: "flagged", "notFlagged" or "complete"
// (message resource, followupFlag).
func (s *Server) SetFlag(id, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mustMessage(id)
	switch strings.ToLower(status) {
	case "flagged":
		m.flag = "flagged"
	case "complete":
		m.flag = "complete"
	case "notflagged":
		m.flag = "notFlagged"
	default:
		panic("fakegraph: flag status " + status)
	}
	m.touch(s)
}

// SetCategories replaces a message's categories.
func (s *Server) SetCategories(id string, cats []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mustMessage(id)
	m.categories = slices.Clone(cats)
	m.touch(s)
}

// MoveTo moves a message to folderRef (a well-known name or a folder id
// of its mailbox): a new REST id, the same immutable id (GRAPH.md 4.2).
func (s *Server) MoveTo(id, folderRef string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mustMessage(id)
	s.move(m, m.box.mustFolder(folderRef))
}

// Remove deletes a message for good (as emptying Recoverable Items does):
// delta reports it @removed.
func (s *Server) Remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(s.mustMessage(id))
}

// BreakValue makes every following GET …/$value write only afterBytes of
// the MIME and then cut the connection, so that the client meets an
// unexpected EOF in the body (a Graph connection lost mid-download);
// BreakValue(-1) turns it off.
func (s *Server) BreakValue(afterBytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breakValue, s.breakAfter = afterBytes >= 0, afterBytes
}
