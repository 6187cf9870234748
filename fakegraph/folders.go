package fakegraph

// Mail folders: the tree under msgfolderroot, listings, create, rename,
// move and delete (mailfolder.md and its operations), and the test hooks
// that add and list folders.

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Folder is a snapshot of one folder of a mailbox.
type Folder struct {
	ID, ParentID, DisplayName string
	WellKnown                 string // "" for a user folder
}

// AddFolder creates a user folder named displayName under parentRef (a
// well-known name such as "msgfolderroot" or "inbox", or a folder id) and
// returns its id, as Outlook would. It panics on a missing mailbox or
// parent, or a sibling of that name.
func (s *Server) AddFolder(mailbox, parentRef, displayName string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	f, e := b.newFolder(b.mustFolder(parentRef), displayName, false)
	if e != nil {
		panic("fakegraph: AddFolder " + displayName + ": " + e.msg)
	}
	return f.id
}

// Folders is every folder of mailbox, the tree from msgfolderroot depth
// first, then Recoverable Items' deletions.
func (s *Server) Folders(mailbox string) []Folder {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.mustBox(mailbox)
	var out []Folder
	var walk func(f *folder)
	walk = func(f *folder) {
		out = append(out, Folder{ID: f.id, ParentID: f.parentID(), DisplayName: f.display, WellKnown: f.wellKnown})
		for _, g := range f.children {
			walk(g)
		}
	}
	walk(b.wellKnown["msgfolderroot"])
	walk(b.wellKnown["recoverableitemsdeletions"])
	return out
}

func (f *folder) parentID() string {
	if f.parent != nil {
		return f.parent.id
	}
	return f.outside
}

// within: f is g or under it.
func (f *folder) within(g *folder) bool {
	for x := f; x != nil; x = x.parent {
		if x == g {
			return true
		}
	}
	return false
}

// sibling is parent's child named name, case-insensitively, other than f.
func (parent *folder) sibling(name string, f *folder) *folder {
	for _, g := range parent.children {
		if g != f && strings.EqualFold(g.display, name) {
			return g
		}
	}
	return nil
}

func folderExists() *apiError {
	// EWS ResponseCode ErrorFolderExists ("a folder that has the same name
	// as another folder in the same parent"; the CreateFolder error
	// example's text), which Graph passes on; [Rec] status 409 (errors.md:
	// "The current state conflicts with what the request expects"). Some
	// reports see 400 with this code: branch on the code.
	return newError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
}

// newFolder creates a user folder under parent; its id has the shape of
// the well-known ones' (folder ids never change, GRAPH.md 3.3).
func (b *mailbox) newFolder(parent *folder, name string, hidden bool) (*folder, *apiError) {
	if parent.sibling(name, nil) != nil {
		return nil, folderExists()
	}
	b.userFolders++
	f := &folder{id: b.folderID("user/" + strconv.Itoa(b.userFolders)), display: name, hidden: hidden, box: b, parent: parent}
	parent.children = append(parent.children, f)
	b.byID[f.id] = f
	return f, nil
}

// folderJSON has the v1.0 mailFolder properties (GRAPH.md 3.2); the
// counts include every item in the folder (GRAPH.md 3.4).
func (c *call) folderJSON(f *folder) map[string]any {
	unread := 0
	for _, m := range f.msgs {
		if !m.isRead {
			unread++
		}
	}
	return map[string]any{"id": f.id, "displayName": f.display, "parentFolderId": f.parentID(),
		"childFolderCount": len(f.children), "unreadItemCount": unread, "totalItemCount": len(f.msgs), "isHidden": f.hidden}
}

func (c *call) folder() (*folder, *apiError) { return c.box.resolveFolder(c.folderRef) }

func (c *call) getFolder() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	out := c.folderJSON(f)
	out["@odata.context"] = c.context("mailFolders/$entity")
	return reply{status: 200, body: out}
}

// listFolders is GET {u}/mailFolders: the root's children only, paged
// (GRAPH.md 3.1, user-list-mailfolders.md).
func (c *call) listFolders() reply {
	return c.listChildren(c.box.wellKnown["msgfolderroot"], "mailFolders")
}

// listChildFolders is GET {u}/mailFolders/{f}/childFolders, paged alike
// (mailfolder-list-childfolders.md).
func (c *call) listChildFolders() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	return c.listChildren(f, "mailFolders('"+f.id+"')/childFolders")
}

// listChildren leaves hidden folders out unless includeHiddenFolders=true
// (GRAPH.md 3.1).
func (c *call) listChildren(f *folder, ctx string) reply {
	hidden := strings.EqualFold(c.r.URL.Query().Get("includeHiddenFolders"), "true")
	var fs []*folder
	for _, g := range f.children {
		if hidden || !g.hidden {
			fs = append(fs, g)
		}
	}
	start, end, next, applied, e := c.page(len(fs))
	if e != nil {
		return fail(e)
	}
	values := []any{}
	for _, g := range fs[start:end] {
		values = append(values, c.folderJSON(g))
	}
	return c.collection(ctx, values, len(fs), next, applied)
}

