package graphimap

import (
	"strings"

	"github.com/emersion/go-imap"
	"github.com/emersion/go-imap/backend"

	"mailproxy/upstream/graph/mirror"
)

// user is go-imap's backend.User for one session: the folder tree.
type user struct{ s *session }

func (u *user) Username() string { return u.s.b.Profile }
func (u *user) Logout() error    { return nil }

func (u *user) tree(fresh bool) ([]mirror.TreeFolder, error) {
	age := treeFresh
	if fresh {
		age = 0
	}
	t, err := u.s.b.Mirror.Tree(u.s.ctx, u.s.b.Client, age)
	return t, u.s.fail("list folders", err)
}

// find is the folder named name (INBOX in any case), walking the tree
// again when the last walk lacks it.
func (u *user) find(name string) (mirror.TreeFolder, error) {
	name = canonical(name)
	for _, again := range []bool{false, true} {
		t, err := u.tree(again)
		if err != nil {
			return mirror.TreeFolder{}, err
		}
		for _, f := range t {
			if f.Name == name {
				return f, nil
			}
		}
	}
	return mirror.TreeFolder{}, backend.ErrNoSuchMailbox
}

// canonical spells INBOX as IMAP requires (RFC 3501 §5.1: case
// insensitive), and drops a trailing delimiter.
func canonical(name string) string {
	name = strings.TrimSuffix(name, mirror.Delimiter)
	if head, rest, _ := strings.Cut(name, mirror.Delimiter); strings.EqualFold(head, "INBOX") {
		if rest == "" {
			return "INBOX"
		}
		return "INBOX" + mirror.Delimiter + rest
	}
	return name
}

func (u *user) ListMailboxes(subscribed bool) ([]backend.Mailbox, error) {
	t, err := u.tree(true)
	if err != nil {
		return nil, err
	}
	var out []backend.Mailbox
	for _, f := range t {
		if subscribed && !u.s.b.Mirror.Subscribed(f.ID) {
			continue
		}
		out = append(out, &mailbox{u: u, info: f})
	}
	return out, nil
}

func (u *user) GetMailbox(name string) (backend.Mailbox, error) {
	f, err := u.find(name)
	if err != nil {
		return nil, err
	}
	return &mailbox{u: u, info: f}, nil
}

// parentOf is the folder a new name goes under ("" for the top), made
// with its own parents when missing (RFC 3501 §6.3.3: CREATE makes the
// superior names it needs).
func (u *user) parentOf(name string) (parent, leaf string, err error) {
	i := strings.LastIndex(name, mirror.Delimiter)
	if i < 0 {
		return "", name, nil
	}
	up, leaf := name[:i], name[i+1:]
	if f, err := u.find(up); err == nil {
		return f.ID, leaf, nil
	} else if err != backend.ErrNoSuchMailbox {
		return "", "", err
	}
	if err := u.CreateMailbox(up); err != nil {
		return "", "", err
	}
	f, err := u.find(up)
	return f.ID, leaf, err
}

func displayName(leaf string) string { return strings.ReplaceAll(leaf, "∕", mirror.Delimiter) }

func (u *user) CreateMailbox(name string) error {
	name = canonical(name)
	if name == "" || strings.Contains(name, mirror.Delimiter+mirror.Delimiter) {
		return no("CANNOT", "%q is not a folder name", truncate(name))
	}
	if _, err := u.find(name); err == nil {
		return no("ALREADYEXISTS", "%s already exists", truncate(name))
	} else if err != backend.ErrNoSuchMailbox {
		return err
	}
	parent, leaf, err := u.parentOf(name)
	if err != nil {
		return err
	}
	defer u.s.b.Mirror.Changed()
	_, err = u.s.b.Client.CreateFolder(u.s.ctx, parent, displayName(leaf))
	return u.s.fail("create folder", err)
}

func (u *user) DeleteMailbox(name string) error {
	f, err := u.find(name)
	if err != nil {
		return err
	}
	switch {
	case f.Name == "INBOX" || f.Special != "":
		return no("CANNOT", "%s is one of Exchange's own folders, which cannot be deleted", f.Name)
	case f.Children > 0:
		// Graph would delete the subfolders with it, which IMAP's DELETE
		// must not (RFC 3501 §6.3.4).
		return no("INUSE", "%s has subfolders: delete them first", f.Name)
	}
	defer u.s.b.Mirror.Changed()
	if err := u.s.b.Client.DeleteFolder(u.s.ctx, f.ID); err != nil {
		return u.s.fail("delete folder", err)
	}
	return u.s.fail("delete folder", u.s.b.Mirror.Forget(f.ID))
}

func (u *user) RenameMailbox(existing, newName string) error {
	f, err := u.find(existing)
	if err != nil {
		return err
	}
	newName = canonical(newName)
	switch {
	case f.Name == "INBOX":
		return no("CANNOT", "renaming INBOX is not available: Exchange's inbox cannot be renamed (move its messages instead)")
	case f.Special != "":
		return no("CANNOT", "%s is one of Exchange's own folders, which cannot be renamed", f.Name)
	}
	if _, err := u.find(newName); err == nil {
		return no("ALREADYEXISTS", "%s already exists", truncate(newName))
	} else if err != backend.ErrNoSuchMailbox {
		return err
	}
	parent, leaf, err := u.parentOf(newName)
	if err != nil {
		return err
	}
	defer u.s.b.Mirror.Changed()
	if parent == "" {
		if parent, err = u.rootID(); err != nil {
			return err
		}
	}
	if parent != f.ParentID {
		if err := u.s.b.Client.MoveFolder(u.s.ctx, f.ID, parent); err != nil {
			return u.s.fail("move folder", err)
		}
	}
	old := f.Name
	if i := strings.LastIndex(old, mirror.Delimiter); i >= 0 {
		old = old[i+1:]
	}
	if leaf != old {
		return u.s.fail("rename folder", u.s.b.Client.RenameFolder(u.s.ctx, f.ID, displayName(leaf)))
	}
	return nil
}

// rootID is the id of the top of the tree: INBOX's parent.
func (u *user) rootID() (string, error) {
	inbox, err := u.find("INBOX")
	return inbox.ParentID, err
}

// attributes are a folder's LIST attributes (RFC 3348 children, RFC 6154
// special use).
func attributes(f mirror.TreeFolder) []string {
	a := []string{imap.HasNoChildrenAttr}
	if f.Children > 0 {
		a[0] = imap.HasChildrenAttr
	}
	if f.Special != "" {
		a = append(a, f.Special)
	}
	return a
}
