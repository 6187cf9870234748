//go:build !unix

package app

// openFileLimit is a generous guess where the limit cannot be read.
func openFileLimit() int { return 16384 }
