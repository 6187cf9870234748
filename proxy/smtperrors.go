package proxy

import (
	"errors"
	"strings"

	"github.com/emersion/go-smtp"

	"mailproxy/tokens"
	"mailproxy/upstream"
)

// smtpReply maps an error from a Sender to the reply the local client gets.
// It is the one place where SMTP replies are chosen:
//   - the upstream's own reply (*smtp.SMTPError) is passed on unchanged, so
//     a 5xx stays 5xx and a per-recipient refusal stays with its recipient;
//   - a token failure becomes 454 4.7.0, and an unreachable or broken
//     upstream 451 4.4.1: temporary, so the app keeps the message and retries.
func smtpReply(err error) error {
	var te *tokens.Error
	if errors.As(err, &te) {
		return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: oneLine(te.Error() + "; try again later")}
	}
	var ue *upstream.Error
	if errors.As(err, &ue) {
		if ue.Stage == "auth" {
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: oneLine(ue.Error() + "; try again later")}
		}
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: oneLine(ue.Error() + "; try again later")}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se
	}
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: oneLine(err.Error() + "; try again later")}
}

// oneLine makes text safe for a single reply line of bounded length.
func oneLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
