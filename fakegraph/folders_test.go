package fakegraph

import (
	"fmt"
	"slices"
	"testing"
)

// folderIDOf is a well-known folder's id as Graph answers it.
func (e *env) folderIDOf(name string) string {
	e.t.Helper()
	r := e.do("GET", "/v1.0/users/"+alice+"/mailFolders/"+name, e.app, nil)
	must(e.t, r, 200)
	return r.json(e.t)["id"].(string)
}

// names lists a folder collection's display names, following nextLink.
func (e *env) names(path string) []string {
	e.t.Helper()
	var out []string
	for next := path; next != ""; {
		r := e.do("GET", next, e.app, nil)
		must(e.t, r, 200)
		j := r.json(e.t)
		for _, v := range j["value"].([]any) {
			out = append(out, v.(map[string]any)["displayName"].(string))
		}
		next, _ = j["@odata.nextLink"].(string)
	}
	return out
}

// user-post-mailfolders.md, mailfolder-post-childfolders.md,
// user-list-mailfolders.md (GRAPH.md 3.1), mailfolder-list-childfolders.md.
func TestUserFoldersFormATree(t *testing.T) {
	e := newEnv(t)
	u := "/v1.0/users/" + alice + "/mailFolders"
	r := e.postJSON(u, e.app, map[string]any{"displayName": "Projects"})
	must(t, r, 201)
	projects := r.json(t)
	root := e.folderIDOf("msgfolderroot")
	if projects["parentFolderId"] != root || projects["childFolderCount"] != 0.0 || projects["totalItemCount"] != 0.0 ||
		projects["isHidden"] != false || len(projects["id"].(string)) != len(root) {
		t.Fatalf("created %v (root %s)", projects, root)
	}
	pid := projects["id"].(string)
	// A child by the parent's id, another under a well-known name.
	r = e.postJSON(u+"/"+pid+"/childFolders", e.app, map[string]any{"displayName": "2026"})
	must(t, r, 201)
	if r.json(t)["parentFolderId"] != pid {
		t.Errorf("child %v", r.json(t))
	}
	must(t, e.postJSON(u+"/inbox/childFolders", e.app, map[string]any{"displayName": "Receipts"}), 201)
	hidden := e.postJSON(u, e.app, map[string]any{"displayName": "Secret", "isHidden": true})
	must(t, hidden, 201)

	if got := e.names(u + "?$top=3"); fmt.Sprint(got) != "[Inbox Drafts Sent Items Deleted Items Junk Email Archive Outbox Projects]" {
		t.Errorf("mailFolders: %v", got)
	}
	if got := e.names(u + "?includeHiddenFolders=true"); !slices.Contains(got, "Secret") {
		t.Errorf("includeHiddenFolders: %v", got)
	}
	if got := e.names(u + "/" + pid + "/childFolders"); fmt.Sprint(got) != "[2026]" {
		t.Errorf("childFolders: %v", got)
	}
	if got := e.names(u + "/inbox/childFolders"); fmt.Sprint(got) != "[Receipts]" {
		t.Errorf("inbox childFolders: %v", got)
	}
	if j := e.do("GET", u+"/"+pid, e.app, nil).json(t); j["childFolderCount"] != 1.0 || j["displayName"] != "Projects" {
		t.Errorf("get %v", j)
	}

	for _, tc := range []struct {
		name, path string
		body       any
		status     int
		code       string
	}{
		{"sibling, other case", u, map[string]any{"displayName": "PROJECTS"}, 409, "ErrorFolderExists"},
		{"sibling of a child", u + "/" + pid + "/childFolders", map[string]any{"displayName": "2026"}, 409, "ErrorFolderExists"},
		{"no name", u, map[string]any{}, 400, "ErrorInvalidParameter"},
		{"empty name", u, map[string]any{"displayName": " "}, 400, "ErrorInvalidParameter"},
		{"unknown property", u, map[string]any{"displayName": "x", "colour": "red"}, 400, "RequestBodyRead"},
		{"unknown parent", u + "/AAMkAGnotthereAAAAAAAAAAAAA=/childFolders", map[string]any{"displayName": "x"}, 404, "ErrorItemNotFound"},
		{"malformed parent", u + "/no*such/childFolders", map[string]any{"displayName": "x"}, 400, "ErrorInvalidIdMalformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.postJSON(tc.path, e.app, tc.body)
			mustError(t, r, tc.status, tc.code)
		})
	}
	reader := e.appToken("reader", "https://graph.microsoft.com/.default")
	mustError(t, e.postJSON(u, reader, map[string]any{"displayName": "x"}), 403, "ErrorAccessDenied")
}

