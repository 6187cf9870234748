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

// imapLoginFailure maps an upstream login error to the response code and
// text of the local client's tagged NO. It is the one place where IMAP
// login failures are worded:
//   - a token that cannot be had: UNAVAILABLE (temporary, RFC 5530), with
//     what the token endpoint said;
//   - the upstream refused mailproxy's token or password:
//     AUTHENTICATIONFAILED, saying it was the upstream, not the local
//     password;
//   - the upstream could not be reached or broke: UNAVAILABLE.
func imapLoginFailure(err error) (code, text string) {
	var te *tokens.Error
	switch {
	case errors.As(err, &te):
		return "UNAVAILABLE", te.Error() + "; try again later"
	case upstream.IsRefused(err):
		return "AUTHENTICATIONFAILED", err.Error() + "; the local login was fine: check the profile with mailproxy check"
	}
	return "UNAVAILABLE", err.Error() + "; try again later"
}

// pop3LoginFailure is imapLoginFailure for POP3, with RFC 3206 codes:
// [SYS/TEMP] for temporary failures, [AUTH] for a refused login.
func pop3LoginFailure(err error) string {
	code, text := imapLoginFailure(err)
	if code == "AUTHENTICATIONFAILED" {
		return "-ERR [AUTH] " + oneLine(text)
	}
	return "-ERR [SYS/TEMP] " + oneLine(text)
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
