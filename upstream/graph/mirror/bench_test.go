package mirror

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkFirstRound50000 is a folder's first delta round over 50,000
// messages (50 pages of 1,000): reading, and saving the mirror.
func BenchmarkFirstRound50000(b *testing.B) {
	e := newEnv(b)
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 50000 {
		e.g.PutAt(box, "inbox", []byte(fmt.Sprintf("From: Sender %d <s%d@example.com>\r\nTo: %s\r\nSubject: message %d\r\nMessage-ID: <m%d@bench>\r\n\r\nbody\r\n", i, i, box, i, i)), t0.Add(time.Duration(i)*time.Second))
	}
	b.ResetTimer()
	for i := range b.N {
		e.path = filepath.Join(b.TempDir(), fmt.Sprint(i), "box.db")
		m := e.mailbox()
		f := e.inbox(m)
		if err := f.Sync(context.Background(), e.c, 0); err != nil {
			b.Fatal(err)
		}
		if n := len(f.Snapshot().List); n != 50000 {
			b.Fatal(n)
		}
		m.Close()
	}
}