// folderInput reads a mailFolder body: displayName, and isHidden where
// allowed (user-post-mailfolders.md: "displayName and isHidden are the
// only writable property"; mailfolder-update.md: displayName).
func (c *call) folderInput(allowHidden bool) (name string, hidden bool, e *apiError) {
	var raw map[string]json.RawMessage
	if e := c.decodeJSON(&raw); e != nil {
		return "", false, e
	}
	for k, v := range raw {
		switch {
		case strings.HasPrefix(k, "@"):
		case strings.EqualFold(k, "displayName"):
			if err := json.Unmarshal(v, &name); err != nil {
				return "", false, newError(400, "RequestBodyRead", "Cannot read the value of 'displayName': "+err.Error())
			}
		case strings.EqualFold(k, "isHidden") && allowHidden:
			if err := json.Unmarshal(v, &hidden); err != nil {
				return "", false, newError(400, "RequestBodyRead", "Cannot read the value of 'isHidden': "+err.Error())
			}
		default:
			// [Rec] as for messages (GRAPH.md 4.1); isHidden "cannot be
			// updated" once set (user-post-mailfolders.md).
			return "", false, newError(400, "RequestBodyRead", "The property '"+k+"' does not exist on type 'microsoft.graph.mailFolder' or cannot be written.")
		}
	}
	if strings.TrimSpace(name) == "" {
		// [Rec]
		return "", false, newError(400, "ErrorInvalidParameter", "The value of the parameter 'DisplayName' is empty.")
	}
	return name, hidden, nil
}

// createFolder is POST {u}/mailFolders, a child of msgfolderroot
// (user-post-mailfolders.md), or POST {u}/mailFolders/{f}/childFolders
// (mailfolder-post-childfolders.md) → 201 + the folder.
func (c *call) createFolder() reply {
	parent := c.box.wellKnown["msgfolderroot"]
	if c.folderRef != "" {
		var e *apiError
		if parent, e = c.folder(); e != nil {
			return fail(e)
		}
	}
	name, hidden, e := c.folderInput(true)
	if e != nil {
		return fail(e)
	}
	f, e := c.box.newFolder(parent, name, hidden)
	if e != nil {
		return fail(e)
	}
	out := c.folderJSON(f)
	out["@odata.context"] = c.context("mailFolders/$entity")
	return reply{status: 201, body: out}
}

// updateFolder is PATCH {u}/mailFolders/{f} {"displayName"} → 200 + the
// folder (mailfolder-update.md).
func (c *call) updateFolder() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	name, _, e := c.folderInput(false)
	if e != nil {
		return fail(e)
	}
	if f.wellKnown != "" {
		// [Rec] Outlook keeps the well-known folders' names (they are
		// localised by the mailbox language, not by clients).
		return fail(newError(400, "ErrorInvalidOperation", "A distinguished folder cannot be renamed."))
	}
	if f.parent.sibling(name, f) != nil {
		return fail(folderExists())
	}
	f.display = name
	out := c.folderJSON(f)
	out["@odata.context"] = c.context("mailFolders/$entity")
	return reply{status: 200, body: out}
}

// moveFolder is POST {u}/mailFolders/{f}/move {"destinationId": id or
// well-known name} → the folder, its id unchanged, with its messages and
// subfolders (mailfolder-move.md; GRAPH.md 3.3). The doc answers 200 OK.
func (c *call) moveFolder() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	to, e := c.destination()
	if e != nil {
		return fail(e)
	}
	switch {
	case f.wellKnown != "":
		// EWS MoveFolder: "You cannot move distinguished folders";
		// ResponseCode ErrorMoveDistinguishedFolder; [Rec] status 400.
		return fail(newError(400, "ErrorMoveDistinguishedFolder", "Distinguished folders cannot be moved."))
	case to.within(f):
		// [Rec]
		return fail(newError(400, "ErrorInvalidOperation", "A folder cannot be moved into itself or one of its subfolders."))
	case !to.within(c.box.wellKnown["msgfolderroot"]):
		// [Rec] user folders live under msgfolderroot.
		return fail(newError(400, "ErrorInvalidOperation", "A folder can only be moved under the Top of Information Store."))
	case to.sibling(f.display, f) != nil:
		return fail(folderExists())
	}
	f.reparent(to)
	out := c.folderJSON(f)
	out["@odata.context"] = c.context("mailFolders/$entity")
	return reply{status: 200, body: out}
}

func (f *folder) reparent(to *folder) {
	f.parent.children = slices.DeleteFunc(f.parent.children, func(g *folder) bool { return g == f })
	f.parent = to
	to.children = append(to.children, f)
}

// deleteFolder is DELETE {u}/mailFolders/{f} → 204 (mailfolder-delete.md).
// [Rec] As Outlook does, the folder goes with its messages and subfolders
// under Deleted Items, unless it is already there: then it is removed for
// good, with its messages.
func (c *call) deleteFolder() reply {
	f, e := c.folder()
	if e != nil {
		return fail(e)
	}
	if f.wellKnown != "" {
		// EWS ResponseCode ErrorDeleteDistinguishedFolder ("an attempt is
		// made to delete a distinguished folder"); [Rec] status 400.
		return fail(newError(400, "ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted."))
	}
	deleted := c.box.wellKnown["deleteditems"]
	if !f.within(deleted) {
		f.reparent(deleted)
		return reply{status: 204}
	}
	f.parent.children = slices.DeleteFunc(f.parent.children, func(g *folder) bool { return g == f })
	c.s.removeFolder(f)
	return reply{status: 204}
}

// removeFolder deletes f, its subfolders and their messages for good.
func (s *Server) removeFolder(f *folder) {
	for _, g := range f.children {
		s.removeFolder(g)
	}
	for _, m := range slices.Clone(f.messages()) {
		s.remove(m)
	}
	f.gone = true
	delete(f.box.byID, f.id)
}
