package upstream

import (
	"encoding/base64"
	"testing"
)

func TestXOAUTH2(t *testing.T) {
	// The example from Google's XOAUTH2 documentation.
	const wantB64 = "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
	for _, tc := range []struct {
		name    string
		initial bool
	}{{"with initial response (IMAP SASL-IR)", true}, {"two-step (SMTP, POP3)", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := &xoauth2Client{user: "someuser@example.com", token: "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", initial: tc.initial}
			mech, ir, err := c.Start()
			if mech != "XOAUTH2" || err != nil {
				t.Fatal(mech, err)
			}
			resp := ir
			if !tc.initial {
				if ir != nil {
					t.Fatalf("two-step form sent an initial response")
				}
				resp, _ = c.Next([]byte{}) // the server's empty 334 / +
			}
			if got := base64.StdEncoding.EncodeToString(resp); got != wantB64 {
				t.Fatalf("got %s", got)
			}
			// Google's failure: a JSON challenge, answered with an empty response.
			empty, err := c.Next([]byte(`{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`))
			if err != nil || empty == nil || len(empty) != 0 {
				t.Fatalf("answer to the error challenge: %q %v", empty, err)
			}
			if c.Challenge == "" {
				t.Fatal("error challenge not kept for the error message")
			}
		})
	}
}
