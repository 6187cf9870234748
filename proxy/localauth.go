// Package proxy runs the local listeners legacy apps connect to. It checks
// the apps' local passwords, picks the profile, and hands the work to an
// upstream through small interfaces. It knows nothing of OAuth: tokens are
// the upstream's business.
//
// It must never pass a local password upstream or write one to a log.
package proxy

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
)

// LocalUser is one app's local login for a profile.
type LocalUser struct {
	// Name labels the credential in logs.
	Name     string
	Username string
	Password string
}

// Users maps local logins to the profile they select.
type Users[P any] struct {
	byName map[string]userEntry[P]
}

type userEntry[P any] struct {
	label   string
	sum     [32]byte
	profile P
}

// NewUsers returns an empty table.
func NewUsers[P any]() *Users[P] { return &Users[P]{byName: map[string]userEntry[P]{}} }

// Add registers u for profile.
func (t *Users[P]) Add(u LocalUser, profile P) {
	t.byName[u.Username] = userEntry[P]{label: u.Name, sum: sha256.Sum256([]byte(u.Password)), profile: profile}
}

// errBadLogin is returned for any wrong username or password.
var errBadLogin = errors.New("invalid username or password")

// Check returns the profile of username if password matches. The comparison
// takes the same time whatever the password; an unknown user costs the same.
func (t *Users[P]) Check(username, password string) (P, string, error) {
	e, ok := t.byName[username]
	got := sha256.Sum256([]byte(password))
	match := subtle.ConstantTimeCompare(got[:], e.sum[:]) == 1
	if !ok || !match {
		var zero P
		return zero, "", errBadLogin
	}
	return e.profile, e.label, nil
}

// Len is the number of logins.
func (t *Users[P]) Len() int { return len(t.byName) }

// profileUsers builds the login table of a listener's profiles.
func profileUsers[P any](profiles []P, users func(*P) []LocalUser) *Users[*P] {
	t := NewUsers[*P]()
	for i := range profiles {
		for _, u := range users(&profiles[i]) {
			t.Add(u, &profiles[i])
		}
	}
	return t
}
