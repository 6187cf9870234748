package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"mailproxy/tokens"
)

// chromium is Debian's package (scripts/install-test-deps.sh installs it).
const chromium = "/usr/bin/chromium"

// browserFor starts a headless Chromium with a fresh profile that answers
// HTTP basic challenges with user and password, as a person would in the
// browser's dialog. The fake IdP's certificate is not in Chromium's store,
// so certificate errors are ignored (only the fake is reached).
func browserFor(t *testing.T, user, password string) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv(e2eRequired) == "1" {
			t.Fatalf("%s missing (apt-get install chromium)", chromium)
		}
		t.Skipf("%s missing (apt-get install chromium)", chromium)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.Flag("disable-component-update", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	err := chromedp.Listen(ctx, func(ev any) {
		// Commands may not run inside the listener: answer from a goroutine.
		switch e := ev.(type) {
		case *fetch.EventAuthRequired:
			go chromedp.Call(ctx, fetch.ContinueWithAuth, fetch.ContinueWithAuthParams{RequestID: e.RequestID,
				AuthChallengeResponse: &fetch.AuthChallengeResponse{
					Response: fetch.AuthChallengeResponseResponseProvideCredentials, Username: user, Password: password,
				}})
		case *fetch.EventRequestPaused:
			go chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
		}
	})
	if err == nil {
		yes := true
		_, err = chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{HandleAuthRequests: &yes})
	}
	if err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// The admin page in a real browser: a person presses Get token, signs in
// at the (fake) Microsoft page, lands back on mailproxy's page and sees the
// token; Test runs check against the real Dovecot and Postfix.
func TestAdminPageGetTokenAndTestInChromium(t *testing.T) {
	need(t)
	smtpAddr, imapAddr, adminAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	const adminPass = "admin-page-password"
	cfg := writeConfig(t, fmt.Sprintf(`token_store:
  path: %s
  key: %s
admin:
  listen: %s
  username: admin
  password: %s
profiles:
%s%s`, filepath.Join(t.TempDir(), "tokens.enc"), tokens.NewKey(), adminAddr, adminPass,
		delegatedProfile("web", ivy, smtpAddr, imapAddr), oauthProfile("app-only", freeAddr(t), bob, genericCreds(), "")))
	startProxyFile(t, cfg, smtpAddr, imapAddr, adminAddr)
	admin := "http://" + adminAddr

	// Nobody has signed in yet: not ready, and it says which profile.
	eventually(t, "/readyz says profile web needs a person, and nothing else", func() bool {
		code, body := get(t, admin+"/readyz", "")
		return code == 503 && strings.Contains(body, "profile web: a person must sign in") && !strings.Contains(body, "app-only")
	})

	ctx := browserFor(t, "admin", adminPass)
	text := func(id string) string {
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID(id)))
		if err != nil {
			t.Fatalf("#%s: %v\n%s", id, err, pageHTML(ctx))
		}
		return v
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, pageHTML(ctx))
		}
	}
	do("open the admin page", chromedp.Navigate(admin+"/"), chromedp.WaitVisible(chromedp.ID("state-web")))
	before := text("state-web")
	do("press Get token", chromedp.Click(chromedp.ID("signin-web")), chromedp.WaitVisible(chromedp.ID("username")))
	do("sign in at the provider",
		chromedp.SetValue(chromedp.ID("username"), ivy),
		chromedp.SetValue(chromedp.ID("password"), personPassword(ivy)),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("notice")))
	notice, after := text("notice"), text("state-web")
	do("press Test", chromedp.Click(chromedp.ID("test-web")), chromedp.WaitVisible(chromedp.ID("test-report")))
	verdict, report := text("test-verdict"), text("test-report")
	if strings.Contains(before, "valid until") {
		t.Fatalf("token state before signing in: %q", before)
	}
	if !strings.Contains(notice, "web") || !strings.Contains(after, "valid until") {
		t.Fatalf("after signing in: notice %q, state %q", notice, after)
	}
	if verdict != "passed" || !strings.Contains(report, "smtp   ok") || !strings.Contains(report, "imap   ok") || !strings.Contains(report, "as "+ivy+" accepted") {
		t.Fatalf("Test: %s\n%s", verdict, report)
	}
	if code, body := get(t, admin+"/readyz", ""); code != 200 {
		t.Fatalf("/readyz after sign-in: %d %s", code, body)
	}

	// A wrong admin password gets nothing.
	bad := browserFor(t, "admin", "wrong")
	chromedp.Do(bad, chromedp.Navigate(admin+"/"))
	if title, _ := chromedp.Run(bad, chromedp.Title()); strings.Contains(title, "OAuth credentials") {
		t.Fatal("the admin page opened with a wrong password")
	}
}

func pageHTML(ctx context.Context) string {
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		return "(no page: " + err.Error() + ")"
	}
	return html
}
