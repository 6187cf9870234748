//go:build windows

package tokens

import (
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

// errLocked: another process holds the lock.
var errLocked = errors.New("locked by another process")

// tryLockFile takes an exclusive lock on path (created readable only by
// the store's accounts) if it is free, so that the service and token add
// never redeem a refresh token or write the store at once. LockFileEx is
// Windows's flock.
func tryLockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := privateFile(f); err != nil {
		f.Close()
		return nil, err
	}
	h := windows.Handle(f.Fd())
	ol := new(windows.Overlapped)
	if err := windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol); err != nil {
		f.Close()
		if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
			return nil, errLocked
		}
		return nil, err
	}
	return func() { windows.UnlockFileEx(h, 0, 1, 0, ol); f.Close() }, nil
}

// inode is not what Windows tells a replaced file by: the modification
// time and size are.
func inode(fs.FileInfo) uint64 { return 0 }
