package app

import "testing"

// Each listener gets a share of the descriptors: two a session, after a
// reserve, so that one protocol's flood leaves the others theirs.
func TestConnectionCapIsAShareOfTheOpenFileLimit(t *testing.T) {
	if got := connectionCap(500, 3); got != 500 {
		t.Fatalf("configured cap: %d", got)
	}
	limit := openFileLimit()
	one, three := connectionCap(0, 1), connectionCap(0, 3)
	if want := (limit - fdReserve - 4) / 2; one != max(want, 16) {
		t.Fatalf("one listener at %d descriptors: %d, want %d", limit, one, want)
	}
	if 3*2*three+fdReserve > limit && three > 16 {
		t.Fatalf("three listeners' shares (%d each) overrun %d descriptors", three, limit)
	}
}
