package graph

import (
	"context"
	"net/http"
	"net/url"
)

// Folder is what mailproxy reads of a mail folder (the v1.0 mailFolder
// properties, GRAPH.md 3.2: there is no wellKnownName in v1.0).
type Folder struct {
	ID          string `json:"id"`
	DisplayName string `json:"displayName"`
	ParentID    string `json:"parentFolderId"`
	Children    int    `json:"childFolderCount"`
	Total       int    `json:"totalItemCount"`
	Unread      int    `json:"unreadItemCount"`
}

func (c *Client) folderURL(folder string) string {
	return c.base + "/mailFolders/" + url.PathEscape(folder)
}

// Folder reads a folder by id or well-known name.
func (c *Client) Folder(ctx context.Context, folder string) (Folder, error) {
	var f Folder
	err := c.getJSON(ctx, request{op: "folder", method: http.MethodGet, url: c.folderURL(folder), idempotent: true}, &f)
	return f, err
}

// ChildFolders lists a folder's children, or with parent "" the root's
// (user-list-mailfolders.md: GET mailFolders is the root's children only;
// the tree is walked through childFolders, GRAPH.md 3.1).
func (c *Client) ChildFolders(ctx context.Context, parent string) ([]Folder, error) {
	next := c.base + "/mailFolders?$top=250"
	if parent != "" {
		next = c.folderURL(parent) + "/childFolders?$top=250"
	}
	var out []Folder
	for next != "" {
		var page struct {
			Value []Folder `json:"value"`
			Next  string   `json:"@odata.nextLink"`
		}
		if err := c.getJSON(ctx, request{op: "list folders", method: http.MethodGet, url: next, idempotent: true}, &page); err != nil {
			return nil, err
		}
		out = append(out, page.Value...)
		next = page.Next
	}
	return out, nil
}

// CreateFolder makes a folder under parent, or at the root with parent ""
// (user-post-mailfolders.md, mailfolder-post-childfolders.md: 201).
func (c *Client) CreateFolder(ctx context.Context, parent, name string) (Folder, error) {
	u := c.base + "/mailFolders"
	if parent != "" {
		u = c.folderURL(parent) + "/childFolders"
	}
	var f Folder
	err := c.getJSON(ctx, request{op: "create folder", method: http.MethodPost, url: u, body: jsonBody(map[string]string{"displayName": name}),
		contentType: "application/json", want: []int{http.StatusCreated}}, &f)
	return f, err
}

// RenameFolder changes a folder's display name (mailfolder-update.md: 200).
func (c *Client) RenameFolder(ctx context.Context, id, name string) error {
	return c.getJSON(ctx, request{op: "rename folder", method: http.MethodPatch, url: c.folderURL(id),
		body: jsonBody(map[string]string{"displayName": name}), contentType: "application/json", idempotent: true,
		want: []int{http.StatusOK}}, nil)
}

// MoveFolder puts a folder under parent (mailfolder-move.md: 201; the id
// stays, GRAPH.md 3.3).
func (c *Client) MoveFolder(ctx context.Context, id, parent string) error {
	return c.getJSON(ctx, request{op: "move folder", method: http.MethodPost, url: c.folderURL(id) + "/move",
		body: jsonBody(map[string]string{"destinationId": parent}), contentType: "application/json",
		want: []int{http.StatusCreated, http.StatusOK}}, nil)
}

// DeleteFolder deletes a folder with what it holds (mailfolder-delete.md:
// 204).
func (c *Client) DeleteFolder(ctx context.Context, id string) error {
	return c.getJSON(ctx, request{op: "delete folder", method: http.MethodDelete, url: c.folderURL(id), idempotent: true,
		want: []int{http.StatusNoContent}}, nil)
}
