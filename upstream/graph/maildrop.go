package graph

import (
	"context"
	"errors"
	"io"
	"sync"
)

// Maildrop is a Graph mail folder served as a POP3 maildrop.
type Maildrop struct {
	c      *Client
	folder string
	delete bool
}

// NewMaildrop serves folder (an id or a well-known name). With remove
// true, a POP3 DELE deletes (to Recoverable Items); else it moves the
// message to Deleted Items.
func NewMaildrop(c *Client, folder string, remove bool) *Maildrop {
	return &Maildrop{c: c, folder: folder, delete: remove}
}

// Item is one message of the maildrop: its immutable id and store size.
type Item struct {
	ID   string
	Size int64
}

// List is the folder's messages, oldest first.
func (m *Maildrop) List(ctx context.Context) ([]Item, error) {
	var out []Item
	err := m.c.Messages(ctx, m.folder, func(msg Message, size int64) error {
		out = append(out, Item{ID: msg.ID, Size: size})
		return nil
	})
	return out, m.c.Classify(err)
}

// Open reads a message's MIME.
func (m *Maildrop) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	rc, err := m.c.MIME(ctx, id)
	return rc, m.c.Classify(err)
}

// Remove moves (or deletes) the messages, as many at once as Graph takes;
// it returns every failure joined.
func (m *Maildrop) Remove(ctx context.Context, ids []string) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	sem := make(chan struct{}, DefaultConcurrency)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var err error
			if m.delete {
				err = m.c.Delete(ctx, id)
			} else {
				_, err = m.c.Move(ctx, id, "deleteditems")
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, m.c.Classify(err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