// mailfolder-update.md, mailfolder-move.md, mailfolder-delete.md.
func TestFolderRenameMoveDelete(t *testing.T) {
	e := newEnv(t)
	u := "/v1.0/users/" + alice + "/mailFolders/"
	a := e.g.AddFolder(alice, "msgfolderroot", "A")
	b := e.g.AddFolder(alice, a, "B")
	c := e.g.AddFolder(alice, "inbox", "C")
	e.g.AddFolder(alice, "inbox", "Taken")
	e.g.AddFolder(alice, "deleteditems", "D")
	id := e.g.Put(alice, b, msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: in B"))

	for _, tc := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"rename a well-known folder", "PATCH", u + "inbox", map[string]any{"displayName": "In"}, 400, "ErrorInvalidOperation"},
		{"rename onto a sibling", "PATCH", u + c, map[string]any{"displayName": "taken"}, 409, "ErrorFolderExists"},
		{"rename to nothing", "PATCH", u + c, map[string]any{"displayName": ""}, 400, "ErrorInvalidParameter"},
		{"rename isHidden", "PATCH", u + c, map[string]any{"displayName": "x", "isHidden": true}, 400, "RequestBodyRead"},
		{"move a well-known folder", "POST", u + "archive/move", map[string]any{"destinationId": a}, 400, "ErrorMoveDistinguishedFolder"},
		{"move into itself", "POST", u + a + "/move", map[string]any{"destinationId": a}, 400, "ErrorInvalidOperation"},
		{"move under a descendant", "POST", u + a + "/move", map[string]any{"destinationId": b}, 400, "ErrorInvalidOperation"},
		{"move out of the tree", "POST", u + a + "/move", map[string]any{"destinationId": "recoverableitemsdeletions"}, 400, "ErrorInvalidOperation"},
		{"move onto a sibling's name", "POST", u + c + "/move", map[string]any{"destinationId": "msgfolderroot"}, 200, ""},
		{"move to a name taken", "POST", u + e.g.AddFolder(alice, "drafts", "C") + "/move", map[string]any{"destinationId": "msgfolderroot"}, 409, "ErrorFolderExists"},
		{"move nowhere", "POST", u + c + "/move", map[string]any{"destinationId": "nowhere"}, 400, "ErrorInvalidIdMalformed"},
		{"delete a well-known folder", "DELETE", u + "junkemail", nil, 400, "ErrorDeleteDistinguishedFolder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r resp
			switch tc.method {
			case "PATCH":
				r = e.patch(tc.path, e.app, tc.body)
			case "POST":
				r = e.postJSON(tc.path, e.app, tc.body)
			default:
				r = e.do(tc.method, tc.path, e.app, nil)
			}
			if tc.code == "" {
				must(t, r, tc.status)
			} else {
				mustError(t, r, tc.status, tc.code)
			}
		})
	}

	r := e.patch(u+a, e.app, map[string]any{"displayName": "Renamed"})
	must(t, r, 200)
	if r.json(t)["displayName"] != "Renamed" || r.json(t)["id"] != a {
		t.Errorf("rename %v", r.json(t))
	}
	// The doc answers 200; the id stays, the messages go along.
	inbox := e.folderIDOf("inbox")
	r = e.postJSON(u+b+"/move", e.app, map[string]any{"destinationId": "inbox"})
	must(t, r, 200)
	if j := r.json(t); j["id"] != b || j["parentFolderId"] != inbox || j["totalItemCount"] != 1.0 {
		t.Errorf("moved %v", j)
	}
	if m, _ := e.g.Message(id); m.Folder != b {
		t.Errorf("message folder %q, want %q", m.Folder, b)
	}

	// Deleted: to Deleted Items with its messages and subfolders; deleted
	// there: gone for good with its messages.
	e.g.AddFolder(alice, b, "Sub")
	must(t, e.do("DELETE", u+b, e.app, nil), 204)
	deleted := e.folderIDOf("deleteditems")
	if j := e.do("GET", u+b, e.app, nil).json(t); j["parentFolderId"] != deleted || j["childFolderCount"] != 1.0 {
		t.Errorf("deleted folder %v", j)
	}
	if _, ok := e.g.Message(id); !ok {
		t.Error("message lost with its folder moved to Deleted Items")
	}
	must(t, e.do("DELETE", u+b, e.app, nil), 204)
	mustError(t, e.do("GET", u+b, e.app, nil), 404, "ErrorItemNotFound")
	mustError(t, e.do("GET", u+b+"/messages", e.app, nil), 404, "ErrorItemNotFound")
	if _, ok := e.g.Message(id); ok {
		t.Error("message kept after its folder was deleted for good")
	}
	for _, f := range e.g.Folders(alice) {
		if f.DisplayName == "Sub" || f.ID == b {
			t.Errorf("folder %+v kept", f)
		}
	}
	if got := e.names(u + "deleteditems/childFolders"); fmt.Sprint(got) != "[D]" {
		t.Errorf("Deleted Items: %v", got)
	}
}

