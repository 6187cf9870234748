package proxy

import (
	"errors"
	"strings"

	"github.com/emersion/go-smtp"

	"mailproxy/upstream"
)

// smtpReply maps an error from a Sender to the reply the local client gets.
// It is the one place where SMTP replies are chosen:
//   - the upstream's own reply to MAIL, RCPT or DATA (*smtp.SMTPError) is
//     passed on unchanged, so a 5xx stays 5xx and a per-recipient refusal
//     stays with its recipient;
//   - no token, or the upstream refusing mailproxy's login, becomes
//     454 4.7.0; an unreachable, broken or stalled upstream 451 4.4.1:
//     temporary, so the app keeps the message and retries.
func smtpReply(err error) error {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		if ue.Stage == upstream.StageToken || ue.Stage == upstream.StageAuth {
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
//   - the upstream refused mailproxy's token or password:
//     AUTHENTICATIONFAILED, saying it was the upstream, not the local
//     password;
//   - anything else (no token, a person must sign in, unreachable, broken):
//     UNAVAILABLE (temporary, RFC 5530), with what failed.
func imapLoginFailure(err error) (code, text string) {
	if upstream.KindOf(err) == upstream.Refused {
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

// ErrorClass names the kind of an upstream failure, for metrics: token (no
// token could be had), sign_in (a person must sign in again), refused (the
// upstream refused the login), rejected (the upstream refused a message or
// recipient), or unavailable (not reachable, broken, timed out). The same
// failure is the same class whatever the protocol.
func ErrorClass(err error) string {
	var ue *upstream.Error
	switch {
	case errors.As(err, &ue) && ue.Stage == upstream.StageToken && ue.Kind == upstream.PersonNeeded:
		return "sign_in"
	case errors.As(err, &ue) && ue.Stage == upstream.StageToken:
		return "token"
	case upstream.KindOf(err) == upstream.Refused:
		return "refused"
	case errors.As(err, &ue):
		return "unavailable"
	case isSMTPError(err):
		return "rejected"
	}
	return "unavailable"
}

func isSMTPError(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// oneLine makes text safe for a single reply line of bounded length:
// printable ASCII only, so nothing a client sent comes back as raw bytes.
func oneLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < 400; i++ {
		c := s[i]
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		case c < 0x20:
			b.WriteByte(' ')
		default:
			b.WriteByte('?')
		}
	}
	if b.Len() >= 400 {
		b.WriteString("...")
	}
	return b.String()
}
