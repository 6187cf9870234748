//go:build !windows

package tokens

import "os"

// privateFile makes f readable and writable by its owner only: mode 0600
// (on Windows, a DACL: acl_windows.go).
func privateFile(f *os.File) error { return f.Chmod(0o600) }