// Every folder route takes a user folder; ids and well-known names both
// resolve (GRAPH.md 3.3), and the key form mailFolders('id') too (6.1).
func TestMessagesInUserFolders(t *testing.T) {
	e := newEnv(t)
	f := e.g.AddFolder(alice, "inbox", "Lists")
	id := e.g.Put(alice, f, msg("x\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: put"))
	u := "/v1.0/users/" + alice
	for _, p := range []string{"/mailFolders/" + f + "/messages", "/mailFolders('" + f + "')/messages"} {
		r := e.do("GET", u+p+"?$select=subject,parentFolderId", e.app, nil)
		must(t, r, 200)
		vs := r.json(t)["value"].([]any)
		if len(vs) != 1 || vs[0].(map[string]any)["parentFolderId"] != f {
			t.Errorf("%s: %v", p, vs)
		}
	}
	must(t, e.do("GET", u+"/mailFolders/"+f+"/messages/"+id, e.app, nil), 200)
	mustError(t, e.do("GET", u+"/mailFolders/inbox/messages/"+id, e.app, nil), 404, "ErrorItemNotFound")

	// Create into it, move and copy into it.
	r := e.postMIME(u+"/mailFolders/"+f+"/messages", e.app, msg("y\r\n", "From: "+alice, "To: "+bob, "Subject: created"))
	must(t, r, 201)
	if r.json(t)["parentFolderId"] != f {
		t.Errorf("created in %v", r.json(t)["parentFolderId"])
	}
	other := e.g.Put(alice, "inbox", msg("z\r\n", "From: x@fabrikam.example", "To: "+alice, "Subject: moved"))
	r = e.postJSON(u+"/messages/"+other+"/move", e.app, map[string]string{"destinationId": f})
	must(t, r, 201)
	if r.json(t)["parentFolderId"] != f {
		t.Errorf("moved to %v", r.json(t)["parentFolderId"])
	}
	sub := e.g.AddFolder(alice, f, "Sub")
	r = e.postJSON(u+"/mailFolders/"+f+"/messages/"+other+"/copy", e.app, map[string]string{"destinationId": sub})
	must(t, r, 201)
	if n := len(e.g.Messages(alice, f)); n != 3 {
		t.Errorf("%d in the folder, want 3", n)
	}
	if n := len(e.g.Messages(alice, sub)); n != 1 {
		t.Errorf("%d in the subfolder, want 1", n)
	}
	if j := e.do("GET", u+"/mailFolders/"+f, e.app, nil).json(t); j["totalItemCount"] != 3.0 || j["unreadItemCount"] != 2.0 {
		t.Errorf("counts %v", j)
	}
}

func TestFolderHooks(t *testing.T) {
	e := newEnv(t)
	a := e.g.AddFolder(alice, "msgfolderroot", "A")
	b := e.g.AddFolder(alice, a, "B")
	fs := e.g.Folders(alice)
	byName := map[string]Folder{}
	for _, f := range fs {
		byName[f.DisplayName] = f
	}
	if fs[0].WellKnown != "msgfolderroot" || byName["Inbox"].WellKnown != "inbox" || byName["B"].ParentID != a ||
		byName["A"].ParentID != fs[0].ID || byName["B"].ID != b || byName["B"].WellKnown != "" || fs[len(fs)-1].WellKnown != "recoverableitemsdeletions" {
		t.Errorf("Folders: %+v", fs)
	}
	for _, tc := range []struct{ name, parent, display string }{
		{"no parent", "AAMkAGnotthereAAAAAAAAAAAAA=", "x"},
		{"malformed parent", "no such", "x"},
		{"taken", a, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			e.g.AddFolder(alice, tc.parent, tc.display)
		})
	}
}
