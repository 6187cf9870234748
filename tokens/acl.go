package tokens

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// StoreFileAccounts are the accounts, as SID strings, that the token
// store's file grants full access to on Windows besides LocalSystem, the
// Administrators and the user of the process writing it. There the file's
// DACL is its only protection (a mode sets the read-only attribute, no
// more); the Windows service adds its own account (NT SERVICE\mailproxy),
// so that a store an administrator's mailproxy token add wrote stays the
// service's. Elsewhere it is unused: the file's mode is 0600.
var StoreFileAccounts []string

var sidPattern = regexp.MustCompile(`^S-1-[0-9]+(-[0-9]+)+$`)

// storeFileSDDL is the security descriptor of the token store's file on
// Windows, in SDDL: a DACL protected from inheritance (P) allowing full
// access (FA) to LocalSystem (SY), the Administrators (BA), user and the
// extra SIDs, and nobody else.
func storeFileSDDL(user string, extra []string) (string, error) {
	var b strings.Builder
	b.WriteString("D:P(A;;FA;;;SY)(A;;FA;;;BA)")
	var seen []string
	for _, sid := range append([]string{user}, extra...) {
		if !sidPattern.MatchString(sid) {
			return "", fmt.Errorf("token store: %q is not a SID (S-1-...)", sid)
		}
		if slices.Contains(seen, sid) {
			continue
		}
		seen = append(seen, sid)
		fmt.Fprintf(&b, "(A;;FA;;;%s)", sid)
	}
	return b.String(), nil
}
