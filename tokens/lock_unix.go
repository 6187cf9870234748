//go:build unix

package tokens

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive lock on path (created with mode 0600), so
// that mailproxy serve and mailproxy token add never write the store at
// the same time.
func lockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
